"""Gateway benchmark: ``python -m bench.gateway --json``.

Starts ``zkmeter serve`` (SQLite), ``zkmeter upstream`` and two gateways (receipts
``inline``: reported before the reply so the receipt rides in a header; ``deferred``: reply
first, report after), each its own process on loopback, and measures in the same run:

* added latency: sequential non-streamed chat requests over keep-alive connections,
  alternating direct-to-upstream and through one gateway (each mode has its own interleaved
  direct baseline: a deferred gateway's report, sent after its reply, would otherwise load
  zkmeter serve while the inline gateway's next request waits for it); p50/p99 of each, and
  the differences; for streams the added time to the first chunk and to ``[DONE]``;
* throughput: requests/s with ``--concurrency`` requests in flight for ``--seconds``, direct
  and through each gateway, and the CPU time each process spent per request meanwhile
  (from ``/proc``; a deferred gateway's reports after the run are included).

Between phases the benchmark waits until both gateways' report queues are empty, so no
backlog of one phase runs during the next. The 1-minute load average at the start and the
end is in the output.

Goal (issue 15): p50 added <= 2 ms for non-streamed requests, throughput >= 70 % of direct.
Everything shares the machine (client, gateway, upstream, serve): read the figures with that.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.gateway.harness import Proc, Stack, free_port

BODY = {"model": "gpt-4o", "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Summarize the benefits of verifiable usage billing."}]}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def latency(targets: dict[str, tuple[str, str]], n: int) -> dict[str, dict[str, float]]:
    """Sequential requests, interleaved across targets (name -> (base url, key))."""
    clients = {name: httpx.Client(base_url=url, timeout=60,
                                  headers={"authorization": f"Bearer {key}"})
               for name, (url, key) in targets.items()}
    times: dict[str, list[float]] = {name: [] for name in targets}
    try:
        for i in range(n + 20):
            for name, client in clients.items():
                started = time.perf_counter()
                reply = client.post("/chat/completions", json=BODY)
                elapsed = time.perf_counter() - started
                if reply.status_code != 200:
                    raise RuntimeError(f"{name}: HTTP {reply.status_code}")
                if i >= 20:  # warm-up
                    times[name].append(elapsed)
    finally:
        for client in clients.values():
            client.close()
    return {name: {"p50_ms": _ms(statistics.median(t)), "p99_ms": _ms(_pct(t, 0.99)),
                   "max_ms": _ms(max(t))} for name, t in times.items()}


def stream_latency(targets: dict[str, tuple[str, str]], n: int) -> dict[str, dict[str, float]]:
    """Time to the first chunk and to the end of a stream, interleaved."""
    clients = {name: httpx.Client(base_url=url, timeout=60,
                                  headers={"authorization": f"Bearer {key}"})
               for name, (url, key) in targets.items()}
    first: dict[str, list[float]] = {name: [] for name in targets}
    done: dict[str, list[float]] = {name: [] for name in targets}
    try:
        for i in range(n + 10):
            for name, client in clients.items():
                started = time.perf_counter()
                got_first = None
                with client.stream("POST", "/chat/completions",
                                   json={**BODY, "stream": True}) as reply:
                    for line in reply.iter_lines():
                        if got_first is None and line.startswith("data: {"):
                            got_first = time.perf_counter() - started
                ended = time.perf_counter() - started
                if i >= 10 and got_first is not None:
                    first[name].append(got_first)
                    done[name].append(ended)
    finally:
        for client in clients.values():
            client.close()
    return {name: {"first_chunk_p50_ms": _ms(statistics.median(first[name])),
                   "done_p50_ms": _ms(statistics.median(done[name]))} for name in targets}


def _pid(proc: Proc) -> int:
    if proc.proc is None:
        raise RuntimeError(f"{proc.name} is not running")
    return proc.proc.pid


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _throughput(url: str, key: str, concurrency: int, seconds: float,
                      delay_ms: int = 0) -> tuple[int, float]:
    """(requests answered, seconds) with ``concurrency`` requests in flight."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60,
                                 headers={"authorization": f"Bearer {key}"}) as client:
        count = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                reply = await client.post("/chat/completions", json=BODY,
                                          headers={"x-upstream-delay-ms": str(delay_ms)})
                if reply.status_code != 200:
                    raise RuntimeError(f"HTTP {reply.status_code}")
                count += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count, time.perf_counter() - started


def _drained(metrics_ports: list[int], timeout: float = 120.0) -> None:
    """Wait until every gateway's report queue is empty (its backlog would load the next
    phase)."""
    deadline = time.monotonic() + timeout
    for port in metrics_ports:
        while True:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            depth = re.search(r"^zkmeter_gateway_queue_depth (\S+)$", text, re.M)
            if depth is not None and float(depth.group(1)) == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("a gateway's report queue did not drain")
            time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--streams", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--model-delay-ms", type=int, default=50,
                        help="upstream delay of the second throughput run (a model's time)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zkmeter-bench-gateway-") as tmp:
        stack = Stack(Path(tmp) / "stack", ["bench-user"])
        deferred_port, deferred_metrics = free_port(), free_port()
        deferred = Proc("gateway-deferred", [*stack.gateway.args[:-1],
                                             f"127.0.0.1:{deferred_port}"],
                        {**stack.gateway.env, "ZKMETER_GATEWAY_RECEIPTS": "deferred",
                         "ZKMETER_GATEWAY_QUEUE_PATH": str(Path(tmp) / "deferred.sqlite"),
                         "ZKMETER_GATEWAY_METRICS_BIND": f"127.0.0.1:{deferred_metrics}"},
                        stack.workdir, deferred_port)
        load_start = os.getloadavg()[0]
        stack.start()
        deferred.start()
        metrics_ports = [stack.metrics_port, deferred_metrics]
        try:
            key = stack.caller_keys["bench-user"]
            targets = {"direct": (stack.upstream_url, stack.upstream_key),
                       "inline": (stack.gateway_url, key),
                       "deferred": (f"http://127.0.0.1:{deferred_port}/v1", key)}
            lat: dict[str, dict[str, dict[str, float]]] = {}
            streams: dict[str, dict[str, dict[str, float]]] = {}
            for mode in ("inline", "deferred"):  # each against its own interleaved direct
                pair = {"direct": targets["direct"], mode: targets[mode]}
                lat[mode] = latency(pair, args.requests)
                _drained(metrics_ports)
                streams[mode] = stream_latency(pair, args.streams)
                _drained(metrics_ports)
            pids = {"gateway_inline": _pid(stack.gateway), "gateway_deferred": _pid(deferred),
                    "serve": _pid(stack.serve), "upstream": _pid(stack.upstream)}
            rates, slow, cpu = {}, {}, {}
            for name, (url, k) in targets.items():
                before = {p: _cpu_seconds(pid) for p, pid in pids.items()}
                client_before = time.process_time()
                count, elapsed = asyncio.run(_throughput(url, k, args.concurrency,
                                                         args.seconds))
                _drained(metrics_ports)
                rates[name] = round(count / elapsed, 1)
                used = {p: _cpu_seconds(pid) - before[p] for p, pid in pids.items()}
                used["load_generator"] = time.process_time() - client_before
                cpu[name] = {p: _ms(t / count) for p, t in used.items() if t / count >= 5e-5}
            for name, (url, k) in targets.items():
                count, elapsed = asyncio.run(_throughput(url, k, args.concurrency,
                                                         args.seconds, args.model_delay_ms))
                slow[name] = round(count / elapsed, 1)
                _drained(metrics_ports)
        finally:
            deferred.stop()
            stack.stop()
    result: dict[str, Any] = {
        "machine": "2 cores shared by client, gateway, upstream and zkmeter serve",
        "load_average_1m": {"start": round(load_start, 2),
                            "end": round(os.getloadavg()[0], 2)},
        "requests": args.requests, "concurrency": args.concurrency, "seconds": args.seconds,
        "latency_ms": lat, "streams_ms": streams, "throughput_rps": rates,
        "cpu_ms_per_request": cpu,
        f"throughput_rps_upstream_{args.model_delay_ms}ms": slow}
    for mode in ("inline", "deferred"):
        own, direct = lat[mode][mode], lat[mode]["direct"]
        added50 = round(own["p50_ms"] - direct["p50_ms"], 3)
        result[mode] = {
            "added_p50_ms": added50,
            "added_p99_ms": round(own["p99_ms"] - direct["p99_ms"], 3),
            "added_first_chunk_p50_ms": round(
                streams[mode][mode]["first_chunk_p50_ms"]
                - streams[mode]["direct"]["first_chunk_p50_ms"], 3),
            "throughput_vs_direct": round(rates[mode] / rates["direct"], 3),
            f"throughput_vs_direct_upstream_{args.model_delay_ms}ms": round(
                slow[mode] / slow["direct"], 3),
            "goal_p50_added_le_2ms": added50 <= 2.0,
            "goal_throughput_ge_70pct": rates[mode] / rates["direct"] >= 0.7}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for mode in ("inline", "deferred"):
            r = result[mode]
            print(f"{mode}: added p50 {r['added_p50_ms']} ms, p99 {r['added_p99_ms']} ms, "
                  f"throughput {rates[mode]} vs {rates['direct']} req/s "
                  f"({r['throughput_vs_direct']:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
