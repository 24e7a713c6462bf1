"""A soak of ``zkmeter serve``: steady load for a while, memory and errors over time.

    python -m bench.soak --json [--minutes 12] [--postgres ADMIN_URL | --sqlite]
                                [--no-ingest-process] [--kill-child-every SECONDS]

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

``--kill-child-every SECONDS`` adds a supervisor and a fault: every SECONDS the soak kills the
ingest child with SIGKILL (as the kernel's out-of-memory killer would). The serving process
must then fail the calls in flight with UNAVAILABLE and exit with status 2; the soak, as a
supervisor would, starts ``zkmeter serve`` again on the same database and ports, and the
clients retry every refused request with its idempotency key until it is answered. UNAVAILABLE
(and a call cut by the restart) is then expected and counted, not a finding. At the end the
ledger itself is checked: every answered key is stored exactly once, nothing else is stored,
and each user's receipt chain is whole (seq 1..n, the user's state at n, its total the sum of
its events' units). A restart that does not follow a kill, an exit status other than 2 after
a kill, or a ledger that does not add up is a finding.
"""

import argparse
import json
import os
import signal
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


RETRIED_CODES = ("UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED")  # a restart's, when supervised
UNAVAILABLE_NUMBER = 14  # grpc.StatusCode.UNAVAILABLE in a stream item's ItemError.code


class Load:
    """The clients: what came back (each answered key and its receipt hash), every error by
    kind (code and message). With ``retry`` (the supervised soak) a request refused with one
    of :data:`RETRIED_CODES` is sent again with the same key until it is answered."""

    def __init__(self, target: str, api_key: str, stop_at: float, *, retry: bool) -> None:
        self.target, self.api_key, self.stop_at, self.retry = target, api_key, stop_at, retry
        self.lock = threading.Lock()
        self.answered: dict[str, bytes] = {}  # idempotency key -> receipt hash
        self.errors: Counter[str] = Counter()
        self.retried: Counter[str] = Counter()  # expected refusals of a supervised soak
        self.replayed_after_retry = 0

    @property
    def events(self) -> int:
        return len(self.answered)

    def _error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind[:160]] += 1

    def _answered(self, key: str, receipt_hash: bytes, replayed: bool, retried: bool) -> None:
        with self.lock:
            known = self.answered.setdefault(key, receipt_hash)
            if replayed and retried:
                self.replayed_after_retry += 1
        if known != receipt_hash:
            self._error("a key was answered with two different receipts")

    def _retryable(self, code_name: str) -> bool:
        if self.retry and code_name in RETRIED_CODES:
            with self.lock:
                self.retried[code_name] += 1
            time.sleep(0.2)
            return True
        return False

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
                retried = False
                while True:
                    try:
                        first = zk.record_usage(**fields)
                        self._answered(fields["idempotency_key"], first.receipt.receipt_hash,
                                       first.replayed, retried)
                        if i % 97 == 0:
                            again = zk.record_usage(**fields)
                            if not again.replayed or \
                                    again.receipt.receipt_hash != first.receipt.receipt_hash:
                                self._error("a retry was not replayed as the same receipt")
                        break
                    except grpc.RpcError as exc:
                        if self._retryable(exc.code().name):
                            retried = True
                            continue
                        self._error(f"{exc.code().name}: {exc.details()}")
                        break
                time.sleep(0.004)

    def stream(self) -> None:
        import grpc

        from zkmeter.client import Client, usage_request

        j = 0
        with Client(self.target, api_key=self.api_key) as zk:
            while time.monotonic() < self.stop_at:
                j += 1
                pending = [usage_request(idempotency_key=f"s{j}-{k}",
                                         user_id=f"user-{k % USERS}", model="gpt-4o",
                                         input_tokens=k, output_tokens=1) for k in range(400)]
                retried = False
                while pending:
                    left = []
                    answered = 0
                    try:
                        for response in zk.record_usage_stream(iter(pending)):
                            request = pending[answered]
                            answered += 1
                            if not response.HasField("error"):
                                self._answered(request.idempotency_key,
                                               response.receipt.receipt_hash,
                                               response.replayed, retried)
                            elif response.error.code == UNAVAILABLE_NUMBER and \
                                    self._retryable("UNAVAILABLE"):
                                left.append(request)
                            else:
                                self._error(f"stream item {response.error.code}: "
                                            f"{response.error.message}")
                        if answered != len(pending):
                            self._error("a stream ended without answering every request")
                    except grpc.RpcError as exc:
                        if not self._retryable(exc.code().name):
                            self._error(f"stream {exc.code().name}: {exc.details()}")
                            break
                        left += pending[answered:]
                    pending, retried = left, True
                time.sleep(0.5)


def ledger_findings(database_url: str, answered: dict[str, bytes]) -> tuple[dict[str, int],
                                                                             list[str]]:
    """The ledger against the clients' answers: every answered event stored once, nothing
    else stored, every user's chain whole. Figures and findings."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as db:
            rows = db.execute(sa.text("SELECT epoch_id, user_id, seq, units, receipt_hash "
                                      "FROM events")).all()
            states = {(e, u): (seq, total) for e, u, seq, total in db.execute(sa.text(
                "SELECT epoch_id, user_id, seq, total_units FROM user_states")).all()}
    finally:
        engine.dispose()
    findings = []
    hashes = [bytes(r.receipt_hash) for r in rows]
    if len(set(hashes)) != len(hashes):
        findings.append("a receipt is stored twice")
    if set(hashes) != set(answered.values()):
        findings.append(f"the ledger holds {len(set(hashes) - set(answered.values()))} receipts "
                        f"no client was given and lacks {len(set(answered.values()) - set(hashes))}"
                        " that were")
    chains: dict[tuple[int, str], list[tuple[int, int]]] = {}
    for r in rows:
        chains.setdefault((r.epoch_id, r.user_id), []).append((r.seq, r.units))
    broken = 0
    for where, events in chains.items():
        seqs = sorted(seq for seq, _ in events)
        if seqs != list(range(1, len(seqs) + 1)) or \
                states.get(where) != (len(seqs), sum(units for _, units in events)):
            broken += 1
    if broken:
        findings.append(f"{broken} receipt chains are not whole")
    return {"stored_events": len(rows), "chains": len(chains)}, findings


def _start(env: dict[str, str], log: Any, http_port: int) -> "subprocess.Popen[bytes]":
    """``zkmeter serve --dev`` with ``env``, once its HTTP health answers."""
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "prover.cli", "serve", "--dev"],
                            env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.seek(0)
            raise RuntimeError("zkmeter serve did not start: "
                               + log.read().decode(errors="replace")[-500:])
        time.sleep(0.2)


def soak(*, minutes: float, database_url: str, ingest_process: bool,
         kill_child_every: float | None = None) -> dict[str, Any]:
    """Run the soak against a fresh ``zkmeter serve`` on ``database_url``; the report."""
    from prover.api.grpc_server import hash_api_key, new_api_key
    from zkmeter.client import Client

    if kill_child_every is not None and not ingest_process:
        raise ValueError("--kill-child-every needs the ingest process")
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
    kills: list[dict[str, Any]] = []
    supervisor_findings: list[str] = []
    with tempfile.TemporaryFile() as log:
        proc = _start(env, log, http_port)
        try:
            target = f"127.0.0.1:{grpc_port}"
            with Client(target, api_key=key) as zk:
                account = zk.register_account(payer=bytes.fromhex("a1" * 20), asset=bytes(20),
                                              payer_x25519_public_key=bytes(32 * [9]))
                for i in range(USERS):
                    zk.register_user(f"user-{i}", account.account_id)
            load = Load(target, key, time.monotonic() + minutes * 60,
                        retry=kill_child_every is not None)
            threads = [threading.Thread(target=load.unary, args=(lane,)) for lane in range(3)]
            threads.append(threading.Thread(target=load.stream))
            start = time.monotonic()
            next_kill = start + (kill_child_every or float("inf"))
            next_sample = start
            for t in threads:
                t.start()
            samples = []
            while any(t.is_alive() for t in threads):
                now = time.monotonic()
                if now >= next_sample:
                    children = ingest_children(proc.pid)
                    samples.append({"seconds": round(now - start),
                                    "serving_rss_mib": rss_mib(proc.pid),
                                    "ingest_child_rss_mib": [rss_mib(c) for c in children],
                                    "events": load.events, "restarts": len(kills)})
                    next_sample = now + SAMPLE_SECONDS
                if proc.poll() is not None:
                    supervisor_findings.append(f"zkmeter serve ended on its own (exit "
                                               f"{proc.returncode}) at {round(now - start)} s")
                    proc = _start(env, log, http_port)
                if now >= next_kill:
                    proc, kill = _kill_child_and_restart(proc, env, log, http_port)
                    kill["at_seconds"] = round(now - start)
                    kills.append(kill)
                    if kill["exit_code"] != 2:
                        supervisor_findings.append(f"after its child was killed zkmeter serve "
                                                   f"exited with {kill['exit_code']}, not 2")
                    next_kill = time.monotonic() + kill_child_every  # type: ignore[operator]
                for t in threads:
                    t.join(timeout=0.25)
            elapsed = time.monotonic() - start
            proc.terminate()
            code = proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        text = log.read()
        # each kill leaves one logged traceback-free error; count tracebacks of any kind
        tracebacks = text.count(b"Traceback")
    ledger, ledger_problems = ledger_findings(database_url, load.answered)
    return {"minutes": minutes, "ingest_process": ingest_process,
            "database": database_url.split(":", 1)[0], "events": load.events,
            "events_per_s": round(load.events / elapsed, 1), "errors": dict(load.errors),
            "kill_child_every": kill_child_every, "kills": kills,
            "retried_refusals": dict(load.retried),
            "replayed_after_retry": load.replayed_after_retry, "ledger": ledger,
            "exit_code": code, "tracebacks_in_log": tracebacks, "samples": samples,
            "findings": (list(load.errors) + supervisor_findings + ledger_problems
                         + ([f"exit code {code}"] if code else [])
                         + (["a traceback in the log"] if tracebacks else []))}


def _kill_child_and_restart(proc: "subprocess.Popen[bytes]", env: dict[str, str], log: Any,
                            http_port: int) -> tuple["subprocess.Popen[bytes]", dict[str, Any]]:
    """SIGKILL the ingest child, wait for the serving process to exit, start it again: the
    new process and what happened (exit code, seconds to exit, seconds until healthy)."""
    children = ingest_children(proc.pid)
    killed_at = time.monotonic()
    for child in children:
        os.kill(child, signal.SIGKILL)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    exited = time.monotonic()
    fresh = _start(env, log, http_port)
    return fresh, {"children_killed": len(children), "exit_code": code,
                   "exit_seconds": round(exited - killed_at, 2),
                   "healthy_again_seconds": round(time.monotonic() - killed_at, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/"
                        "postgres", help="admin URL; a fresh database is made next to it")
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead")
    parser.add_argument("--no-ingest-process", action="store_true")
    parser.add_argument("--kill-child-every", type=float, default=None, metavar="SECONDS",
                        help="kill the ingest child this often; restart serve as a supervisor "
                             "would and check the ledger at the end (module docstring)")
    args = parser.parse_args(argv)
    ingest = not args.no_ingest_process
    if args.kill_child_every is not None and (args.no_ingest_process
                                              or args.kill_child_every <= 0):
        parser.error("--kill-child-every needs the ingest process and a positive interval")
    options = {"ingest_process": ingest, "kill_child_every": args.kill_child_every}
    if args.sqlite:
        with tempfile.TemporaryDirectory(prefix="zkmeter-soak-") as tmp:
            report = soak(minutes=args.minutes, database_url=f"sqlite:///{tmp}/soak.sqlite",
                          **options)
    else:
        from bench.postgres import ServerUnreachable, fresh_database

        try:
            with fresh_database(args.postgres, "zkmeter_soak") as (url, _admin):
                report = soak(minutes=args.minutes, database_url=url, **options)
        except ServerUnreachable as exc:
            parser.exit(2, f"bench.soak: --postgres: the server did not let us in ({exc})\n")
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
