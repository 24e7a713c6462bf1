"""The epoch domain service: close (or resume closing) an epoch and publish it.

``EpochService.close()`` takes the ledger's open epoch to ``closing`` (which opens the next
one), snapshots its per-user totals, runs the close pipeline (prover/epoch/close.py) with
leaves saved in the database as they finish, stores the bundle and the openings, and marks
the epoch ``closed``. If an epoch is already ``closing`` (a close was interrupted), ``close()``
resumes that one instead, and yields the same bundle byte for byte. No transport here.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass

from nacl.signing import SigningKey
from sqlalchemy import select

from circuits.hashing import keccak256
from circuits.transcript import RangeProofContext
from prover.epoch.close import ClosedEpoch, EpochInputs, close_epoch, leaf_count
from prover.epoch.executor import ProofExecutor, make_executor
from prover.epoch.storage import EpochStore
from prover.errors import EpochStateError
from prover.ledger import EpochInfo, Ledger
from prover.ledger.schema import EPOCH_CLOSING, EPOCH_OPEN, epochs

MASTER_SECRET_LABEL = b"ZKMETER_MASTER_1"


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
    allow_empty: bool = False  # publish an epoch with no usage (refused by default)


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
            workers=params.proof_workers, ray_address=params.ray_address))

    def context(self, epoch_id: int) -> RangeProofContext:
        """The range-proof context of an epoch."""
        return RangeProofContext(chain_id=self.params.chain_id, contract=self.params.contract,
                                 provider_id=self.ledger.provider_id, epoch_id=epoch_id)

    def epoch_to_close(self, *, allow_empty: bool | None = None) -> EpochInfo:
        """A ``closing`` epoch to resume, else the open epoch moved to ``closing`` (refused
        when it has no usage, unless ``allow_empty``; default ``params.allow_empty``)."""
        if allow_empty is None:
            allow_empty = self.params.allow_empty
        with self.ledger.engine.begin() as conn:
            closing = conn.execute(select(epochs.c.id).where(epochs.c.state == EPOCH_CLOSING)
                                   .order_by(epochs.c.id)).first()
            opened = conn.execute(select(epochs.c.id).where(epochs.c.state == EPOCH_OPEN)
                                  ).first()
        if closing is not None:
            return self.ledger.epoch(closing.id)
        if opened is None:
            raise EpochStateError("there is no open epoch to close (no usage recorded yet)")
        if not allow_empty and not self.ledger.running_totals(opened.id):
            raise EpochStateError(f"epoch {opened.id} has no usage since the last close: "
                                  "nothing to close (allow empty epochs explicitly to publish "
                                  "one)")
        info, _ = self.ledger.close_epoch(
            opened.id, next_rate_card_hash=self.params.rate_card_hash,
            next_bit_size=self.params.bit_size, epoch_seconds=self.params.epoch_seconds)
        return info

    def close(self, *, progress: Callable[[int, int], None] | None = None,
              allow_empty: bool | None = None) -> ClosedEpoch:
        """Close (or resume closing) an epoch and publish it; returns what was published.

        An open epoch with no usage since the last close is refused (EpochStateError) unless
        ``allow_empty`` (default: ``params.allow_empty``). Closes in this process run one at a
        time; a closer in another process working on the same epoch stores the same,
        deterministic leaves (duplicates are ignored)."""
        empty_ok = self.params.allow_empty if allow_empty is None else allow_empty
        with self._closing:
            return self._close(progress, empty_ok)

    def _close(self, progress: Callable[[int, int], None] | None,
               allow_empty: bool) -> ClosedEpoch:
        info = self.epoch_to_close(allow_empty=allow_empty)
        totals = self.ledger.totals(info.id)
        if info.window_end_ms is None:  # a closing epoch always has its window end
            raise EpochStateError(f"epoch {info.id} has no window end")
        inputs = EpochInputs(
            ctx=self.context(info.id), window_start=info.window_start_ms,
            window_end=info.window_end_ms, rate_card_hash=info.rate_card_hash,
            bit_size=info.bit_size, totals=totals, min_leaves=self.params.min_leaves)
        self.store.start_close(info.id, leaf_count(len(totals), self.params.min_leaves))
        keys = self.store.user_keys(totals, epoch_id=info.id)
        with self._executor_factory() as executor:
            closed = close_epoch(inputs, secret=self._secret, signing_key=self._signing_key,
                                 store=self.store.leaves(info.id), executor=executor,
                                 user_keys=keys, progress=progress)
        private = {o.tag: (user, o.to_bytes()) for user, o in closed.openings.items()
                   if user not in keys}
        self.store.publish(info.id, bundle_json=closed.bundle.dumps().encode(),
                           merkle_root=closed.bundle.merkle_root,
                           total_units=closed.bundle.total, sealed=closed.sealed,
                           private_openings=private)
        self.ledger.mark_closed(info.id)
        return closed
