"""Database faults: timeouts on every round trip, and bounded retries of transient errors.

Timeouts (``DbTimeouts``, from the ``ZKMETER_DB_*`` settings; docs/operations.md):

* **connect**: PostgreSQL ``connect_timeout`` (psycopg enforces it client-side over the whole
  handshake, so a refused, unreachable or black-holed server fails the connect in time);
* **statement**: PostgreSQL ``statement_timeout`` (the server cancels a statement running
  longer), and a client-side bound of ``statement + DEADLINE_GRACE_SECONDS`` on every wait for
  the server (each statement, commit, rollback and pre-ping). A partitioned server that never
  answers cannot cancel anything itself; past the client-side bound the connection is closed and
  the call fails with ``psycopg.OperationalError`` ("no answer within N s"), which the pool
  discards;
* **busy**: SQLite's busy timeout, how long a writer waits for the file lock.

Retries (``with_retries``): a transient error (the connection refused, lost or terminated, a
timeout, a full disk, a locked SQLite file) is retried with exponential backoff (from
``FIRST_BACKOFF_SECONDS``, doubling, at most ``MAX_BACKOFF_SECONDS``, with jitter) for at most
``retry_seconds`` in all; then, and at once for any other database error, it becomes one
``LedgerError`` with a short reason: never the SQL statement, never its parameters.

A retried write is safe only when it is idempotent or checked again: the ledger's appends are
keyed by idempotency key, leaves are deterministic (``ON CONFLICT DO NOTHING``), and an epoch
transition re-reads the epoch's state. A write whose commit reached the server but whose answer
was lost is therefore found on the retry (an ingest retry answers ``replayed``).
"""

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from prover.errors import LedgerError

# psycopg logs (through logging's last-resort handler, on stderr, when the application
# configured no logging) each pipeline it cannot finish on a lost connection: the very fault
# with_retries handles and reports in one line. Applications that configure logging still
# see them.
logging.getLogger("psycopg").addHandler(logging.NullHandler())

DEADLINE_GRACE_SECONDS = 2.0
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 2.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DbTimeouts:
    """Connect, statement and busy timeouts, and the retry budget (seconds)."""

    connect_seconds: int = 5
    statement_seconds: float = 30.0
    busy_seconds: float = 30.0
    retry_seconds: float = 15.0

    @property
    def deadline_seconds(self) -> float:
        """The client-side bound on one wait for the PostgreSQL server."""
        return self.statement_seconds + DEADLINE_GRACE_SECONDS


class DeadlineConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait for the server has a deadline (module doc).

    ``deadline_seconds = None`` turns the bound off (migrations: an index build may take
    longer than any statement of the service)."""

    deadline_seconds: float | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        if timeout is not None or self.deadline_seconds is None:
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, self.deadline_seconds)
        except psycopg.errors._WaitTimeout:  # psycopg's own (private) timeout signal
            # The protocol state is unknown mid-message: the connection cannot be reused.
            self.close()
            raise psycopg.OperationalError(
                f"no answer from the database within {self.deadline_seconds:g} s") from None


def postgres_connect(timeouts: DbTimeouts) -> Callable[..., DeadlineConnection]:
    """A connect function for SQLAlchemy's ``do_connect`` event: psycopg with the connect
    timeout, the server-side statement timeout, the client-side deadline, and a plan made for
    each execution (``plan_cache_mode=force_custom_plan``).

    psycopg prepares a statement on its sixth run; PostgreSQL may then keep one generic plan,
    made for the tables as they were, until the next ANALYZE. Made while the events table was
    small, it scanned the whole table on every idempotency-key look-up (docs/metering.md: 70-540
    ms a batch at 40,000 rows without autovacuum). Planning our statements costs far less."""
    statement_ms = max(1, round(timeouts.statement_seconds * 1000))

    def connect(*cargs: Any, **cparams: Any) -> DeadlineConnection:
        cparams.setdefault("connect_timeout", timeouts.connect_seconds)
        options = cparams.get("options", "")
        cparams["options"] = (f"{options} -c statement_timeout={statement_ms} "
                              "-c plan_cache_mode=force_custom_plan").strip()
        conn = DeadlineConnection.connect(*cargs, **cparams)
        conn.deadline_seconds = timeouts.deadline_seconds
        return conn

    return connect


# --- which errors are transient ----------------------------------------------------------------

_PG_TRANSIENT_CLASSES = ("08", "53", "57")  # connection, insufficient resources, operator
_PG_TRANSIENT_CODES = ("40001", "40P01", "55P03")  # serialization, deadlock, lock not available
_SQLITE_TRANSIENT = ("locked", "busy", "disk is full", "disk i/o error", "unable to open")


def _driver_error(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def is_transient(exc: BaseException) -> bool:
    """A database error that may go away by itself (module docstring)."""
    if isinstance(exc, PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = _driver_error(exc)
    if isinstance(orig, psycopg.Error):
        code = orig.sqlstate
        if code is None:  # raised client-side: refused, lost, timed out
            if _login_refused(str(orig)):  # no such database or role: retrying cannot help
                return False
            return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)
        return code[:2] in _PG_TRANSIENT_CLASSES or code in _PG_TRANSIENT_CODES
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        return any(marker in text for marker in _SQLITE_TRANSIENT)
    return False


# libpq's words for a login the server refuses for good (the error carries no SQLSTATE)
_PG_LOGIN_REFUSED = ("does not exist", "authentication failed", "no pg_hba.conf entry")


def _login_refused(message: str) -> bool:
    return any(marker in message for marker in _PG_LOGIN_REFUSED)


def describe(exc: BaseException) -> str:
    """A short reason for an operator: no SQL, no parameters, no connection string."""
    orig = _driver_error(exc)
    if isinstance(exc, PoolTimeoutError):
        return "no pooled connection became free"
    if isinstance(orig, psycopg.Error):
        code = orig.sqlstate or ""
        text = str(orig).lower()
        if code == "53100":
            return "the database server's disk is full"
        if code == "57014":
            return "a statement ran past the statement timeout"
        if code in ("57P01", "57P02"):
            return "the server terminated the connection"
        if code in ("57P03", "57P04", "57P05"):
            return "the server is not accepting connections now"
        if code in ("40001", "40P01", "55P03"):
            return "conflicting transactions kept colliding"
        if "no answer from the database" in text:
            return text.split("\n", 1)[0]
        if not code and _login_refused(text):
            if "database" in text and "does not exist" in text:
                return "the database does not exist"
            return "the server refused the login (unknown role or wrong password)"
        if code.startswith("08") or not code:
            if "refused" in text:
                return "the connection was refused"
            if "timeout" in text:
                return "the connection timed out"
            return "the connection failed or was lost"
        return f"database error {code}"
    if isinstance(orig, sqlite3.Error):
        text = str(orig).lower()
        if "full" in text:
            return "the disk is full"
        if "locked" in text or "busy" in text:
            return "the database file stayed locked by another writer"
        if "disk i/o" in text:
            return "disk I/O error (is the disk full?)"
        if "unable to open" in text:
            return "the database file cannot be opened"
        return f"SQLite error ({type(orig).__name__})"
    return type(orig).__name__


def with_retries(fn: Callable[[], T], *, seconds: float,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``fn``, retrying transient database errors for at most ``seconds`` (module doc);
    any database error left becomes one ``LedgerError``."""
    started = time.monotonic()
    attempt = 0
    backoff = FIRST_BACKOFF_SECONDS
    while True:
        attempt += 1
        try:
            return fn()
        except SQLAlchemyError as exc:
            elapsed = time.monotonic() - started
            remaining = seconds - elapsed
            if is_transient(exc) and remaining > 0:  # the last pause ends at the budget
                jittered = backoff * random.uniform(0.5, 1.0)  # noqa: S311 - not secrets
                sleep(min(jittered, remaining))
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            tried = (f" (gave up after {attempt} attempts in {elapsed:.1f} s)"
                     if attempt > 1 else "")
            raise LedgerError(f"the database is unavailable: {describe(exc)}{tried}"
                              ) from None
