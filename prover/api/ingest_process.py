"""The ingest transactions in their own process (``ZKMETER_INGEST_PROCESS=true``).

A serving process runs gRPC on one event loop and, by default, the ledger transactions on
writer threads beside it; both need the GIL, so the process is held to one core and the
two take turns (docs/metering.md: the writers' 195-318 µs per event and the event loop's
extra over a bare echo). With the ingest process the serving process only converts and
forwards: each batch the batcher forms goes over a pipe to one child process that runs
``Meter.record_batch`` and sends the outcomes back, so the transactions run on another core.

What stays the same:

* the child builds its services with :func:`prover.app.build_services` from the same
  settings: the same database, signing key, rate card, counting workers and prepaid limits
  (the on-chain escrow when ``ZKMETER_RPC_URL`` is set). An escrow given to
  ``build_services`` as an object cannot cross processes, so that combination is refused;
* durability and order: the batcher sends one batch at a time and a response is sent only
  once the child has committed it; group commit works as before;
* prompt and completion text crosses the pipe in memory (pickled, parent to child, never
  written) and is counted in the child; the reply carries receipts and errors, no text.

Failures: a child that cannot start fails the server's start-up with its error; a child that
ends while serving fails the batch in flight and every later one with :class:`LedgerError`
(gRPC UNAVAILABLE; the idempotency key makes the caller's retry safe) and the serving
process stops (``zkmeter serve`` exits non-zero) so that its supervisor restarts it. The
child ignores SIGINT and SIGTERM: it ends when the serving process closes the pipe after
its drain (killed if it has not ended 30 s later), or when the pipe breaks.
"""

import logging
import multiprocessing
import pickle
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from prover.config import Settings
from prover.errors import ConfigError, LedgerError, MeteringError

log = logging.getLogger(__name__)


class IngestProcessError(MeteringError):
    """The ingest process ended while the server was serving (the server stops)."""


START_TIMEOUT_SECONDS = 120.0  # migrations, the tokenizer and the escrow's first read
STOP_TIMEOUT_SECONDS = 30.0  # a transaction in flight finishes before the child ends
_READY = "ready"
_FAILED = "failed"
_OK = "ok"
_RAISED = "raised"


def _child_main(conn: Connection, settings: Settings) -> None:
    """The child: build the services, then record every batch that arrives until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent drains first, then closes
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from prover.api.serve import settle_gc
    from prover.app import build_services

    try:
        services = build_services(settings)
    except Exception as exc:  # reported to the parent, which fails its start-up with it
        from prover.startup import describe_error  # the one-line message, URL redacted

        conn.send((_FAILED, describe_error(exc, settings) or type(exc).__name__))
        return
    try:
        settle_gc()
        conn.send((_READY, None))
        meter = services.meter
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                return
            requests = pickle.loads(data)  # noqa: S301 - our own parent, over a private pipe
            try:
                reply: tuple[str, Any] = (_OK, meter.record_batch(requests))
            except Exception as exc:
                reply = (_RAISED, exc)
            try:
                conn.send_bytes(_dumps(reply))
            except OSError:  # the serving process is gone
                return
    finally:
        services.meter.close()
        services.close()


def _dumps(reply: tuple[str, Any]) -> bytes:
    try:
        return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an outcome that does not pickle: its type only, no text
        return pickle.dumps((_RAISED, LedgerError(
            f"the ingest process could not send its outcome ({type(exc).__name__})")))


class IngestProcess:
    """One child process running the ledger transactions of a serving process (module
    docstring). :meth:`record_batch` is what the batcher calls, on its writer thread."""

    def __init__(self, process: Any, conn: Connection) -> None:
        self._process = process
        self._conn = conn
        self._lock = threading.Lock()
        self._closing = False
        self._broken: str | None = None

    @classmethod
    def start(cls, settings: Settings, *, escrow_given: bool = False) -> "IngestProcess":
        """Start the child and wait until its services are built (raises ConfigError with
        the child's error if they are not)."""
        if escrow_given:
            raise ConfigError("ZKMETER_INGEST_PROCESS needs the escrow from the settings "
                              "(ZKMETER_RPC_URL), not an object given to build_services")
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_child_main, args=(child, settings),
                              name="zkmeter-ingest-process", daemon=True)
        process.start()
        child.close()
        if not parent.poll(START_TIMEOUT_SECONDS):
            process.kill()  # it ignores SIGTERM
            raise ConfigError("the ingest process did not start in "
                              f"{START_TIMEOUT_SECONDS:.0f} s")
        try:
            status, detail = parent.recv()
        except (EOFError, OSError):
            status, detail = _FAILED, f"it ended with exit code {process.exitcode}"
        if status != _READY:
            process.join(5)
            raise ConfigError(f"the ingest process could not start: {detail}")
        log.info("zkmeter: ingest transactions in process %d", process.pid)
        return cls(process, parent)

    @property
    def pid(self) -> int | None:
        return int(self._process.pid) if self._process.pid is not None else None

    def alive(self) -> bool:
        """True while the child runs and its pipe works."""
        return self._broken is None and bool(self._process.is_alive())

    def join(self, timeout: float | None = None) -> int | None:
        """Wait for the child to end; its exit code (None if it still runs)."""
        self._process.join(timeout)
        code = self._process.exitcode
        return int(code) if code is not None else None

    def record_batch(self, requests: Sequence[Any]) -> list[Any]:
        """``Meter.record_batch`` in the child: one outcome per request, in order."""
        with self._lock:
            if self._closing:
                raise LedgerError("the ingest process is closed")
            if self._broken is not None:
                raise LedgerError(f"the ingest process is gone ({self._broken})")
            try:
                self._conn.send_bytes(pickle.dumps(list(requests),
                                                   protocol=pickle.HIGHEST_PROTOCOL))
                status, outcome = pickle.loads(self._conn.recv_bytes())  # noqa: S301
            except (EOFError, OSError) as exc:
                self._broken = type(exc).__name__
                log.error("zkmeter: the ingest process ended (exit code %s)",
                          self._process.exitcode)
                raise LedgerError("the ingest process is gone; retry (the idempotency key "
                                  "makes it safe)") from None
        if status == _RAISED:
            raise outcome
        return list(outcome)

    def close(self) -> None:
        """End the child: close the pipe (it finishes a transaction in flight first), wait,
        then kill it if it has not ended in STOP_TIMEOUT_SECONDS."""
        self._closing = True
        with self._lock:
            self._conn.close()
        self._process.join(STOP_TIMEOUT_SECONDS)
        if self._process.is_alive():
            log.warning("zkmeter: the ingest process did not end; killing it")
            self._process.kill()  # it ignores SIGTERM
            self._process.join(5)

    @property
    def closing(self) -> bool:
        return self._closing
