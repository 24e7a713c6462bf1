"""Durable storage of epoch closes: user keys, progress, leaves, bundles and openings.

Same engine and database as the ledger (prover/ledger), tables of migrations v0002 and
v0006. Every write is one transaction; a leaf is committed as soon as it is proved, so a close
killed at any point resumes from what is stored.

An epoch is published as one bundle per billing account with usage (``account_bundles``:
bundle, sealed payer statement, root, total), with each leaf and opening marked with its
account. ``epoch_closes`` keeps the epoch's sums (leaves, units) and, when the epoch billed
exactly one account, that account's bundle and root too, so the single-bundle reads
(``GET /v1/epochs/{id}/bundle``) keep working for the common case.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, case, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from prover.epoch.executor import LeafResult
from prover.errors import EpochStateError, UserKeyExistsError
from prover.ledger.schema import (
    EPOCH_CLOSED,
    EPOCH_CLOSING,
    EPOCH_OPEN,
    account_bundles,
    epoch_closes,
    epoch_leaves,
    epoch_openings,
    epochs,
    user_keys,
)
from prover.ledger.store import EpochInfo, epoch_from_row, now_ms


@dataclass(frozen=True, slots=True)
class CloseStatus:
    """Progress of an epoch's close."""

    epoch_id: int
    leaves_done: int
    leaves_total: int
    finished: bool
    merkle_root: bytes | None
    total_units: int | None


@dataclass(frozen=True, slots=True)
class CloseParams:
    """A close's parameters as stored when it started (None: a close started before
    migration v0005 stored them)."""

    leaves_total: int
    min_leaves: int | None
    chain_id: int | None
    contract: bytes | None


@dataclass(frozen=True, slots=True)
class AccountPublication:
    """What one billing account's part of an epoch publishes."""

    account_id: bytes
    bundle_json: bytes
    merkle_root: bytes
    total_units: int
    statement: bytes  # the payer statement, sealed to the payer's X25519 key
    sealed: dict[bytes, bytes]  # tag -> sealed opening
    # tags of users without a registered key -> (user id, plaintext opening)
    private_openings: dict[bytes, tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class AccountBundleSummary:
    """One account's published bundle of an epoch, as the public read side lists it."""

    account_id: bytes
    leaves: int
    total_units: int | None
    merkle_root: bytes | None


@dataclass(frozen=True, slots=True)
class EpochSummary:
    """One epoch as the public read side shows it: its row and, once started, its close."""

    epoch: EpochInfo
    close: CloseStatus | None


class EpochStore:
    """Epoch-close tables over one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- user keys -----------------------------------------------------------------------

    def register_user_key(self, user_id: str, public_key: bytes) -> None:
        """Register a new user's X25519 public key. The same key again is a no-op; another key
        for a user who has one raises UserKeyExistsError (replacing it would redirect the
        user's sealed openings: only :meth:`rotate_user_key` does, for an operator)."""
        if len(public_key) != 32:
            raise ValueError("an X25519 public key is 32 bytes")
        with self.engine.begin() as conn:
            row = conn.execute(select(user_keys.c.x25519_public_key, user_keys.c.next_from_epoch)
                               .where(user_keys.c.user_id == user_id)).first()
            if row is not None:
                if bytes(row.x25519_public_key) == public_key and row.next_from_epoch is None:
                    return
                raise UserKeyExistsError("this user already has a registered key; an operator "
                                         "can rotate it (from the next epoch)")
            dialect_insert = (pg_insert if self.engine.dialect.name == "postgresql"
                              else sqlite_insert)
            done = conn.execute(dialect_insert(user_keys).values(
                user_id=user_id, x25519_public_key=public_key, registered_ms=now_ms())
                .on_conflict_do_nothing(index_elements=["user_id"]))
        if done.rowcount == 0:  # registered concurrently: same rule as above
            self.register_user_key(user_id, public_key)

    def rotate_user_key(self, user_id: str, public_key: bytes) -> int:
        """Replace a registered user's key from the next epoch on (the epoch after the newest
        one, open or not: the open epoch keeps the key it had); returns that epoch's id."""
        if len(public_key) != 32:
            raise ValueError("an X25519 public key is 32 bytes")
        with self.engine.begin() as conn:
            from_epoch = int(conn.execute(select(func.max(epochs.c.id))).scalar() or 0) + 1
            row = conn.execute(select(user_keys.c.x25519_public_key,
                                      user_keys.c.next_x25519_public_key,
                                      user_keys.c.next_from_epoch)
                               .where(user_keys.c.user_id == user_id)).first()
            if row is None:
                raise LookupError("this user has no registered key to rotate (register one)")
            current = row.x25519_public_key
            if row.next_from_epoch is not None and row.next_from_epoch < from_epoch:
                current = row.next_x25519_public_key  # an earlier rotation already in force
            conn.execute(update(user_keys).where(user_keys.c.user_id == user_id)
                         .values(x25519_public_key=current, next_x25519_public_key=public_key,
                                 next_from_epoch=from_epoch))
        return from_epoch

    def user_keys(self, user_ids: Iterable[str], *, epoch_id: int | None = None
                  ) -> dict[str, bytes]:
        """The keys of these users in force for ``epoch_id`` (a rotation counts from its
        epoch on; without ``epoch_id``, the key registered first). Users without one are
        absent."""
        wanted = list(user_ids)
        out: dict[str, bytes] = {}
        c = user_keys.c
        with self.engine.begin() as conn:
            for start in range(0, len(wanted), 500):
                rows = conn.execute(select(c.user_id, c.x25519_public_key,
                                           c.next_x25519_public_key, c.next_from_epoch)
                                    .where(c.user_id.in_(wanted[start:start + 500])))
                for row in rows:
                    rotated = (epoch_id is not None and row.next_from_epoch is not None
                               and epoch_id >= row.next_from_epoch)
                    key = row.next_x25519_public_key if rotated else row.x25519_public_key
                    out[row.user_id] = bytes(key)
        return out

    # --- close progress and leaves -------------------------------------------------------

    def start_close(self, epoch_id: int, leaves_total: int, *, min_leaves: int | None = None,
                    chain_id: int | None = None,
                    contract: bytes | None = None) -> "CloseParams":
        """Record that the close of ``epoch_id`` started, with its parameters; idempotent,
        also between racing closers (``ON CONFLICT DO NOTHING``): the first one's parameters
        stay. Returns the parameters stored (the first closer's)."""
        dialect_insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        with self.engine.begin() as conn:
            conn.execute(dialect_insert(epoch_closes).values(
                epoch_id=epoch_id, leaves_total=leaves_total, started_ms=now_ms(),
                min_leaves=min_leaves, chain_id=None if chain_id is None else str(chain_id),
                contract=contract).on_conflict_do_nothing(index_elements=["epoch_id"]))
            row = conn.execute(select(epoch_closes.c.leaves_total, epoch_closes.c.min_leaves,
                                      epoch_closes.c.chain_id, epoch_closes.c.contract)
                               .where(epoch_closes.c.epoch_id == epoch_id)).one()
        return CloseParams(
            leaves_total=row.leaves_total, min_leaves=row.min_leaves,
            chain_id=None if row.chain_id is None else int(row.chain_id),
            contract=None if row.contract is None else bytes(row.contract))

    def start_account_close(self, epoch_id: int, account_id: bytes, leaves_total: int) -> int:
        """Record an account's part of a close (idempotent, first closer wins); returns the
        stored leaf count."""
        dialect_insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        with self.engine.begin() as conn:
            conn.execute(dialect_insert(account_bundles).values(
                epoch_id=epoch_id, account_id=account_id, leaves_total=leaves_total)
                .on_conflict_do_nothing(index_elements=["epoch_id", "account_id"]))
            return int(conn.execute(select(account_bundles.c.leaves_total).where(
                account_bundles.c.epoch_id == epoch_id,
                account_bundles.c.account_id == account_id)).scalar_one())

    def leaves(self, epoch_id: int, account_id: bytes | None = None) -> "DbLeafStore":
        """The LeafStore of one epoch (of one account's part of it, if given)."""
        return DbLeafStore(self.engine, epoch_id, account_id)

    def status(self, epoch_id: int) -> CloseStatus | None:
        """Progress of the close of ``epoch_id`` (None if it never started)."""
        with self.engine.begin() as conn:
            row = conn.execute(select(epoch_closes)
                               .where(epoch_closes.c.epoch_id == epoch_id)).first()
            if row is None:
                return None
            done = conn.execute(select(func.count()).select_from(epoch_leaves)
                                .where(epoch_leaves.c.epoch_id == epoch_id)).scalar() or 0
        return CloseStatus(epoch_id, int(done), row.leaves_total, row.finished_ms is not None,
                           None if row.merkle_root is None else bytes(row.merkle_root),
                           row.total_units)

    # --- public reads --------------------------------------------------------------------

    def summaries(self, *, limit: int, before: int | None = None,
                  epoch_id: int | None = None, closed_only: bool = False
                  ) -> list[EpochSummary]:
        """Epochs with their close status, newest first: at most ``limit``, ids below
        ``before`` if given, only ``epoch_id`` if given, and with ``closed_only`` only epochs
        whose close has begun (an open epoch's existence tells when traffic began)."""
        # Leaves done: counted (on the primary-key index) only for the returned rows of
        # unfinished closes; a finished close has all of them.
        counted = (select(func.count()).select_from(epoch_leaves)
                   .where(epoch_leaves.c.epoch_id == epochs.c.id).scalar_subquery())
        done = case((epoch_closes.c.finished_ms.is_not(None), epoch_closes.c.leaves_total),
                    else_=counted)
        query = (select(epochs, epoch_closes.c.leaves_total, epoch_closes.c.finished_ms,
                        epoch_closes.c.merkle_root, epoch_closes.c.total_units,
                        epoch_closes.c.epoch_id.label("close_id"), done.label("done"))
                 .outerjoin(epoch_closes, epoch_closes.c.epoch_id == epochs.c.id)
                 .order_by(epochs.c.id.desc()).limit(limit))
        if before is not None:
            query = query.where(epochs.c.id < before)
        if epoch_id is not None:
            query = query.where(epochs.c.id == epoch_id)
        if closed_only:
            query = query.where(epochs.c.state != EPOCH_OPEN)
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
        return [EpochSummary(
            epoch=epoch_from_row(r),
            close=None if r.close_id is None else CloseStatus(
                r.id, int(r.done or 0), r.leaves_total, r.finished_ms is not None,
                None if r.merkle_root is None else bytes(r.merkle_root), r.total_units))
            for r in rows]

    def state_counts(self) -> tuple[dict[str, int], dict[int, tuple[int, int]]]:
        """Epochs per state, and (leaves done, leaves total) of each closing epoch (0 total
        if its close has not started)."""
        with self.engine.begin() as conn:
            counts = {r.state: int(r.n) for r in conn.execute(
                select(epochs.c.state, func.count().label("n")).group_by(epochs.c.state))}
            done = (select(func.count()).select_from(epoch_leaves)
                    .where(epoch_leaves.c.epoch_id == epochs.c.id).scalar_subquery())
            progress = {r.id: (int(r.done or 0), int(r.leaves_total or 0)) for r in conn.execute(
                select(epochs.c.id, epoch_closes.c.leaves_total, done.label("done"))
                .outerjoin(epoch_closes, epoch_closes.c.epoch_id == epochs.c.id)
                .where(epochs.c.state == EPOCH_CLOSING))}
        return counts, progress

    def ping(self) -> None:
        """Raise if the database cannot answer ``SELECT 1``. On the driver connection, so no
        transaction is begun (on SQLite that would be ``BEGIN IMMEDIATE``, queued behind
        every writer)."""
        conn = self.engine.raw_connection()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            cursor.close()
        finally:
            conn.close()

    # --- publication ---------------------------------------------------------------------

    def publish(self, epoch_id: int, *, accounts: Sequence[AccountPublication],
                private_retention_ms: int | None = None) -> None:
        """Store every account's bundle, statement and openings and mark the epoch
        ``closed``, in one transaction that first locks the epoch row and checks that it is
        still ``closing``: of two racing closers the second gets ``EpochStateError`` ("epoch N
        is not closing") and writes nothing.

        Plaintext openings (users without a registered key) are served only over the
        authenticated API and kept for ``private_retention_ms`` (then
        :meth:`purge_expired_openings` deletes them)."""
        expires = None if private_retention_ms is None else now_ms() + private_retention_ms
        with self.engine.begin() as conn:
            state = conn.execute(select(epochs.c.state).where(epochs.c.id == epoch_id)
                                 .with_for_update()).scalar()
            if state != EPOCH_CLOSING:
                raise EpochStateError(f"epoch {epoch_id} is not closing (it is "
                                      f"{state or 'unknown'}: another closer published it)")
            conn.execute(epoch_openings.delete().where(epoch_openings.c.epoch_id == epoch_id))
            for part in accounts:
                self._publish_account(conn, epoch_id, part, expires)
            only = accounts[0] if len(accounts) == 1 else None
            conn.execute(update(epoch_closes).where(epoch_closes.c.epoch_id == epoch_id)
                         .values(bundle_json=None if only is None else only.bundle_json,
                                 merkle_root=None if only is None else only.merkle_root,
                                 total_units=sum(p.total_units for p in accounts),
                                 finished_ms=now_ms()))
            conn.execute(update(epochs).where(epochs.c.id == epoch_id)
                         .values(state=EPOCH_CLOSED))

    @staticmethod
    def _publish_account(conn: Connection, epoch_id: int, part: AccountPublication,
                         expires: int | None) -> None:
        rows = []
        for tag, box in part.sealed.items():
            user, opening = part.private_openings.get(tag, (None, None))
            rows.append({"epoch_id": epoch_id, "tag": tag, "sealed": box,
                         "account_id": part.account_id, "user_id": user, "opening": opening,
                         "opening_expires_ms": None if opening is None else expires})
        if rows:
            conn.execute(insert(epoch_openings), rows)
        c = account_bundles.c
        done = conn.execute(update(account_bundles)
                            .where(c.epoch_id == epoch_id, c.account_id == part.account_id)
                            .values(bundle_json=part.bundle_json, merkle_root=part.merkle_root,
                                    total_units=part.total_units, statement=part.statement))
        if done.rowcount != 1:
            raise EpochStateError(f"epoch {epoch_id}: account 0x{part.account_id.hex()}'s part "
                                  "of the close was never started")

    def account_bundles(self, epoch_id: int) -> list[AccountBundleSummary]:
        """The accounts billed in an epoch, by account id (published or being closed)."""
        c = account_bundles.c
        with self.engine.begin() as conn:
            rows = conn.execute(select(c.account_id, c.leaves_total, c.total_units,
                                       c.merkle_root).where(c.epoch_id == epoch_id)
                                .order_by(c.account_id)).all()
        return [AccountBundleSummary(bytes(r.account_id), r.leaves_total, r.total_units,
                                     None if r.merkle_root is None else bytes(r.merkle_root))
                for r in rows]

    def account_bundle_json(self, epoch_id: int, account_id: bytes) -> bytes | None:
        """One account's published bundle of an epoch."""
        c = account_bundles.c
        with self.engine.begin() as conn:
            value = conn.execute(select(c.bundle_json).where(
                c.epoch_id == epoch_id, c.account_id == account_id)).scalar()
        return None if value is None else bytes(value)

    def statement(self, epoch_id: int, account_id: bytes) -> bytes | None:
        """One account's sealed payer statement of an epoch (only the payer can open it)."""
        c = account_bundles.c
        with self.engine.begin() as conn:
            value = conn.execute(select(c.statement).where(
                c.epoch_id == epoch_id, c.account_id == account_id)).scalar()
        return None if value is None else bytes(value)

    def bundle_json(self, epoch_id: int) -> bytes | None:
        """The published bundle JSON of an epoch, if published."""
        with self.engine.begin() as conn:
            value = conn.execute(select(epoch_closes.c.bundle_json)
                                 .where(epoch_closes.c.epoch_id == epoch_id)).scalar()
        return None if value is None else bytes(value)

    def sealed_opening(self, epoch_id: int, tag: bytes) -> bytes | None:
        """The sealed opening of one leaf."""
        with self.engine.begin() as conn:
            value = conn.execute(select(epoch_openings.c.sealed)
                                 .where(epoch_openings.c.epoch_id == epoch_id,
                                        epoch_openings.c.tag == tag)).scalar()
        return None if value is None else bytes(value)

    def sealed_openings(self, epoch_id: int, account_id: bytes | None = None
                        ) -> dict[bytes, bytes]:
        """Every sealed opening of an epoch (of one account's bundle, if given), by tag."""
        query = (select(epoch_openings.c.tag, epoch_openings.c.sealed)
                 .where(epoch_openings.c.epoch_id == epoch_id))
        if account_id is not None:
            query = query.where(epoch_openings.c.account_id == account_id)
        with self.engine.begin() as conn:
            rows = conn.execute(query)
            return {bytes(r.tag): bytes(r.sealed) for r in rows}

    def private_opening(self, epoch_id: int, user_id: str) -> bytes | None:
        """The plaintext opening of a user without a registered key (None once expired)."""
        c = epoch_openings.c
        with self.engine.begin() as conn:
            value = conn.execute(select(c.opening).where(
                c.epoch_id == epoch_id, c.user_id == user_id,
                (c.opening_expires_ms.is_(None)) | (c.opening_expires_ms > now_ms()))).scalar()
        return None if value is None else bytes(value)

    def purge_expired_openings(self, now: int | None = None) -> int:
        """Delete every plaintext opening past its retention, with the user id beside it (the
        sealed opening, which reveals nothing, stays). Returns how many were deleted."""
        c = epoch_openings.c
        with self.engine.begin() as conn:
            done = conn.execute(update(epoch_openings)
                                .where(c.opening_expires_ms <= (now_ms() if now is None
                                                                else now))
                                .values(opening=None, user_id=None, opening_expires_ms=None))
        return int(done.rowcount or 0)


class DbLeafStore:
    """The finished leaves of one epoch, in the database (a LeafStore)."""

    def __init__(self, engine: Engine, epoch_id: int, account_id: bytes | None = None) -> None:
        self.engine = engine
        self.epoch_id = epoch_id
        self.account_id = account_id

    def finished(self) -> dict[bytes, LeafResult]:
        query = (select(epoch_leaves.c.tag, epoch_leaves.c.commitment, epoch_leaves.c.proof)
                 .where(epoch_leaves.c.epoch_id == self.epoch_id))
        if self.account_id is not None:
            query = query.where(epoch_leaves.c.account_id == self.account_id)
        with self.engine.begin() as conn:
            rows = conn.execute(query)
            return {bytes(r.tag): LeafResult(bytes(r.tag), bytes(r.commitment), bytes(r.proof))
                    for r in rows}

    def save(self, results: Sequence[LeafResult]) -> None:
        if not results:
            return
        # Leaves are deterministic, so a leaf another closer stored first is the same leaf.
        dialect_insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        statement = dialect_insert(epoch_leaves).on_conflict_do_nothing(
            index_elements=["epoch_id", "tag"])
        with self.engine.begin() as conn:
            conn.execute(statement, [
                {"epoch_id": self.epoch_id, "tag": r.tag, "commitment": r.commitment,
                 "proof": r.proof, "account_id": self.account_id} for r in results])
