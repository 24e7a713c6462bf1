"""The durable, idempotent ledger: epochs, per-user chains, events and their receipts.

One SQLAlchemy engine, SQLite (a file in WAL mode: the embedded default) or PostgreSQL
(``postgresql+psycopg://``), same schema (prover/ledger/schema.py, created by the alembic
migrations in prover/migrations/) and the same behaviour:

* **Appending** a batch is one transaction: lock the open epoch (shared), create and lock the
  batch's per-user state rows (``SELECT ... FOR UPDATE`` in user order, so two batches never
  deadlock), look the idempotency keys up *after* those locks, then seal (number, chain, sign)
  and insert every new event and update the state rows. On SQLite every transaction starts
  with ``BEGIN IMMEDIATE``: one writer at a time, across processes (busy timeout,
  ``ZKMETER_DB_BUSY_TIMEOUT_SECONDS``), so
  there the state rows of new users are simply inserted at the end. Statements are bulk: one
  per batch over arrays on PostgreSQL, one driver ``executemany`` on SQLite.
* **Idempotency.** A key seen before (in the table or earlier in the batch) with the same
  payload fingerprint returns the stored receipt and counts nothing; with another fingerprint
  it is an IdempotencyConflictError and nothing is stored for it. Two workers racing on one
  key serialize on the user's state row; racing on one key for different users, the second
  insert violates ``UNIQUE (provider_id, key_digest)``, the transaction is retried, and the
  retry sees the committed row. Nothing is ever counted twice.
* **Epochs.** Exactly one open epoch (a partial unique index). Closing it (``FOR UPDATE``,
  which waits for ingest transactions holding it shared) moves it to ``closing`` with its
  window end and opens the next; an event belongs to the epoch it was locked under.
* **Faults.** Every PostgreSQL round trip has a connect and a statement timeout, and every
  transaction here retries transient errors (connection lost, refused, terminated; a full
  disk; a locked file) with backoff for a bounded time, then fails with one short
  ``LedgerError`` (prover/ledger/faults.py). A batch whose commit reached the database but
  whose answer was lost is found by its idempotency keys on the retry.
"""

import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from circuits.hashing import keccak256
from prover.accounts import admission as _admission  # the module: it imports our schema
from prover.errors import (
    ConfigError,
    EpochStateError,
    IdempotencyConflictError,
    LedgerError,
    MeteringError,
)
from prover.ledger.faults import DbTimeouts, is_transient, postgres_connect, with_retries
from prover.ledger.schema import (
    EPOCH_CLOSED,
    EPOCH_CLOSING,
    EPOCH_OPEN,
    epochs,
    events,
    sqlite_in,
    user_states,
)
from verifier.receipts import ZERO32, Receipt, decode_receipt

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
MAX_ATTEMPTS = 8
MAX_BATCH = 2_000
# Ledger columns are signed 64-bit on PostgreSQL.
LEDGER_MAX_UNITS = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class EpochInfo:
    """One epoch row."""

    id: int
    state: str
    window_start_ms: int
    window_end_ms: int | None
    planned_end_ms: int
    rate_card_hash: bytes
    bit_size: int


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A counted, priced event waiting for its place in the user's chain. No text."""

    key_digest: bytes
    fingerprint: bytes
    user_id: str
    units: int
    payload: Any  # whatever the sealer needs (counts, digests, salt); never stored as is


@dataclass(frozen=True, slots=True)
class ChainPosition:
    """Where a new event goes: its epoch, sequence number, predecessor and the total before."""

    epoch: EpochInfo
    seq: int
    prev_hash: bytes
    total_before: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Stored:
    """The receipt of an event; ``replayed`` when it was stored by an earlier request. With
    its wire bytes (canonical ‖ signature) and their keccak256 hash, as stored: a transport
    sends them as they are, without encoding or hashing the receipt again."""

    receipt: Receipt
    replayed: bool
    wire: bytes
    receipt_hash: bytes


T = TypeVar("T")
# Builds and signs the receipt of an event at a position: the receipt and its wire bytes.
Sealer = Callable[[PendingEvent, ChainPosition], tuple[Receipt, bytes]]
Outcome = Stored | MeteringError


def grid_start_ms(now: int, epoch_seconds: int) -> int:
    """The start of the grid cell of ``epoch_seconds`` (counted from unix 0) holding ``now``
    (milliseconds): the first epoch's window start, independent of when traffic began."""
    cell = epoch_seconds * 1000
    return now - now % cell


def now_ms() -> int:
    """Wall-clock time in unix milliseconds (the ledger's clock)."""
    return time.time_ns() // 1_000_000


# --- engines and migrations ----------------------------------------------------------------

_TIMEOUTS: "weakref.WeakKeyDictionary[Engine, DbTimeouts]" = weakref.WeakKeyDictionary()


def make_engine(url: str, *, echo: bool = False,
                timeouts: DbTimeouts | None = None) -> Engine:
    """An engine for a SQLite file (WAL, foreign keys, busy timeout, BEGIN IMMEDIATE,
    synchronous=FULL) or for PostgreSQL through psycopg 3 (connect and statement timeouts,
    a client-side deadline on every round trip: prover/ledger/faults.py)."""
    timeouts = timeouts or DbTimeouts()
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or parsed.database.startswith("file:"):
            raise ConfigError("the SQLite ledger must be a file path (sqlite:///path)")
        busy_ms = round(timeouts.busy_seconds * 1000)
        engine = create_engine(parsed, echo=echo,
                               connect_args={"timeout": timeouts.busy_seconds})
        event.listen(engine, "connect",
                     lambda dbapi, _record: _sqlite_on_connect(dbapi, busy_ms))
        event.listen(engine, "begin", _sqlite_on_begin)
        _TIMEOUTS[engine] = timeouts
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise ConfigError("use the psycopg 3 driver: postgresql+psycopg://...")
        engine = create_engine(parsed, echo=echo, pool_pre_ping=True)
        connect = postgres_connect(timeouts)
        event.listen(engine, "do_connect",
                     lambda _dialect, _record, cargs, cparams: connect(*cargs, **cparams))
        _TIMEOUTS[engine] = timeouts
        return engine
    raise ConfigError(f"unsupported database backend {backend!r} (sqlite or postgresql)")


def engine_timeouts(engine: Engine) -> DbTimeouts:
    """The timeouts ``make_engine`` gave this engine (the defaults for any other engine)."""
    return _TIMEOUTS.get(engine) or DbTimeouts()


def _sqlite_on_connect(dbapi_connection: Any, busy_ms: int) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
    cursor = dbapi_connection.cursor()
    try:
        mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(f"SQLite refused WAL mode (got {mode!r})")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (alembic, programmatic; idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        driver = conn.connection.dbapi_connection
        bound = getattr(driver, "deadline_seconds", None)
        if conn.dialect.name == "postgresql":  # one migrator at a time across processes
            # No statement timeout for schema changes: an index build may take longer.
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            if bound is not None:
                driver.deadline_seconds = None  # type: ignore[union-attr]
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274001)")
        try:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        finally:
            if bound is not None:
                driver.deadline_seconds = bound  # type: ignore[union-attr]


def epoch_from_row(row: Any) -> EpochInfo:
    """An EpochInfo from a row with the `epochs` columns."""
    return EpochInfo(id=row.id, state=row.state, window_start_ms=row.window_start_ms,
                     window_end_ms=row.window_end_ms, planned_end_ms=row.planned_end_ms,
                     rate_card_hash=bytes(row.rate_card_hash), bit_size=row.bit_size)


def _retryable(exc: DBAPIError) -> bool:
    """Unique violations (a racing duplicate), deadlocks, serialization failures, busy."""
    if isinstance(exc, IntegrityError):
        return True
    code = getattr(exc.orig, "sqlstate", None)
    if code in ("40001", "40P01"):
        return True
    return isinstance(exc, OperationalError) and "locked" in str(exc.orig).lower()


class Ledger:
    """The metering ledger of one provider (module docstring)."""

    def __init__(self, engine: Engine, *, provider_id: bytes,
                 clock_ms: Callable[[], int] = now_ms,
                 gate: "_admission.AccountGate | None" = None) -> None:
        if not isinstance(provider_id, bytes) or len(provider_id) != 32:
            raise ConfigError("provider_id must be the provider's 32-byte Ed25519 public key")
        self.engine = engine
        self.provider_id = provider_id
        self.timeouts = engine_timeouts(engine)
        self._clock_ms = clock_ms
        self.gate = gate or _admission.AccountGate()  # who may be billed (prover/accounts)
        dialect = engine.dialect.name
        self._postgres = dialect == "postgresql"

    @classmethod
    def from_url(cls, url: str, *, provider_id: bytes, run_migrations: bool = True,
                 clock_ms: Callable[[], int] = now_ms,
                 timeouts: DbTimeouts | None = None) -> "Ledger":
        """Open (and by default migrate) the ledger at ``url``."""
        engine = make_engine(url, timeouts=timeouts)
        if run_migrations:  # transient faults at start-up are retried like any other
            with_retries(lambda: migrate(engine), seconds=engine_timeouts(engine).retry_seconds)
        return cls(engine, provider_id=provider_id, clock_ms=clock_ms)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # --- epochs --------------------------------------------------------------------------

    def current_epoch(self) -> EpochInfo | None:
        """The open epoch, if any."""
        with self.engine.begin() as conn:
            row = conn.execute(select(epochs).where(epochs.c.state == EPOCH_OPEN)).first()
        return None if row is None else epoch_from_row(row)

    def epoch(self, epoch_id: int) -> EpochInfo:
        """One epoch by id."""
        with self.engine.begin() as conn:
            row = conn.execute(select(epochs).where(epochs.c.id == epoch_id)).first()
        if row is None:
            raise EpochStateError(f"no epoch {epoch_id}")
        return epoch_from_row(row)

    # The first epoch opens at the first request; its window starts on the grid of
    # epoch_seconds from unix 0 (grid_start_ms), so the window does not tell when that
    # request came. Every later epoch starts where the one before ended (its close).
    def open_epoch(self, *, rate_card_hash: bytes, bit_size: int,
                   epoch_seconds: int) -> EpochInfo:
        """The open epoch, opening the first one if there is none."""
        return self._retry(lambda conn: self._lock_open_epoch(
            conn, rate_card_hash=rate_card_hash, bit_size=bit_size,
            epoch_seconds=epoch_seconds))

    def _lock_open_epoch(self, conn: Connection, *, rate_card_hash: bytes, bit_size: int,
                         epoch_seconds: int) -> EpochInfo:
        row = conn.exec_driver_sql(
            _PG_OPEN_EPOCH if self._postgres else _SQLITE_OPEN_EPOCH).first()
        if row is not None:
            return epoch_from_row(row)
        next_id = (conn.execute(select(func.max(epochs.c.id))).scalar() or 0) + 1
        return self._insert_epoch(conn, next_id,
                                  grid_start_ms(self._clock_ms(), epoch_seconds),
                                  rate_card_hash=rate_card_hash, bit_size=bit_size,
                                  epoch_seconds=epoch_seconds)

    @staticmethod
    def _insert_epoch(conn: Connection, epoch_id: int, start_ms: int, *, rate_card_hash: bytes,
                      bit_size: int, epoch_seconds: int) -> EpochInfo:
        info = EpochInfo(id=epoch_id, state=EPOCH_OPEN, window_start_ms=start_ms,
                         window_end_ms=None, planned_end_ms=start_ms + epoch_seconds * 1000,
                         rate_card_hash=rate_card_hash, bit_size=bit_size)
        conn.execute(insert(epochs).values(
            id=info.id, state=info.state, window_start_ms=info.window_start_ms,
            window_end_ms=None, planned_end_ms=info.planned_end_ms,
            rate_card_hash=info.rate_card_hash, bit_size=info.bit_size))
        return info

    def close_epoch(self, epoch_id: int, *, next_rate_card_hash: bytes, next_bit_size: int,
                    epoch_seconds: int) -> tuple[EpochInfo, EpochInfo]:
        """Move the open epoch ``epoch_id`` to ``closing`` and open the next one.

        Waits for ingest transactions in flight; the window ends at the later of now and
        the last event's timestamp. Returns (the closing epoch, the new open epoch)."""
        def body(conn: Connection) -> tuple[EpochInfo, EpochInfo]:
            row = conn.execute(select(epochs).where(epochs.c.id == epoch_id)
                               .with_for_update()).first()
            if row is None:
                raise EpochStateError(f"no epoch {epoch_id}")
            if row.state != EPOCH_OPEN:
                raise EpochStateError(f"epoch {epoch_id} is {row.state}, not open")
            last = conn.execute(select(func.max(events.c.created_ms))
                                .where(events.c.epoch_id == epoch_id)).scalar()
            end = max(self._clock_ms(), row.window_start_ms, last or 0)
            conn.execute(update(epochs).where(epochs.c.id == epoch_id)
                         .values(state=EPOCH_CLOSING, window_end_ms=end))
            closing = replace(epoch_from_row(row), state=EPOCH_CLOSING, window_end_ms=end)
            next_id = (conn.execute(select(func.max(epochs.c.id))).scalar() or 0) + 1
            nxt = self._insert_epoch(conn, next_id, end, rate_card_hash=next_rate_card_hash,
                                     bit_size=next_bit_size, epoch_seconds=epoch_seconds)
            return closing, nxt
        return self._retry(body)

    def mark_closed(self, epoch_id: int) -> None:
        """``closing`` -> ``closed`` (after the bundle is published)."""
        def body(conn: Connection) -> None:
            result = conn.execute(update(epochs).where(epochs.c.id == epoch_id,
                                                       epochs.c.state == EPOCH_CLOSING)
                                  .values(state=EPOCH_CLOSED))
            if result.rowcount != 1:
                raise EpochStateError(f"epoch {epoch_id} is not closing")
        self._retry(body)

    def totals(self, epoch_id: int) -> dict[str, int]:
        """Per-user totals of a closing or closed epoch (the close snapshot)."""
        with self.engine.begin() as conn:
            state = conn.execute(select(epochs.c.state).where(epochs.c.id == epoch_id)).scalar()
            if state is None:
                raise EpochStateError(f"no epoch {epoch_id}")
            if state == EPOCH_OPEN:
                raise EpochStateError(f"epoch {epoch_id} is still open; close it first")
            rows = conn.execute(select(user_states.c.user_id, user_states.c.total_units)
                                .where(user_states.c.epoch_id == epoch_id,
                                       user_states.c.seq > 0)).all()
        return {row.user_id: row.total_units for row in rows}

    def chain_heads(self, epoch_id: int) -> dict[str, bytes]:
        """Each user's last receipt hash of an epoch (the head of its hash chain)."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(user_states.c.user_id, user_states.c.last_hash)
                                .where(user_states.c.epoch_id == epoch_id,
                                       user_states.c.seq > 0)).all()
        return {row.user_id: bytes(row.last_hash) for row in rows}

    def running_totals(self, epoch_id: int) -> dict[str, int]:
        """Per-user totals so far, in any state (for monitoring; not a snapshot)."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(user_states.c.user_id, user_states.c.total_units)
                                .where(user_states.c.epoch_id == epoch_id,
                                       user_states.c.seq > 0)).all()
        return {row.user_id: row.total_units for row in rows}

    def receipts(self, epoch_id: int, user_id: str) -> list[Receipt]:
        """A user's receipts of one epoch, in chain order."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(events.c.receipt)
                                .where(events.c.epoch_id == epoch_id,
                                       events.c.user_id == user_id)
                                .order_by(events.c.seq)).all()
        return [decode_receipt(bytes(row.receipt)) for row in rows]

    # --- appending -----------------------------------------------------------------------

    def append(self, items: Sequence[PendingEvent], *, seal: Sealer, rate_card_hash: bytes,
               bit_size: int, epoch_seconds: int) -> list[Outcome]:
        """Store a batch atomically; one outcome per item, in order (module docstring).

        ``seal`` builds and signs the receipt for a position and returns it with its wire
        bytes; a MeteringError it raises is that item's outcome and nothing is stored for
        it."""
        if not items:
            return []
        if len(items) > MAX_BATCH:
            raise LedgerError(f"a batch holds at most {MAX_BATCH} events")
        self.gate.prefetch(sorted({item.user_id for item in items}))  # no lock waits on a chain
        return self._retry(lambda conn: self._append_once(
            conn, items, seal=seal, rate_card_hash=rate_card_hash, bit_size=bit_size,
            epoch_seconds=epoch_seconds))

    def _append_once(self, conn: Connection, items: Sequence[PendingEvent], *, seal: Sealer,
                     rate_card_hash: bytes, bit_size: int,
                     epoch_seconds: int) -> list[Outcome]:
        epoch = self._lock_open_epoch(conn, rate_card_hash=rate_card_hash, bit_size=bit_size,
                                      epoch_seconds=epoch_seconds)
        if epoch.rate_card_hash != rate_card_hash or epoch.bit_size != bit_size:
            raise EpochStateError(f"the open epoch {epoch.id} uses another rate card or bit "
                                  "size; close it to switch")
        admission = self.gate.begin(conn, epoch_id=epoch.id,
                                    users=sorted({item.user_id for item in items}))
        users = admission.registered(sorted({item.user_id for item in items}))
        if self._postgres and users:  # create missing rows first, so that every row can be
            # locked
            conn.exec_driver_sql(_PG_ENSURE_STATES, {"epoch": epoch.id, "zero": ZERO32,
                                                     "users": users})
        if self._postgres:
            rows = conn.exec_driver_sql(_PG_LOCK_STATES, {"epoch": epoch.id, "users": users})
        else:
            names, values = sqlite_in(users)
            rows = conn.exec_driver_sql(_SQLITE_STATES.format(names=names),
                                        {"epoch": epoch.id, **values})
        state: dict[str, list[Any]] = {
            user: [seq, total, bytes(last_hash)] for user, seq, total, last_hash in rows}
        # SQLite: BEGIN IMMEDIATE already excludes every other writer; rows of new users are
        # inserted at the end, and only if they got an event.
        new_users = {u for u in users if u not in state}
        for u in new_users:
            state[u] = [0, 0, ZERO32]
        admission.lock(conn, first_users={u for u in users if state[u][0] == 0})
        keys = list({item.key_digest for item in items})
        if self._postgres:  # one array parameter: a plan that does not depend on the batch
            found = conn.exec_driver_sql(_PG_FIND_KEYS, {"provider": self.provider_id,
                                                         "keys": keys}).all()
        else:
            names, values = sqlite_in(keys)
            found = conn.exec_driver_sql(_SQLITE_FIND_KEYS.format(names=names),
                                         {"provider": self.provider_id, **values}).all()
        # key digest -> (fingerprint, its Stored: a retry with that fingerprint gets it back,
        # as replayed)
        seen: dict[bytes, tuple[bytes, Stored]] = {
            bytes(key): (bytes(fingerprint), Stored(decode_receipt(bytes(wire)), replayed=True,
                                                    wire=bytes(wire), receipt_hash=bytes(digest)))
            for key, fingerprint, wire, digest in found
        }
        now = max(self._clock_ms(), epoch.window_start_ms)
        outcomes: list[Outcome] = []
        new_rows: list[tuple[Any, ...]] = []
        touched: set[str] = set()
        for item in items:
            earlier = seen.get(item.key_digest)
            if earlier is not None:
                if earlier[0] == item.fingerprint:
                    first = earlier[1]  # new in this batch: the retry gets it as replayed
                    outcomes.append(first if first.replayed else Stored(
                        first.receipt, replayed=True, wire=first.wire,
                        receipt_hash=first.receipt_hash))
                else:
                    outcomes.append(IdempotencyConflictError(
                        "this idempotency key was already used with a different payload"))
                continue
            if item.user_id not in state:  # not registered under an account
                refused = admission.admit(item.user_id, item.units, first_event=True)
                outcomes.append(refused or LedgerError("unregistered user admitted"))
                continue
            seq, total, last_hash = state[item.user_id]
            position = ChainPosition(epoch=epoch, seq=seq + 1, prev_hash=last_hash,
                                     total_before=total, timestamp_ms=now)
            try:
                receipt, wire = seal(item, position)
            except MeteringError as exc:
                outcomes.append(exc)
                continue
            refused = admission.admit(item.user_id, item.units, first_event=seq == 0)
            if refused is not None:  # the receipt is dropped: never issued, nothing stored
                outcomes.append(refused)
                continue
            if receipt.total_units > LEDGER_MAX_UNITS:
                raise LedgerError("running total beyond the ledger's 63-bit columns")
            digest = keccak256(wire)
            state[item.user_id] = [receipt.seq, receipt.total_units, digest]
            touched.add(item.user_id)
            stored = Stored(receipt, replayed=False, wire=wire, receipt_hash=digest)
            seen[item.key_digest] = (item.fingerprint, stored)
            new_rows.append((  # in _EVENT_COLUMNS order
                self.provider_id, item.key_digest, item.fingerprint, epoch.id, item.user_id,
                receipt.seq, receipt.model, receipt.encoding, receipt.input_tokens,
                receipt.output_tokens, receipt.cached_input_tokens, receipt.reasoning_tokens,
                receipt.units, receipt.total_units, digest, wire, receipt.timestamp_ms))
            outcomes.append(stored)
        if new_rows:
            changed = sorted(touched)
            if self._postgres:  # one statement each, over arrays (no per-row round trips)
                conn.exec_driver_sql(_PG_INSERT_EVENTS, dict(zip(
                    _EVENT_COLUMNS, map(list, zip(*new_rows, strict=True)), strict=True)))
                conn.exec_driver_sql(_PG_UPDATE_STATES, {
                    "epoch": epoch.id, "users": changed,
                    "seqs": [state[u][0] for u in changed],
                    "totals": [state[u][1] for u in changed],
                    "hashes": [state[u][2] for u in changed]})
            else:
                conn.exec_driver_sql(_SQLITE_INSERT_EVENTS, new_rows)
                inserts = [u for u in changed if u in new_users]
                updates = [u for u in changed if u not in new_users]
                if inserts:
                    conn.exec_driver_sql(_SQLITE_INSERT_STATES, [
                        (epoch.id, u, *state[u]) for u in inserts])
                if updates:
                    conn.exec_driver_sql(_SQLITE_UPDATE_STATES, [
                        (*state[u], epoch.id, u) for u in updates])
        admission.flush(conn)
        return outcomes

    # --- transactions --------------------------------------------------------------------

    def with_retries(self, fn: Callable[[], T]) -> T:
        """``fn()`` with transient database errors retried for ``timeouts.retry_seconds``,
        then one short LedgerError (prover/ledger/faults.py)."""
        return with_retries(fn, seconds=self.timeouts.retry_seconds)

    def _retry(self, body: Callable[[Connection], T]) -> T:
        """Run ``body`` in one transaction, retrying races at once and transient faults
        with backoff (module docstring)."""
        def once() -> T:
            for attempt in range(MAX_ATTEMPTS):
                try:
                    with self.engine.begin() as conn:
                        return body(conn)
                except DBAPIError as exc:
                    if is_transient(exc):
                        raise  # with_retries: backoff within the time bound
                    if not _retryable(exc) or attempt == MAX_ATTEMPTS - 1:
                        raise LedgerError(f"ledger transaction failed: {type(exc).__name__}: "
                                          f"{_first_line(exc)}") from None
                    time.sleep(0.002 * (attempt + 1))
            raise LedgerError("unreachable")  # pragma: no cover
        return self.with_retries(once)


_EVENT_COLUMNS = tuple(c.name for c in events.columns if c.name != "id")
_PG_TYPES = {"provider_id": "bytea", "key_digest": "bytea", "fingerprint": "bytea",
             "receipt_hash": "bytea", "receipt": "bytea", "user_id": "text", "model": "text",
             "encoding": "text"}
# Built from the table's own column names (constants), never from input.
_PG_INSERT_EVENTS = (
    f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) SELECT * FROM unnest("  # noqa: S608
    + ", ".join(f"%({c})b::{_PG_TYPES.get(c, 'bigint')}[]" for c in _EVENT_COLUMNS) + ")")
_SQLITE_INSERT_EVENTS = (  # column names are the table's own constants
    f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS)})")
_PG_FIND_KEYS = ("SELECT key_digest, fingerprint, receipt, receipt_hash FROM events "
                 "WHERE provider_id = %(provider)s::bytea AND key_digest = ANY(%(keys)b::bytea[])")
_PG_LOCK_STATES = ("SELECT user_id, seq, total_units, last_hash FROM user_states "
                   "WHERE epoch_id = %(epoch)s::bigint AND user_id = ANY(%(users)b::text[]) "
                   "ORDER BY user_id FOR UPDATE")
# SQLite: named parameters, the IN list from sqlite_in (names made from a count, no input).
_SQLITE_STATES = ("SELECT user_id, seq, total_units, last_hash FROM user_states "
                  "WHERE epoch_id = :epoch AND user_id IN ({names}) ORDER BY user_id")
_SQLITE_FIND_KEYS = ("SELECT key_digest, fingerprint, receipt, receipt_hash FROM events "
                     "WHERE provider_id = :provider AND key_digest IN ({names})")
_PG_ENSURE_STATES = (
    "INSERT INTO user_states (epoch_id, user_id, seq, total_units, last_hash) "
    "SELECT %(epoch)s::bigint, u, 0, 0, %(zero)s::bytea FROM unnest(%(users)b::text[]) AS u "
    "ORDER BY u ON CONFLICT (epoch_id, user_id) DO NOTHING")
_PG_UPDATE_STATES = (
    "UPDATE user_states AS s SET seq = v.seq, total_units = v.total, last_hash = v.hash "
    "FROM unnest(%(users)b::text[], %(seqs)b::bigint[], %(totals)b::bigint[], "
    "%(hashes)b::bytea[]) AS v(user_id, seq, total, hash) "
    "WHERE s.epoch_id = %(epoch)s::bigint AND s.user_id = v.user_id")
# Built once: the statement of every ingest batch (built per batch, SQLAlchemy also made its
# cache key each time).
# The open epoch, read by every ingest transaction: driver-level text (a Core select cost
# about 120 us of SQLAlchemy work per transaction, its cache key made each time). FOR SHARE
# on PostgreSQL; on SQLite, BEGIN IMMEDIATE already excludes every other writer.
_SQLITE_OPEN_EPOCH = (f"SELECT {', '.join(c.name for c in epochs.columns)} FROM epochs "  # noqa: S608
                      f"WHERE state = '{EPOCH_OPEN}'")
_PG_OPEN_EPOCH = _SQLITE_OPEN_EPOCH + " FOR SHARE"
_SQLITE_INSERT_STATES = ("INSERT INTO user_states (epoch_id, user_id, seq, total_units, "
                         "last_hash) VALUES (?, ?, ?, ?, ?)")
_SQLITE_UPDATE_STATES = ("UPDATE user_states SET seq = ?, total_units = ?, last_hash = ? "
                         "WHERE epoch_id = ? AND user_id = ?")


def _first_line(exc: DBAPIError) -> str:
    # The driver's own message, without SQLAlchemy's parameter echo (which holds no text
    # anyway: no statement of this module binds prompt or completion text).
    return str(exc.orig).splitlines()[0] if exc.orig is not None else "database error"
