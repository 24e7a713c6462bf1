"""``zkmeter serve``: the gRPC server and the HTTP read API in one process, one event loop.

SIGTERM or SIGINT starts a graceful drain: health turns NOT_SERVING, new calls are refused,
in-flight calls get ``shutdown_grace_seconds`` to finish, then the HTTP server stops.
"""

import asyncio
import gc
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from prover.api.grpc_server import RunningServer, TlsFiles, create_server
from prover.api.http import create_http_app, create_metrics_app
from prover.api.http_server import uvicorn_config
from prover.api.ingest_process import IngestProcess, IngestProcessError
from prover.app import Services
from prover.config import Settings
from prover.errors import ConfigError

log = logging.getLogger(__name__)


# The collector's generation thresholds for a serving process (CPython's defaults: 700, 10,
# 10). Ingest allocates and drops protobuf messages, receipts and rows by the thousand per
# batch, almost all freed by reference counting; at 700 the young generation was collected
# every few events.
SERVING_GC_THRESHOLDS = (50_000, 50, 50)


def settle_gc() -> None:
    """Prepare a serving process's garbage collector, once its start-up is done: the objects
    built so far (modules, settings, compiled statements, tokenizer tables) are moved out of
    the collector's sight (``gc.freeze``: they live as long as the process), and the young
    generation is collected every 50,000 allocations instead of 700. Measured with
    ``bench.grpc``: the server's CPU per streamed event -10 %, unary calls unchanged
    (docs/metering.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the servers listen once started."""

    grpc_port: int
    http_host: str
    http_port: int
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0


def split_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets) to (host, port)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"bind address {bind!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def tls_files(settings: Settings) -> TlsFiles | None:
    """TLS configuration from the settings (cert and key together, CA optional)."""
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        if settings.tls_client_ca_file is not None:
            raise ConfigError("ZKMETER_TLS_CLIENT_CA_FILE needs a server certificate and key")
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ConfigError("set both ZKMETER_TLS_CERT_FILE and ZKMETER_TLS_KEY_FILE")
    return TlsFiles(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)


def ingest_writers(settings: Settings) -> int:
    """Concurrent ingest transactions of one serving process (``ZKMETER_INGEST_WRITERS``).

    One by default on both backends: the batcher then forms the largest transactions (group
    commit), and each transaction's fixed cost (a dozen round trips on PostgreSQL) is paid
    once per batch. Four writers on PostgreSQL made batches of 7 unary calls instead of 30 and
    cost 40 % of unary calls/s (docs/metering.md). More than one needs PostgreSQL (SQLite has
    a single writer) and the transactions in this process (the ingest process runs one at a
    time); a database far away, where a transaction waits longer on the network, may want
    more."""
    writers = settings.ingest_writers
    if writers > 1 and not settings.database_url.get_secret_value().startswith("postgresql"):
        raise ConfigError("ZKMETER_INGEST_WRITERS > 1 needs PostgreSQL: SQLite has a single "
                          "writer")
    if writers > 1 and settings.ingest_process is True:
        raise ConfigError("ZKMETER_INGEST_WRITERS > 1 cannot be combined with "
                          "ZKMETER_INGEST_PROCESS (it runs one transaction at a time)")
    return writers


CORES_PER_SERVING_PROCESS = 2  # the event loop on one, the ingest child on the other


def usable_cpus(*, proc: Path = Path("/proc/self"), cgroup_fs: Path = Path("/sys/fs/cgroup")
                ) -> int:
    """The cores this process may use: its CPU affinity, lowered by a CPU quota of its
    cgroup or of a parent (a container's ``--cpus``; cgroup v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``), rounded down, at least one."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        lines = (proc / "cgroup").read_text().splitlines()
    except OSError:
        return max(cpus, 1)
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        files: list[tuple[Path, Path | None]]
        if controllers == "":  # v2: the quota of this cgroup and of each above it
            where = cgroup_fs / path.lstrip("/")
            files = [(d / "cpu.max", None) for d in (where, *where.parents)
                     if d.is_relative_to(cgroup_fs)]
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's hierarchy
            base = next((cgroup_fs / name for name in (controllers, "cpu", "cpu,cpuacct")
                         if (cgroup_fs / name).is_dir()), None)
            if base is None:
                continue
            where = base / path.lstrip("/")
            files = [(d / "cpu.cfs_quota_us", d / "cpu.cfs_period_us")
                     for d in (where, *where.parents) if d.is_relative_to(base)]
        else:
            continue
        for quota_file, period_file in files:
            try:
                fields = quota_file.read_text().split()
                if period_file is not None:
                    fields = [fields[0], period_file.read_text().strip()]
                if fields[0] in ("max", "-1"):  # no quota here
                    continue
                quota, period = int(fields[0]), int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
            if quota > 0 and period > 0:
                cpus = min(cpus, quota // period)
    return max(cpus, 1)


def ingest_in_child(settings: Settings, *, workers: int, escrow_given: bool,
                    cpus: int | None = None) -> tuple[bool, str]:
    """Whether a serving process runs its ingest transactions in a child process
    (``ZKMETER_INGEST_PROCESS``), and why, for the start-up log.

    ``true`` and ``false`` are obeyed (``true`` with an escrow object given to
    ``build_services`` is refused by :meth:`IngestProcess.start`). ``auto``, the default,
    starts the child where it pays: where every serving process has two cores to itself
    (``--workers N`` needs 2N), so that the child's transactions and the event loop do not take
    turns on one. On this project's 2-core machine the child raised unary calls/s by 20-33 %
    and streamed events/s by 30-40 %; bound to one core it cost 10-25 % of unary calls/s
    (docs/operations.md). ``auto`` also keeps the transactions in the process when
    ``ZKMETER_INGEST_WRITERS`` > 1 or the escrow is an object the child cannot have."""
    if settings.ingest_process is not True and settings.ingest_process is not False:
        if escrow_given:
            return False, "in this process (auto: the escrow was given as an object)"
        if settings.ingest_writers > 1:
            return False, "in this process (auto: ZKMETER_INGEST_WRITERS > 1)"
        cpus = usable_cpus() if cpus is None else cpus
        needed = CORES_PER_SERVING_PROCESS * workers
        cores = f"{cpus} usable core{'s' if cpus != 1 else ''}"
        if cpus < needed:
            return False, (f"in this process (auto: {cores}, a child per serving process "
                           f"needs {needed})")
        return True, (f"in a child process (auto: {cores} for {workers} serving "
                      f"process{'es' if workers > 1 else ''})")
    if settings.ingest_process:
        return True, "in a child process (ZKMETER_INGEST_PROCESS=true)"
    return False, "in this process (ZKMETER_INGEST_PROCESS=false)"


async def serve(services: Services, *, stop: asyncio.Event | None = None,
                started: "asyncio.Future[Endpoints] | None" = None,
                worker: int = 0, workers: int = 1) -> None:
    """Run both servers until ``stop`` is set (or a signal arrives), then drain.

    As worker ``worker`` of ``workers`` > 1 (``zkmeter serve --workers``) the gRPC port is
    bound with SO_REUSEPORT, shared with the other workers (the kernel spreads connections
    over them), and only worker 0 runs the HTTP server."""
    settings = services.settings
    if not settings.api_key_hashes:
        log.warning("zkmeter: no API keys configured (ZKMETER_API_KEY_HASHES); every gRPC "
                    "call except health and reflection will be refused")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            break
    writers = ingest_writers(settings)
    ingest: IngestProcess | None = None
    given = services.meter.ledger.gate.escrow is not None and services.chain_escrow is None
    in_child, why = ingest_in_child(settings, workers=workers, escrow_given=given)
    if worker == 0:
        log.info("zkmeter: ingest transactions %s", why)
    if in_child:
        ingest = await asyncio.to_thread(IngestProcess.start, settings, escrow_given=given)
        if services.chain_escrow is not None:
            # The child admits usage and follows the contract's events itself; this process
            # reads the chain only uncached (an epoch close's last epoch id): one follower
            # polling the node per serving process, not two.
            services.chain_escrow.stop_following()
    try:
        await _serve(services, stop, started, worker, workers, ingest, writers)
    finally:
        if ingest is not None:
            await asyncio.to_thread(ingest.close)


async def _serve(services: Services, stop: asyncio.Event,
                 started: "asyncio.Future[Endpoints] | None", worker: int, workers: int,
                 ingest: IngestProcess | None, writers: int) -> None:
    settings = services.settings
    running = await create_server(services, bind=settings.grpc_bind,
                                  api_key_hashes=settings.api_key_hashes,
                                  max_message_bytes=settings.max_message_bytes,
                                  tls=tls_files(settings),
                                  writers=writers,
                                  reuse_port=workers > 1,
                                  record_batch=None if ingest is None else ingest.record_batch)
    ended = (asyncio.create_task(asyncio.to_thread(ingest.join)) if ingest is not None
             else asyncio.create_task(asyncio.Event().wait()))
    try:
        if worker > 0:
            await _serve_grpc_only(running, stop, ended, worker, workers,
                                   settings.shutdown_grace_seconds)
        else:
            await _serve_all(services, running, stop, started, ended, workers)
    finally:
        ended.cancel()
    if ingest is not None and not ingest.closing and ended.done() and not ended.cancelled():
        raise IngestProcessError("the ingest process ended while serving (exit code "
                                 f"{ended.result()})")


async def _serve_all(services: Services, running: RunningServer, stop: asyncio.Event,
                     started: "asyncio.Future[Endpoints] | None",
                     ended: "asyncio.Task[Any]", workers: int) -> None:
    settings = services.settings
    host, port = split_bind(settings.http_bind)
    config = uvicorn_config(create_http_app(services), host=host, port=port,
                            header_timeout=settings.http_header_timeout_seconds,
                            keep_alive=settings.http_keep_alive_seconds)
    http = uvicorn.Server(config)
    http_task = asyncio.create_task(http.serve())
    while not http.started and not http_task.done():
        await asyncio.sleep(0.01)
    if http_task.done():
        await running.stop(0)
        http_task.result()
        raise OSError(f"the HTTP server could not start on {settings.http_bind}")
    bound_port = http.servers[0].sockets[0].getsockname()[1] if http.servers else port
    # The operator's metrics listener (never the public one: docs/security.md). With
    # --workers it is worker 0's and sums every worker's ingest (prover/api/metrics.py).
    m_host, m_port = split_bind(settings.metrics_bind)
    metrics = uvicorn.Server(uvicorn_config(
        create_metrics_app(services), host=m_host, port=m_port,
        header_timeout=settings.http_header_timeout_seconds,
        keep_alive=settings.http_keep_alive_seconds))
    metrics_task = asyncio.create_task(metrics.serve())
    while not metrics.started and not metrics_task.done():
        await asyncio.sleep(0.01)
    if metrics_task.done():
        await running.stop(0)
        http.should_exit = True
        await http_task
        metrics_task.result()
        raise OSError(f"the metrics server could not start on {settings.metrics_bind}")
    metrics_port = (metrics.servers[0].sockets[0].getsockname()[1] if metrics.servers
                    else m_port)
    endpoints = Endpoints(running.port, host, bound_port, m_host, metrics_port)
    log.info("zkmeter serving gRPC on port %d, HTTP on %s:%d, operator metrics on %s:%d%s",
             endpoints.grpc_port, host, bound_port, m_host, metrics_port,
             f" (worker 0 of {workers})" if workers > 1 else "")
    if started is not None:
        started.set_result(endpoints)
    # uvicorn handles SIGINT/SIGTERM itself while it serves (then re-raises them): either
    # the stop event or the HTTP server ending starts the drain.
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({stop_task, http_task, ended}, return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    if ended.done():
        log.error("zkmeter: the ingest process ended; stopping")
    log.info("zkmeter: draining (grace %.1f s)", settings.shutdown_grace_seconds)
    await running.stop(settings.shutdown_grace_seconds)
    http.should_exit = True
    metrics.should_exit = True
    await http_task
    await metrics_task


async def _serve_grpc_only(running: RunningServer, stop: asyncio.Event,
                           ended: "asyncio.Task[Any]", worker: int, workers: int,
                           grace: float) -> None:
    log.info("zkmeter serving gRPC on port %d (worker %d of %d)", running.port, worker, workers)
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({stop_task, ended}, return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    if ended.done():
        log.error("zkmeter: worker %d's ingest process ended; stopping", worker)
    log.info("zkmeter: worker %d draining (grace %.1f s)", worker, grace)
    await running.stop(grace)
