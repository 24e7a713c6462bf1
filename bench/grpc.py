"""gRPC ingest benchmark against the transport's own limit: ``python -m bench.grpc --json``.

Two servers run side by side in this process, each on its own event loop and loopback port:

* the real one (``create_server``: API keys, interceptors, the batcher, a SQLite file in WAL
  mode with synchronous=FULL, so every receipt is durable before it is returned; or
  ``--database-url`` for PostgreSQL);
* a bare ``grpc.aio`` echo server on the same method names that does no work at all: bytes
  in, a pre-encoded response of the real response's size out.

The same load generator drives both, scenario by scenario, echo first, in the same run:
``--clients`` processes, each one asyncio ``grpc.aio`` channel sending pre-encoded requests
(no protobuf work in the client); unary keeps ``--inflight`` calls in flight per client,
streaming uses one bidi stream per client. Each figure is printed with its echo baseline and
the ratio (issue 16: unary >= 80 %, streaming >= 60 % of the echo, counts only; the text
scenarios, about 500 tokens per request, are reported the same way). Both servers run in this
process and the clients in their own, so this process's CPU time during a run is the server's
(``server_cpu_us_per_event``; with ``--target`` it is only the echo's, and left out for the
real one; with the ingest process, which ``--ingest-process auto`` (the default) starts as
``zkmeter serve`` would, on two usable cores, the ledger transactions run in a child process,
whose CPU is not in it (``ingest_process_cpu_us_per_event``); ``cpu_us_per_event_by_thread``
splits it: each server's event loop, the ingest writers, gRPC core's native threads). The
machine is shared: the absolute figures move with its load, the same-run ratios are the
measure.

For the counts scenarios on SQLite it also reports ``bound``: the ratio a server would reach
whose transport cost only the echo's CPU per event and whose ingest only the floor's
(``bench.ingest.ingest_floor``, measured here at the mean batch size the real server formed
in that scenario), both in one process bound to one core by the GIL:
echo CPU / (echo CPU + floor CPU). It is a model, not a measurement of a server; it says how
much of the goal any single-process implementation in CPython on SQLite could reach.

``--postgres ADMIN_URL`` runs every scenario a second time, the real server on a fresh
PostgreSQL database made next to ADMIN_URL (dropped afterwards), and prints it under
``postgresql`` with ``postgresql_vs_sqlite``: each scenario's rate on PostgreSQL against the
SQLite run just before it, same clients and load (issue 16: >= 80 %). Each server runs as
``zkmeter serve`` would: ``ZKMETER_INGEST_WRITERS`` (one) writer, or the ingest process.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

TEXT = ("The quick brown fox jumps over the lazy dog while the billing meter counts every "
        "token of the conversation exactly once. ") * 20  # about 500 tokens
UNARY = "/zkmeter.v1.MeterService/RecordUsage"
STREAM = "/zkmeter.v1.MeterService/RecordUsageStream"
RECEIPT_TAG = b"\x0a"  # RecordUsageResponse.receipt is field 1, length-delimited
GOALS = {"unary_counts": 0.80, "stream_counts": 0.60}
POSTGRES_GOAL = 0.80  # each scenario on PostgreSQL against SQLite, same clients and load


def encoded_requests(client_id: int, count: int, with_text: bool, tag: str) -> list[bytes]:
    """``count`` distinct RecordUsageRequests, serialized once (the client sends bytes)."""
    from zkmeter.client import usage_request

    out = []
    for i in range(count):
        common = dict(idempotency_key=f"{tag}-{client_id}-{i}", user_id=f"user-{i % 97}",
                      model="gpt-4o")
        if with_text:
            message = usage_request(**common, messages=[("user", TEXT)], completion=TEXT[:200])
        else:
            message = usage_request(**common, input_tokens=100 + i % 50, output_tokens=20)
        out.append(message.SerializeToString())
    return out


async def _drive(target: str, api_key: str, requests: list[bytes], mode: str,
                 inflight: int, connections: int, ready: Callable[[], None]) -> int:
    """Send every request; the number of responses that carry a receipt. ``connections``
    TCP connections (a local subchannel pool each): the unary lanes and the streams (one per
    connection) are spread over them."""
    metadata = (("authorization", f"Bearer {api_key}"),)
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool",
                                                            1)]) for _ in range(connections)]
    try:
        for channel in channels:
            await channel.channel_ready()
        ready()
        if mode == "stream":
            async def stream(channel: grpc.aio.Channel, part: list[bytes]) -> int:
                call = channel.stream_stream(STREAM)(iter(part), metadata=metadata,
                                                     timeout=1800)
                return sum([bytes(r[:1]) == RECEIPT_TAG async for r in call])

            return sum(await asyncio.gather(*(stream(c, requests[k::connections])
                                              for k, c in enumerate(channels))))
        unaries = [channel.unary_unary(UNARY) for channel in channels]
        ok = 0

        async def lane(k: int) -> None:
            nonlocal ok
            unary = unaries[k % connections]
            for request in requests[k::inflight]:
                response = await unary(request, metadata=metadata, timeout=600)
                ok += response[:1] == RECEIPT_TAG
        await asyncio.gather(*(lane(k) for k in range(inflight)))
        return ok
    finally:
        for channel in channels:
            await channel.close()


def _client(args: tuple[str, str, list[bytes], str, int, int, Any]) -> int:
    target, api_key, requests, mode, inflight, connections, barrier = args
    return asyncio.run(_drive(target, api_key, requests, mode, inflight, connections,
                              lambda: barrier.wait(120)))


def run_load(target: str, api_key: str, loads: list[list[bytes]], *, mode: str,
             inflight: int, connections: int = 1) -> dict[str, Any]:
    """One client process per entry of ``loads``, all started together; the throughput."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(len(loads)) as pool:
        barrier = manager.Barrier(len(loads) + 1)
        jobs = pool.map_async(_client, [(target, api_key, load, mode, inflight, connections,
                                         barrier) for load in loads])
        barrier.wait(120)
        start, cpu_start = time.perf_counter(), time.process_time()
        ok = sum(jobs.get(timeout=1800))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    total = sum(len(load) for load in loads)
    # the servers run in this process (the clients in their own): its CPU time is theirs
    return {"events": total, "ok": ok, "seconds": round(elapsed, 3),
            "per_second": round(total / elapsed, 1),
            "server_cpu_us_per_event": round(cpu / total * 1e6, 1)}


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by native thread id
    (/proc/self/task; Linux)."""
    out: dict[int, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            out[int(tid)] = _stat_cpu(f"/proc/self/task/{tid}/stat")
        except OSError:  # the thread ended meanwhile
            continue
    return out


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far (/proc; Linux)."""
    return _stat_cpu(f"/proc/{pid}/stat")


def _stat_cpu(path: str) -> float:
    """utime + stime of a /proc stat file, in seconds."""
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_thread(before: dict[int, float], after: dict[int, float], events: int,
                  names: dict[int, str]) -> dict[str, float]:
    """Each group's CPU microseconds per event between two :func:`thread_cpu` snapshots:
    the threads ``names`` labels, the Python threads by name (the ingest writers together),
    and every other thread (gRPC core's native threads) as ``native``."""
    python = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    groups: dict[str, float] = {}
    for tid, seconds in after.items():
        used = seconds - before.get(tid, 0.0)
        if used <= 0:
            continue
        label = names.get(tid) or python.get(tid, "native")
        if label.startswith("zkmeter-ingest"):
            label = "ingest writers"
        groups[label] = groups.get(label, 0.0) + used
    return {label: round(seconds * 1e6 / events, 1)
            for label, seconds in sorted(groups.items(), key=lambda kv: -kv[1])}


class BatchCounter:
    """Counts the ledger transactions (``Meter.record_batch`` calls) of a run and their
    events."""

    def __init__(self) -> None:
        self.calls = self.events = 0

    def reset(self) -> None:
        self.calls = self.events = 0

    def mean(self) -> float:
        return round(self.events / self.calls, 1) if self.calls else 0.0

    def counting(self, record_batch: Callable[[list[Any]], list[Any]]
                 ) -> Callable[[list[Any]], list[Any]]:
        def counted(requests: list[Any]) -> list[Any]:
            self.calls += 1
            self.events += len(requests)
            return record_batch(requests)
        return counted


def floor_bound(entry: dict[str, Any], tmp: str) -> dict[str, Any]:
    """The module docstring's ``bound`` for one scenario: the ingest floor measured at the
    real server's mean batch size, against the echo's CPU per event of the same run."""
    from pathlib import Path

    from bench.ingest import ingest_floor

    batch = max(1, round(entry["zkmeter"]["mean_batch"]))
    floor = ingest_floor(Path(tmp) / f"floor-{batch}-{os.urandom(4).hex()}.sqlite",
                         events=max(2_000, 20 * batch), batch=batch, users=97)
    echo_cpu = entry["echo"]["server_cpu_us_per_event"]
    return {"batch": batch, "floor_cpu_us_per_event": round(floor["cpu_us_per_event"], 1),
            "echo_cpu_us_per_event": echo_cpu,
            "ratio": round(echo_cpu / (echo_cpu + floor["cpu_us_per_event"]), 3)}


class LoopThread:
    """An event loop in a daemon thread (where a server runs)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


class EchoServer:
    """A bare grpc.aio server on the ingest method names: no decoding, no work; answers
    every request with ``response`` (set it to a real response of the scenario's size)."""

    def __init__(self) -> None:
        self.response = b""
        self.loops = LoopThread()
        self.server: grpc.aio.Server = self.loops.run(self._start())

    async def _start(self) -> grpc.aio.Server:
        async def unary(_request: bytes, _context: Any) -> bytes:
            return self.response

        async def stream(requests: Any, _context: Any) -> Any:
            async for _request in requests:
                yield self.response

        handler = grpc.method_handlers_generic_handler("zkmeter.v1.MeterService", {
            "RecordUsage": grpc.unary_unary_rpc_method_handler(unary),
            "RecordUsageStream": grpc.stream_stream_rpc_method_handler(stream)})
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((handler,))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.loops.run(self.server.stop(0))
        self.loops.close()


def sample_response(target: str, api_key: str, request: bytes) -> bytes:
    """One real response to ``request`` (its size is what the echo answers with)."""
    with grpc.insecure_channel(target) as channel:
        response: bytes = channel.unary_unary(UNARY)(
            request, metadata=(("authorization", f"Bearer {api_key}"),), timeout=60)
    if response[:1] != RECEIPT_TAG:
        raise RuntimeError("the server refused the sample request")
    return response


PROFILE_RATE = 250  # samples per second
_IDLE = ("EpollSelector.select", "Condition.wait", "Event.wait", "_worker (concurrent",
         "Connection._recv", "Thread.join", "SimpleQueue.get", "Queue.get")


def start_profiler(directory: str, name: str) -> tuple[Any, str]:
    """py-spy sampling this process (every Python thread) until :func:`stop_profiler`."""
    import shutil
    import subprocess

    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(directory, exist_ok=True)
    out = os.path.join(directory, f"{name}.txt")
    proc = subprocess.Popen([spy, "record", "--pid", str(os.getpid()), "--rate",
                             str(PROFILE_RATE), "--format", "raw", "--nonblocking",
                             "--output", out], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the load starts
    return proc, out


def stop_profiler(spy: tuple[Any, str], events: int, top: int = 15) -> dict[str, Any]:
    """Stop py-spy; the busiest functions (inclusive and own time, idle waits left out) in
    thread-microseconds per event."""
    import signal
    from collections import Counter

    proc, out = spy
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    busy = 0
    with open(out, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            frames = [f for f in stack.split(";") if f]
            if not frames or frames[-1].startswith(_IDLE) or "bench/grpc.py" in stack:
                continue
            n = int(count)
            busy += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    per_event = 1e6 / PROFILE_RATE / max(events, 1)  # thread-µs per event per sample
    def rows(counter: Counter[str]) -> list[list[Any]]:
        return [[f, round(n * per_event, 1), round(n / max(busy, 1), 3)]
                for f, n in counter.most_common(top)]

    # wall-clock samples of running threads: on a loaded machine a thread waiting for a CPU
    # counts too, so the shares are the figure to compare, the microseconds are an upper bound
    return {"raw": out, "columns": ["function", "thread_us_per_event", "share_of_busy"],
            "busy_us_per_event": round(busy * per_event, 1),
            "top_inclusive": rows(inclusive), "top_own": rows(own)}


def main(argv: list[str] | None = None) -> int:
    """Start both servers, run every scenario against each, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--unary", type=int, default=2000, help="unary calls per client")
    parser.add_argument("--stream", type=int, default=10000, help="stream events per client")
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--connections", type=int, default=1,
                        help="TCP connections per client (more spread load over --workers)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--target", default=None,
                        help="measure an already running zkmeter serve (ZKMETER_BENCH_API_KEY) "
                             "instead of starting one")
    parser.add_argument("--only", default=None, help="comma-separated scenarios to run")
    parser.add_argument("--ingest-process", nargs="?", const="true", default="auto",
                        choices=("auto", "true", "false"),
                        help="the ledger transactions in their own process, as "
                             "ZKMETER_INGEST_PROCESS does (prover/api/ingest_process.py): "
                             "auto (the default, as zkmeter serve decides), true (the flag "
                             "alone) or false")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="sample this process (the server) with py-spy during each real "
                             "scenario; raw stacks to DIR, top entries per event in the report")
    parser.add_argument("--postgres", default=None, metavar="ADMIN_URL",
                        help="run every scenario again on a fresh PostgreSQL database made "
                             "next to ADMIN_URL, and report it against SQLite (goal >= 80 %%)")
    args = parser.parse_args(argv)
    if args.postgres and (args.target or args.database_url):
        parser.error("--postgres compares with SQLite: not with --target or --database-url")
    report = measure(args, args.database_url)
    if args.postgres:
        from bench.postgres import ServerUnreachable

        try:
            report["postgresql"] = on_postgres(args)
        except ServerUnreachable as exc:
            parser.exit(2, f"bench.grpc: --postgres: the server did not let us in ({exc})\n")
        report["postgresql_vs_sqlite"] = {
            name: {"value": entry["per_second"], "baseline": report[name]["per_second"],
                   "ratio": round(entry["per_second"] / report[name]["per_second"], 3),
                   "goal": POSTGRES_GOAL,
                   "met": entry["per_second"] >= POSTGRES_GOAL * report[name]["per_second"],
                   # each run against its own echo: load that drifted between the two runs
                   "of_echo_ratios": round(entry["ratio"] / report[name]["ratio"], 3)}
            for name, entry in report["postgresql"].items()
            if isinstance(entry, dict) and "per_second" in entry and name in report}
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


def on_postgres(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`measure` on a fresh PostgreSQL database next to ``--postgres``, dropped after."""
    from bench.postgres import fresh_database

    with fresh_database(args.postgres, "zkmeter_bench") as (url, _admin):
        return measure(args, url)


def measure(args: argparse.Namespace, database_url: str | None) -> dict[str, Any]:
    """Start both servers (zkmeter on ``database_url``, a temporary SQLite file if None),
    run every scenario against each; the report."""

    from nacl.signing import SigningKey

    from prover.api.grpc_server import hash_api_key, new_api_key
    from prover.api.serve import ingest_in_child, ingest_writers, settle_gc

    server: Any = None
    services: Any = None
    ingest: Any = None
    batches = BatchCounter()
    if args.target:
        target, key = args.target, os.environ["ZKMETER_BENCH_API_KEY"]
        database = "external"
    else:
        from prover.app import build_services
        from prover.config import Settings
        from tests.api.grpc_harness import ServerThread

        tmp = tempfile.mkdtemp(prefix="zkmeter-bench-")
        url = database_url or f"sqlite:///{os.path.join(tmp, 'bench.sqlite')}"
        settings = Settings(database_url=url, signing_key=bytes(SigningKey.generate()).hex(),
                            ingest_process=args.ingest_process)
        in_child, args.ingest_decision = ingest_in_child(settings, workers=1, escrow_given=False)
        services = build_services(settings)
        account = services.accounts.register_account(payer=bytes.fromhex("a1" * 20),
                                                     asset=bytes(20),
                                                     payer_x25519_public_key=bytes(32 * [9]))
        for i in range(97):  # usage needs a billing account
            services.accounts.register_user(f"user-{i}", account.account_id)
        key = new_api_key()
        if in_child:
            from prover.api.ingest_process import IngestProcess

            ingest = IngestProcess.start(settings)
            record = batches.counting(ingest.record_batch)
        else:
            record = batches.counting(services.meter.record_batch)
        server = ServerThread(services, api_key_hashes=[hash_api_key(key)], record_batch=record,
                              writers=ingest_writers(settings))
        settle_gc()  # as `zkmeter serve` does once started (this process serves both)
        target, database = server.target, url.split(":", 1)[0]
    echo = EchoServer()
    loop_names: dict[int, str] = {}
    for loop_thread, label in ((echo.loops.thread, "echo event loop"),
                               (getattr(server, "thread", None), "zkmeter event loop")):
        if loop_thread is not None and loop_thread.native_id is not None:
            loop_names[loop_thread.native_id] = label
    run_tag = os.urandom(4).hex()
    report: dict[str, Any] = {
        "database": database, "clients": args.clients, "inflight_per_client": args.inflight,
        "ingest_process": ingest is not None,
        "ingest_setting": args.ingest_process,
        "ingest_decision": getattr(args, "ingest_decision", None),
        "durable": True, "load_avg_at_start": round(os.getloadavg()[0], 2),
        "note": "shared machine: compare the same-run ratios, not the absolute figures"}
    wanted = set(args.only.split(",")) if args.only else None
    try:
        warm = [encoded_requests(c, 50, False, f"{run_tag}-warm") for c in range(args.clients)]
        echo.response = sample_response(target, key, encoded_requests(998, 1, False,
                                                                      f"{run_tag}-w")[0])
        for where in (echo.target, target):  # connections, code paths, the open epoch
            run_load(where, key, warm, mode="unary", inflight=args.inflight)
        for mode, count in (("unary", args.unary), ("stream", args.stream)):
            for with_text in (False, True):
                name = f"{mode}_{'text' if with_text else 'counts'}"
                if wanted is not None and name not in wanted:
                    continue
                n = count if not with_text else max(1, count // 4)
                tag = f"{run_tag}-{name}"
                loads = [encoded_requests(c, n, with_text, tag) for c in range(args.clients)]
                echo.response = sample_response(
                    target, key, encoded_requests(999, 1, with_text, tag + "-sample")[0])
                before = thread_cpu()
                bare = run_load(echo.target, key, loads, mode=mode, inflight=args.inflight,
                                connections=args.connections)
                bare["cpu_us_per_event_by_thread"] = cpu_by_thread(
                    before, thread_cpu(), bare["events"], loop_names)
                spy = start_profiler(args.profile, name) if args.profile else None
                batches.reset()
                before = thread_cpu()
                child_before = process_cpu(ingest.pid) if ingest is not None else 0.0
                real = run_load(target, key, loads, mode=mode, inflight=args.inflight,
                                connections=args.connections)
                if not args.target:
                    real["cpu_us_per_event_by_thread"] = cpu_by_thread(
                        before, thread_cpu(), real["events"], loop_names)
                if ingest is not None:
                    real["ingest_process_cpu_us_per_event"] = round(
                        (process_cpu(ingest.pid) - child_before) * 1e6 / real["events"], 1)
                if args.target:  # the server is another process: this one only waited
                    del real["server_cpu_us_per_event"]
                else:
                    real["transactions"], real["mean_batch"] = batches.calls, batches.mean()
                profile = stop_profiler(spy, real["events"]) if spy else None
                ratio = real["per_second"] / bare["per_second"]
                entry: dict[str, Any] = {
                    "per_second": real["per_second"], "echo_per_second": bare["per_second"],
                    "ratio": round(ratio, 3), "request_bytes": len(loads[0][0]),
                    "response_bytes": len(echo.response), "zkmeter": real, "echo": bare}
                if profile is not None:
                    entry["profile"] = profile
                if name in GOALS:
                    entry["goal"] = GOALS[name]
                    entry["met"] = ratio >= GOALS[name]
                report[name] = entry
    finally:
        echo.stop()
        if server is not None:
            server.stop()
            services.close()
        if ingest is not None:
            ingest.close()
    if not args.target:
        try:
            if database == "sqlite" and not report["ingest_process"]:  # the model: one process
                for name in ("unary_counts", "stream_counts"):
                    if name in report:
                        report[name]["bound"] = floor_bound(report[name], tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    report["load_avg_at_end"] = round(os.getloadavg()[0], 2)
    return report


if __name__ == "__main__":
    sys.exit(main())
