"""gRPC ingest benchmark: ``python -m bench.grpc --json``.

A real server (SQLite file in WAL mode with synchronous=FULL, so every receipt is durable
before it is returned; or ``--database-url`` for PostgreSQL) on a loopback port, and 4
client processes. Reports unary requests/s (each client keeps ``--inflight`` calls in
flight) and streaming events/s (one stream per client), each counts-only and with text of
about 500 tokens. Goals (issue 4, 2 cores): >= 3,000 req/s unary, >= 20,000 events/s
streaming.
"""

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

TEXT = ("The quick brown fox jumps over the lazy dog while the billing meter counts every "
        "token of the conversation exactly once. ") * 20  # about 500 tokens


def _requests(client_id: int, count: int, with_text: bool, tag: str) -> list[Any]:
    from zkmeter.client import usage_request

    out = []
    for i in range(count):
        common = dict(idempotency_key=f"{tag}-{client_id}-{i}", user_id=f"user-{i % 97}",
                      model="gpt-4o")
        if with_text:
            out.append(usage_request(**common, messages=[("user", TEXT)], completion=TEXT[:200]))
        else:
            out.append(usage_request(**common, input_tokens=100 + i % 50, output_tokens=20))
    return out


def _client(args: tuple[str, str, int, int, bool, str, int, Any]) -> int:
    target, api_key, client_id, count, with_text, mode, inflight, barrier = args
    from zkmeter.client import Client

    requests = _requests(client_id, count, with_text, f"{mode}{int(with_text)}")
    with Client(target, api_key=api_key, timeout=600) as zk:
        barrier.wait()
        if mode == "stream":
            ok = sum(r.HasField("receipt") for r in zk.record_usage_stream(requests))
        else:
            def one(request: Any) -> bool:
                return bool(zk.meter.RecordUsage(request, metadata=zk._metadata,
                                                 timeout=600).HasField("receipt"))

            with ThreadPoolExecutor(inflight) as pool:
                ok = sum(pool.map(one, requests))
    return ok


def run_scenario(target: str, api_key: str, *, mode: str, with_text: bool, per_client: int,
                 clients: int, inflight: int) -> dict[str, Any]:
    """All clients send ``per_client`` requests; returns the throughput."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(clients + 1)
    with ctx.Pool(clients) as pool:
        jobs = pool.map_async(_client, [(target, api_key, c, per_client, with_text, mode,
                                         inflight, barrier) for c in range(clients)])
        barrier.wait()
        start = time.perf_counter()
        ok = sum(jobs.get(timeout=1800))
        elapsed = time.perf_counter() - start
    total = per_client * clients
    return {"events": total, "ok": ok, "seconds": round(elapsed, 3),
            "per_second": round(total / elapsed, 1)}


def main(argv: list[str] | None = None) -> int:
    """Start the server, run the four scenarios, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--unary", type=int, default=2000, help="unary calls per client")
    parser.add_argument("--stream", type=int, default=10000, help="stream events per client")
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)

    from nacl.signing import SigningKey

    from prover.api.grpc_server import hash_api_key, new_api_key
    from prover.app import build_services
    from prover.config import Settings
    from tests.api.grpc_harness import ServerThread

    tmp = tempfile.mkdtemp(prefix="zkmeter-bench-")
    url = args.database_url or f"sqlite:///{os.path.join(tmp, 'bench.sqlite')}"
    settings = Settings(database_url=url, signing_key=bytes(SigningKey.generate()).hex())
    services = build_services(settings)
    key = new_api_key()
    server = ServerThread(services, api_key_hashes=[hash_api_key(key)],
                          writers=1 if url.startswith("sqlite") else 4)
    report: dict[str, Any] = {"database": url.split(":", 1)[0], "clients": args.clients,
                              "inflight_per_client": args.inflight, "durable": True}
    try:
        for mode, count in (("unary", args.unary), ("stream", args.stream)):
            for with_text in (False, True):
                n = count if not with_text else max(1, count // 4)
                report[f"{mode}_{'text' if with_text else 'counts'}"] = run_scenario(
                    server.target, key, mode=mode, with_text=with_text, per_client=n,
                    clients=args.clients, inflight=args.inflight)
    finally:
        server.stop()
        services.close()
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
