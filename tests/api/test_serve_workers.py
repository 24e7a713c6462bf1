"""``zkmeter serve --workers N``: N processes on one gRPC port (SO_REUSEPORT) and one
PostgreSQL; every user's receipt chain stays linear under concurrent load from outside, and
the operator's ``/metrics`` (served by worker 0) counts every worker's ingest."""

import asyncio
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.multiprocess import MultiProcessCollector

from circuits.hashing import keccak256
from prover.api.grpc_server import hash_api_key, new_api_key
from tests.api.test_serve import free_port, wait_until
from tests.postgres import temporary_database
from verifier.receipts import ZERO32, decode_receipt
from zkmeter.client import usage_request
from zkmeter.v1 import meter_pb2_grpc

USERS = [f"user-{u}" for u in range(6)]
CLIENTS, PER_CLIENT = 4, 60  # per client: PER_CLIENT unary calls and PER_CLIENT streamed


def _env(url: str, key: str, grpc_port: int, http_port: int,
         metrics_port: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKMETER_")}
    env.update({
        "ZKMETER_DATABASE_URL": url,
        "ZKMETER_SIGNING_KEY": "e1" + "".join(f"{i:02x}" for i in range(31)),
        "ZKMETER_API_KEY_HASHES": json.dumps({hash_api_key(key): "operator"}),
        "ZKMETER_GRPC_BIND": f"127.0.0.1:{grpc_port}",
        "ZKMETER_METRICS_BIND": f"127.0.0.1:{metrics_port}",
        "ZKMETER_HTTP_BIND": f"127.0.0.1:{http_port}",
        "ZKMETER_SHUTDOWN_GRACE_SECONDS": "2",
        "ZKMETER_PROOF_WORKERS": "1",
    })
    return env


async def _load(target: str, key: str, client: int) -> int:
    """Unary calls (8 in flight) and one stream at once, over 4 connections of its own."""
    metadata = (("authorization", f"Bearer {key}"),)
    # a local subchannel pool: each channel its own TCP connection, for the kernel to spread
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool",
                                                            1)]) for _ in range(4)]
    stubs = [meter_pb2_grpc.MeterServiceStub(channel) for channel in channels]

    def request(kind: str, i: int):
        return usage_request(idempotency_key=f"{kind}-{client}-{i}",
                             user_id=USERS[i % len(USERS)], model="gpt-4o",
                             input_tokens=10 + i, output_tokens=1 + client)

    async def lane(k: int) -> int:
        ok = 0
        for i in range(k, PER_CLIENT, 8):
            reply = await stubs[k % 4].RecordUsage(request("u", i), metadata=metadata,
                                                   timeout=60)
            ok += reply.HasField("receipt")
        return ok

    async def stream() -> int:
        call = stubs[client % 4].RecordUsageStream(
            iter([request("s", i) for i in range(PER_CLIENT)]), metadata=metadata, timeout=60)
        return sum([reply.HasField("receipt") async for reply in call])

    try:
        counts = await asyncio.gather(*(lane(k) for k in range(8)), stream())
    finally:
        for channel in channels:
            await channel.close()
    return sum(counts)


def _client(args: tuple[str, str, int]) -> int:
    return asyncio.run(_load(*args))


def _recorded(metrics: str) -> float:
    match = re.search(r'^zkmeter_ingest_events_total\{outcome="recorded"\} (\S+)$', metrics,
                      re.MULTILINE)
    assert match, "no recorded counter in /metrics"
    return float(match.group(1))


def _latency_count(metrics: str) -> float:
    """Events observed by the latency histogram, over both RPCs."""
    counts = re.findall(r'^zkmeter_ingest_latency_seconds_count\{rpc="[A-Za-z]+"\} (\S+)$',
                        metrics, re.MULTILINE)
    assert counts, "no latency histogram in /metrics"
    return sum(float(c) for c in counts)


def _recorded_per_worker(metrics_dir: Path) -> dict[str, float]:
    """Each worker's own recorded count, read from its file in the shared directory."""
    out = {}
    for path in sorted(metrics_dir.glob("counter_*.db")):
        value = 0.0
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if (sample.name == "zkmeter_ingest_events_total"
                        and sample.labels.get("outcome") == "recorded"):
                    value += sample.value
        out[path.stem] = value
    return out


def test_two_workers_on_one_postgresql_keep_every_chain_linear(tmp_path):
    key = new_api_key()
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    target = f"127.0.0.1:{grpc_port}"
    with temporary_database("zkmeter_workers") as url:
        env = _env(url, key, grpc_port, http_port, metrics_port)
        env["TMPDIR"] = str(tmp_path)  # where the run's metrics directory is made
        proc = subprocess.Popen(
            [sys.executable, "-m", "prover.cli", "serve", "--dev", "--workers", "2"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            def both_up() -> bool:
                with grpc.insecure_channel(target) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=""), timeout=2)
                up = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2)
                return (reply.status == health_pb2.HealthCheckResponse.SERVING
                        and up.status_code == 200)

            wait_until(both_up)
            from zkmeter.client import Client  # usage needs a billing account
            with Client(target, api_key=key) as zk:
                account = zk.register_account(payer=b"\xa1" * 20, asset=bytes(20),
                                              payer_x25519_public_key=b"\x09" * 32)
                for user in USERS:
                    zk.register_user(user, account.account_id)
            # separate processes: separate connections, spread over the workers by the kernel
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(CLIENTS) as pool:
                ok = sum(pool.map(_client, [(target, key, c) for c in range(CLIENTS)]))
            total = CLIENTS * PER_CLIENT * 2
            assert ok == total
            # worker 0 serves /metrics (on the operator's listener) for every worker
            scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            (metrics_dir,) = tmp_path.glob("zkmeter-metrics-*")
            per_worker = _recorded_per_worker(metrics_dir)
            with Client(target, api_key=key) as zk:
                chains = {user: zk.list_receipts(user) for user in USERS}
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            assert code == 0, proc.stderr.read().decode()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = proc.stderr.read().decode()
    assert "Traceback" not in stderr
    assert "(worker 0 of 2)" in stderr and "(worker 1 of 2)" in stderr
    # the load was spread (each worker recorded some) and /metrics shows the sum
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker
    assert sum(per_worker.values()) == total
    assert _recorded(scraped) == total
    assert _latency_count(scraped) == total
    assert not metrics_dir.exists()  # removed when the parent exited
    seen: Counter[bytes] = Counter()
    for user, receipts in chains.items():
        assert len(receipts) == total // len(USERS), user
        prev, running = ZERO32, 0
        for seq, wire in enumerate(receipts, start=1):
            receipt = decode_receipt(wire.encoded + wire.signature)
            assert receipt.user_id == user
            assert receipt.seq == wire.sequence == seq
            assert receipt.prev_hash == prev
            running += receipt.units
            assert receipt.total_units == wire.running_total == running
            prev = keccak256(wire.encoded, wire.signature)
            assert prev == wire.receipt_hash
            seen[receipt.idempotency_key_digest] += 1
    assert len(seen) == total and max(seen.values()) == 1


def test_workers_refused_on_sqlite(tmp_path):
    env = _env(f"sqlite:///{tmp_path / 'w.sqlite'}", new_api_key(), free_port(), free_port())
    done = subprocess.run([sys.executable, "-m", "prover.cli", "serve", "--dev", "--workers",
                           "2"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--workers > 1 needs PostgreSQL" in lines[0]
    assert not (tmp_path / "w.sqlite").exists()  # refused before anything was opened


def test_shared_metrics_dir_is_fresh_private_and_removed(monkeypatch, tmp_path):
    """A directory left by an earlier run is never reused (its counts would be added); the
    environment is restored and the run's directory removed, even after an error."""
    from prover.api.metrics import MULTIPROC_ENV, shared_metrics_dir

    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"old")
    monkeypatch.setenv(MULTIPROC_ENV, str(stale))
    monkeypatch.setenv(MULTIPROC_ENV.lower(), str(stale))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # (tempfile caches TMPDIR)
    try:
        with shared_metrics_dir() as path:
            made = Path(path)
            assert os.environ[MULTIPROC_ENV] == path and made.parent == tmp_path
            assert MULTIPROC_ENV.lower() not in os.environ
            assert made.is_dir() and not any(made.iterdir())
            assert made.stat().st_mode & 0o077 == 0  # the operator's alone
            (made / "counter_2.db").write_bytes(b"new")
            raise RuntimeError("a worker failed")
    except RuntimeError:
        pass
    assert not made.exists()
    assert os.environ[MULTIPROC_ENV] == str(stale)
    assert os.environ[MULTIPROC_ENV.lower()] == str(stale)
    assert (stale / "counter_1.db").exists()  # somebody else's directory is left alone
