"""A soak of ``zkmeter serve``: steady load for a while, memory and errors over time.

    python -m bench.soak --json [--minutes 12] [--postgres ADMIN_URL | --sqlite]
                                [--no-ingest-process]

Starts a real ``zkmeter serve --dev`` (by default on a fresh PostgreSQL database made next to
ADMIN_URL and dropped afterwards, with ``ZKMETER_INGEST_PROCESS=true``), registers 200 users
under one billing account, and drives it over gRPC for ``--minutes``: three unary clients
(one call in five carries ~500 tokens of chat text, one in 97 is retried with its key) and
one client streaming 400 events every half second. Every 30 s it samples the resident memory
of the serving process and of its ingest child (``VmRSS``) and the events so far; at the end
it stops the server with SIGTERM and reports its exit code, every error by kind, and the
figures. Any error, a non-zero exit or a replayed retry that is not marked replayed is a
finding, printed as such; memory is reported, not judged (the first minute loads the
tokenizer and fills the caches). It runs without a chain (``--dev``, no ``ZKMETER_RPC_URL``):
the prepaid limits and the escrow follower are not part of it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

USERS = 200
SAMPLE_SECONDS = 30.0
TEXT = ("hello there, how is the weather where you are today? " * 9, "fine, thanks. " * 30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> int | None:
    """A process's resident memory in MiB (None once it has ended)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def ingest_children(pid: int) -> list[int]:
    """The spawned children of ``pid`` (the ingest process; not the resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            try:
                if b"spawn_main" in Path(f"/proc/{kid}/cmdline").read_bytes():
                    found.append(int(kid))
            except OSError:
                continue
    return sorted(found)


class Load:
    """The clients: counts of what came back, every error by kind (code and message)."""

    def __init__(self, target: str, api_key: str, stop_at: float) -> None:
        self.target, self.api_key, self.stop_at = target, api_key, stop_at
        self.lock = threading.Lock()
        self.events = 0
        self.errors: Counter[str] = Counter()

    def _error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind[:160]] += 1

    def unary(self, lane: int) -> None:
        import grpc

        from zkmeter.client import Client

        i = 0
        with Client(self.target, api_key=self.api_key) as zk:
            while time.monotonic() < self.stop_at:
                i += 1
                fields: dict[str, Any] = {"idempotency_key": f"u{lane}-{i}",
                                          "user_id": f"user-{i % USERS}", "model": "gpt-4o"}
                if i % 5 == 0:
                    fields.update(messages=[("user", TEXT[0])], completion=TEXT[1])
                else:
                    fields.update(input_tokens=i % 900, output_tokens=7)
                try:
                    first = zk.record_usage(**fields)
                    if i % 97 == 0:
                        again = zk.record_usage(**fields)
                        if not again.replayed or \
                                again.receipt.receipt_hash != first.receipt.receipt_hash:
                            self._error("a retry was not replayed as the same receipt")
                    with self.lock:
                        self.events += 1
                except grpc.RpcError as exc:
                    self._error(f"{exc.code().name}: {exc.details()}")
                time.sleep(0.004)

    def stream(self) -> None:
        import grpc

        from zkmeter.client import Client, usage_request

        j = 0
        with Client(self.target, api_key=self.api_key) as zk:
            while time.monotonic() < self.stop_at:
                j += 1
                requests = [usage_request(idempotency_key=f"s{j}-{k}", user_id=f"user-{k % USERS}",
                                          model="gpt-4o", input_tokens=k, output_tokens=1)
                            for k in range(400)]
                try:
                    for response in zk.record_usage_stream(iter(requests)):
                        if response.HasField("error"):
                            self._error(f"stream item {response.error.code}: "
                                        f"{response.error.message}")
                        else:
                            with self.lock:
                                self.events += 1
                except grpc.RpcError as exc:
                    self._error(f"stream {exc.code().name}: {exc.details()}")
                time.sleep(0.5)


def soak(*, minutes: float, database_url: str, ingest_process: bool) -> dict[str, Any]:
    """Run the soak against a fresh ``zkmeter serve`` on ``database_url``; the report."""
    import httpx

    from prover.api.grpc_server import hash_api_key, new_api_key
    from zkmeter.client import Client

    key = new_api_key()
    grpc_port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKMETER_")}
    env.update({"ZKMETER_DATABASE_URL": database_url,
                "ZKMETER_SIGNING_KEY": os.urandom(32).hex(),
                "ZKMETER_API_KEY_HASHES": json.dumps({hash_api_key(key): "operator"}),
                "ZKMETER_GRPC_BIND": f"127.0.0.1:{grpc_port}",
                "ZKMETER_HTTP_BIND": f"127.0.0.1:{http_port}",
                "ZKMETER_METRICS_BIND": f"127.0.0.1:{metrics_port}",
                "ZKMETER_PROOF_WORKERS": "1",
                "ZKMETER_INGEST_PROCESS": "true" if ingest_process else "false"})
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "prover.cli", "serve", "--dev"],
                                env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{http_port}/healthz",
                                 timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError("zkmeter serve did not start: "
                                       + log.read().decode(errors="replace")[-500:])
                time.sleep(0.5)
            target = f"127.0.0.1:{grpc_port}"
            with Client(target, api_key=key) as zk:
                account = zk.register_account(payer=bytes.fromhex("a1" * 20), asset=bytes(20),
                                              payer_x25519_public_key=bytes(32 * [9]))
                for i in range(USERS):
                    zk.register_user(f"user-{i}", account.account_id)
            load = Load(target, key, time.monotonic() + minutes * 60)
            threads = [threading.Thread(target=load.unary, args=(lane,)) for lane in range(3)]
            threads.append(threading.Thread(target=load.stream))
            start = time.monotonic()
            for t in threads:
                t.start()
            samples = []
            while any(t.is_alive() for t in threads):
                children = ingest_children(proc.pid)
                samples.append({"seconds": round(time.monotonic() - start),
                                "serving_rss_mib": rss_mib(proc.pid),
                                "ingest_child_rss_mib": [rss_mib(c) for c in children],
                                "events": load.events})
                for t in threads:
                    t.join(timeout=SAMPLE_SECONDS / len(threads))
            elapsed = time.monotonic() - start
            proc.terminate()
            code = proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        tracebacks = log.read().count(b"Traceback")
    return {"minutes": minutes, "ingest_process": ingest_process,
            "database": database_url.split(":", 1)[0], "events": load.events,
            "events_per_s": round(load.events / elapsed, 1), "errors": dict(load.errors),
            "exit_code": code, "tracebacks_in_log": tracebacks, "samples": samples,
            "findings": (list(load.errors) + ([f"exit code {code}"] if code else [])
                         + (["a traceback in the log"] if tracebacks else []))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/"
                        "postgres", help="admin URL; a fresh database is made next to it")
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead")
    parser.add_argument("--no-ingest-process", action="store_true")
    args = parser.parse_args(argv)
    ingest = not args.no_ingest_process
    if args.sqlite:
        with tempfile.TemporaryDirectory(prefix="zkmeter-soak-") as tmp:
            report = soak(minutes=args.minutes, database_url=f"sqlite:///{tmp}/soak.sqlite",
                          ingest_process=ingest)
    else:
        from bench.postgres import ServerUnreachable, fresh_database

        try:
            with fresh_database(args.postgres, "zkmeter_soak") as (url, _admin):
                report = soak(minutes=args.minutes, database_url=url, ingest_process=ingest)
        except ServerUnreachable as exc:
            parser.exit(2, f"bench.soak: --postgres: the server did not let us in ({exc})\n")
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
