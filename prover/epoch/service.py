"""The epoch domain service: close (or resume closing) an epoch and publish it.

``EpochService.close()`` takes the ledger's open epoch to ``closing`` (which opens the next
one), snapshots its per-user totals, runs the close pipeline (prover/epoch/close.py) with
leaves saved in the database as they finish, stores the bundle and the openings, and marks
the epoch ``closed``. If an epoch is already ``closing`` (a close was interrupted), ``close()``
resumes that one instead, and yields the same bundle byte for byte. No transport here.

Faults (docs/operations.md): every storage call of a close goes through the ledger's bounded
retry of transient database errors (``Ledger.with_retries``), so a dropped, refused or
partitioned database ends the close in one short ``LedgerError`` and a later close resumes it.
A close's parameters are fixed when it starts (stored with it, ``EpochStore.start_close``): a
resume pads to the stored ``min_leaves`` whatever ``ZKMETER_MIN_LEAVES`` says now, and refuses,
naming the setting, if the chain id or the contract changed. Two closers of one epoch (two
processes) both prove it; the one that publishes second gets "epoch N is not closing".
"""

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from nacl.signing import SigningKey
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from circuits.hashing import keccak256
from circuits.transcript import RangeProofContext
from prover.epoch.close import ClosedEpoch, EpochInputs, close_epoch, leaf_count
from prover.epoch.executor import LeafResult, ProofExecutor, RayTls, make_executor
from prover.epoch.storage import CloseParams, DbLeafStore, EpochStore
from prover.errors import EpochStateError, LedgerError
from prover.ledger import EpochInfo, Ledger
from prover.ledger.faults import describe
from prover.ledger.schema import EPOCH_CLOSING, EPOCH_OPEN, epochs

MASTER_SECRET_LABEL = b"ZKMETER_MASTER_1"
log = logging.getLogger(__name__)
T = TypeVar("T")


def master_secret(signing_key: SigningKey) -> bytes:
    """The epoch master secret, derived from the provider's Ed25519 seed (domain-separated,
    so the one root secret the operator keeps yields independent keys)."""
    return keccak256(MASTER_SECRET_LABEL, bytes(signing_key))


@dataclass(frozen=True, slots=True)
class EpochParams:
    """What the service needs besides storage: where epochs settle and how they are proved."""

    chain_id: int
    contract: bytes
    bit_size: int
    min_leaves: int
    rate_card_hash: bytes
    epoch_seconds: int
    proof_workers: int | None = None
    ray_address: str | None = None
    plaintext_opening_retention_days: int = 90
    ray_tls: RayTls | None = None
    ray_allow_plaintext: bool = False
    allow_empty: bool = False  # publish an epoch with no usage (refused by default)


class RetryingLeafStore:
    """A DbLeafStore whose reads and writes retry transient database errors (saving a leaf
    twice is harmless: leaves are deterministic and stored ``ON CONFLICT DO NOTHING``)."""

    def __init__(self, store: DbLeafStore, ledger: Ledger) -> None:
        self._store = store
        self._ledger = ledger

    def finished(self) -> dict[bytes, LeafResult]:
        return self._ledger.with_retries(self._store.finished)

    def save(self, results: Sequence[LeafResult]) -> None:
        self._ledger.with_retries(lambda: self._store.save(results))


class EpochService:
    """Closing and publishing epochs of one provider."""

    def __init__(self, *, ledger: Ledger, store: EpochStore, signing_key: SigningKey,
                 params: EpochParams,
                 executor_factory: Callable[[], ProofExecutor] | None = None) -> None:
        if bytes(signing_key.verify_key) != ledger.provider_id:
            raise EpochStateError("the ledger's provider id is not the signing key's")
        self.ledger = ledger
        self.store = store
        self.params = params
        self._signing_key = signing_key
        self._secret = master_secret(signing_key)
        self._closing = threading.Lock()
        self._executor_factory = executor_factory or (lambda: make_executor(
            workers=params.proof_workers, ray_address=params.ray_address,
            ray_tls=params.ray_tls, ray_allow_plaintext=params.ray_allow_plaintext))

    def context(self, epoch_id: int) -> RangeProofContext:
        """The range-proof context of an epoch."""
        return RangeProofContext(chain_id=self.params.chain_id, contract=self.params.contract,
                                 provider_id=self.ledger.provider_id, epoch_id=epoch_id)

    def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """A storage call with transient database errors retried (module docstring)."""
        return self.ledger.with_retries(lambda: fn(*args))

    def _find_epochs(self) -> tuple[int | None, int | None]:
        with self.ledger.engine.begin() as conn:
            closing = conn.execute(select(epochs.c.id).where(epochs.c.state == EPOCH_CLOSING)
                                   .order_by(epochs.c.id)).first()
            opened = conn.execute(select(epochs.c.id).where(epochs.c.state == EPOCH_OPEN)
                                  ).first()
        return (None if closing is None else closing.id, None if opened is None else opened.id)

    def epoch_to_close(self, *, allow_empty: bool | None = None) -> EpochInfo:
        """A ``closing`` epoch to resume, else the open epoch moved to ``closing`` (refused
        when it has no usage, unless ``allow_empty``; default ``params.allow_empty``).

        If the open epoch turns ``closing`` under us (another closer, or our own transition
        whose commit went through while its answer was lost), that epoch is resumed."""
        if allow_empty is None:
            allow_empty = self.params.allow_empty
        for _ in range(3):
            closing, opened = self._db(self._find_epochs)
            if closing is not None:
                return self._db(self.ledger.epoch, closing)
            if opened is None:
                raise EpochStateError("there is no open epoch to close (no usage recorded yet)")
            if not allow_empty and not self._db(self.ledger.running_totals, opened):
                raise EpochStateError(f"epoch {opened} has no usage since the last close: "
                                      "nothing to close (allow empty epochs explicitly to "
                                      "publish one)")
            try:
                info, _ = self.ledger.close_epoch(
                    opened, next_rate_card_hash=self.params.rate_card_hash,
                    next_bit_size=self.params.bit_size, epoch_seconds=self.params.epoch_seconds)
            except EpochStateError:
                if self._db(self.ledger.epoch, opened).state == EPOCH_OPEN:
                    raise
                continue  # it is closing now: resume it
            return info
        raise EpochStateError("the open epoch kept changing under this close; try again")

    def _fixed_min_leaves(self, epoch_id: int, users: int, fixed: CloseParams) -> int:
        """The padding floor of this close: the stored one. Refuses a resume whose chain id
        or contract differ from the close's (its proofs are bound to them)."""
        now = self.params
        changed = []
        if fixed.chain_id is not None and fixed.chain_id != now.chain_id:
            changed.append(f"chain id {fixed.chain_id} (ZKMETER_CHAIN_ID is now {now.chain_id})")
        if fixed.contract is not None and fixed.contract != now.contract:
            changed.append(f"contract 0x{fixed.contract.hex()} (ZKMETER_CONTRACT_ADDRESS is "
                           f"now 0x{now.contract.hex()})")
        if changed:
            raise EpochStateError(f"epoch {epoch_id}'s close started with {' and '.join(changed)}"
                                  "; its proofs are bound to them: set them back to resume it")
        if fixed.min_leaves is None:  # started before the parameters were stored
            if leaf_count(users, now.min_leaves) != fixed.leaves_total:
                raise EpochStateError(
                    f"epoch {epoch_id}'s close started with {fixed.leaves_total} leaves; "
                    f"ZKMETER_MIN_LEAVES={now.min_leaves} would make "
                    f"{leaf_count(users, now.min_leaves)}: set it back to resume it")
            return now.min_leaves
        if fixed.min_leaves != now.min_leaves:
            log.warning("epoch %d: resuming with the close's own min_leaves=%d "
                        "(ZKMETER_MIN_LEAVES=%d applies to later epochs)", epoch_id,
                        fixed.min_leaves, now.min_leaves)
        return fixed.min_leaves

    def close(self, *, progress: Callable[[int, int], None] | None = None,
              allow_empty: bool | None = None) -> ClosedEpoch:
        """Close (or resume closing) an epoch and publish it; returns what was published.

        An open epoch with no usage since the last close is refused (EpochStateError) unless
        ``allow_empty`` (default: ``params.allow_empty``). Closes in this process run one at a
        time; a closer in another process working on the same epoch stores the same,
        deterministic leaves (duplicates are ignored)."""
        empty_ok = self.params.allow_empty if allow_empty is None else allow_empty
        with self._closing:
            try:
                return self._close(progress, empty_ok)
            except SQLAlchemyError as exc:  # any database error left: one short line
                raise LedgerError(f"the database failed: {describe(exc)}") from None

    def _close(self, progress: Callable[[int, int], None] | None,
               allow_empty: bool) -> ClosedEpoch:
        info = self.epoch_to_close(allow_empty=allow_empty)
        totals = self._db(self.ledger.totals, info.id)
        if info.window_end_ms is None:  # a closing epoch always has its window end
            raise EpochStateError(f"epoch {info.id} has no window end")
        params = self.params
        fixed = self.ledger.with_retries(lambda: self.store.start_close(
            info.id, leaf_count(len(totals), params.min_leaves), min_leaves=params.min_leaves,
            chain_id=params.chain_id, contract=params.contract))
        inputs = EpochInputs(
            ctx=self.context(info.id), window_start=info.window_start_ms,
            window_end=info.window_end_ms, rate_card_hash=info.rate_card_hash,
            bit_size=info.bit_size, totals=totals,
            min_leaves=self._fixed_min_leaves(info.id, len(totals), fixed))
        keys = self.ledger.with_retries(lambda: self.store.user_keys(totals, epoch_id=info.id))
        with self._executor_factory() as executor:
            closed = close_epoch(inputs, secret=self._secret, signing_key=self._signing_key,
                                 store=RetryingLeafStore(self.store.leaves(info.id),
                                                         self.ledger),
                                 executor=executor, user_keys=keys, progress=progress)
        self._publish(info.id, closed, keys)
        return closed

    def _publish(self, epoch_id: int, closed: ClosedEpoch, keys: dict[str, bytes]) -> None:
        """Publish and mark closed (one transaction, EpochStore.publish), retried; a retry
        that finds its own earlier attempt committed (the same bundle) is a success."""
        private = {o.tag: (user, o.to_bytes()) for user, o in closed.openings.items()
                   if user not in keys}
        bundle_json = closed.bundle.dumps().encode()
        attempts = 0

        def publish() -> None:
            nonlocal attempts
            attempts += 1
            self.store.publish(epoch_id, bundle_json=bundle_json,
                               merkle_root=closed.bundle.merkle_root,
                               total_units=closed.bundle.total, sealed=closed.sealed,
                               private_openings=private,
                               private_retention_ms=self.params
                               .plaintext_opening_retention_days * 86_400_000)

        try:
            self.ledger.with_retries(publish)
        except EpochStateError:
            if attempts > 1 and self._db(self.store.bundle_json, epoch_id) == bundle_json:
                return  # our own commit went through; only its answer was lost
            raise
        try:  # keyless users' plaintext openings past their retention (docs/security.md)
            self.store.purge_expired_openings()
        except Exception as exc:  # the close is published; the purge runs again next close
            log.warning("purging expired plaintext openings failed (%s)", type(exc).__name__)
