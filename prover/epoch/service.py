"""The epoch domain service: close (or resume closing) an epoch and publish it.

``EpochService.close()`` takes the ledger's open epoch to ``closing`` (which opens the next
one), snapshots its per-user totals, splits them by billing account (every user belongs to
exactly one, prover/accounts/registry.py), runs the close pipeline (prover/epoch/close.py)
once per account with usage, in account-id order, with leaves saved in the database as they
finish, makes each account's payer statement (verifier/statement.py: every leaf's user or
padding, value, blinding and the user's last receipt hash, signed, sealed to the payer's
X25519 key), stores every bundle, statement and opening in one transaction, and marks the
epoch ``closed``. If an epoch is already ``closing`` (a close was interrupted), ``close()``
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

from circuits.transcript import RangeProofContext
from prover.accounts.registry import Account, AccountRegistry
from prover.epoch.close import ClosedEpoch, EpochInputs, close_epoch, leaf_count
from prover.epoch.derive import master_secret
from prover.epoch.executor import LeafResult, ProofExecutor, RayTls, make_executor
from prover.epoch.storage import AccountPublication, CloseParams, DbLeafStore, EpochStore
from prover.errors import EpochStateError, LedgerError
from prover.ledger import EpochInfo, Ledger
from prover.ledger.faults import describe
from prover.ledger.schema import EPOCH_CLOSING, EPOCH_OPEN, epochs
from verifier.bundle import Bundle
from verifier.opening import Opening
from verifier.statement import make_statement, seal_statement

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    # the address that registered the provider on-chain (ZKMETER_OPERATOR_ADDRESS): with the
    # signing key, a payer and an asset it makes each account's id (verifier/account.py)
    operator: bytes = bytes(20)


@dataclass(frozen=True, slots=True)
class PublishedEpoch:
    """What one close published: each billed account's part (bundle, openings) and sealed
    payer statement, by account id (in account-id order)."""

    epoch_id: int
    accounts: dict[bytes, ClosedEpoch]
    statements: dict[bytes, bytes]  # account id -> sealed payer statement

    @property
    def bundle(self) -> Bundle:
        """The bundle of an epoch that billed exactly one account."""
        if len(self.accounts) != 1:
            raise LookupError(f"epoch {self.epoch_id} billed {len(self.accounts)} accounts: "
                              "name the account")
        return next(iter(self.accounts.values())).bundle

    @property
    def bundles(self) -> list[Bundle]:
        """Every account's bundle, in account-id order."""
        return [part.bundle for part in self.accounts.values()]

    @property
    def openings(self) -> dict[str, Opening]:
        """Every user's opening (private), over all accounts."""
        return {user: o for part in self.accounts.values() for user, o in part.openings.items()}

    @property
    def sealed(self) -> dict[bytes, bytes]:
        """Every leaf's sealed opening by tag, over all accounts."""
        return {tag: box for part in self.accounts.values() for tag, box in part.sealed.items()}

    @property
    def reproved(self) -> dict[bytes, str]:
        """Leaves proved again in process, over all accounts."""
        return {t: e for part in self.accounts.values() for t, e in part.reproved.items()}

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per phase, summed over the accounts."""
        out: dict[str, float] = {}
        for part in self.accounts.values():
            for phase, seconds in part.timings.items():
                out[phase] = out.get(phase, 0.0) + seconds
        return out

    @property
    def leaves(self) -> int:
        """Leaves over all accounts."""
        return sum(len(part.bundle.leaves) for part in self.accounts.values())


def _offset(progress: Callable[[int, int], None] | None, offset: int, overall: int
            ) -> Callable[[int, int], None] | None:
    """One account's progress as the whole epoch's (its leaves come after ``offset``)."""
    if progress is None:
        return None
    report = progress
    return lambda done, _total: report(offset + done, overall)


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
                 executor_factory: Callable[[], ProofExecutor] | None = None,
                 onchain_last_epoch: Callable[[bytes], int] | None = None) -> None:
        """``onchain_last_epoch(account_id)``, if given, reads the last epoch id the
        settlement contract holds for an account: a close of an epoch id at or below it is
        refused (:meth:`_check_fresh`)."""
        if bytes(signing_key.verify_key) != ledger.provider_id:
            raise EpochStateError("the ledger's provider id is not the signing key's")
        self.ledger = ledger
        self.store = store
        self.params = params
        self.accounts = AccountRegistry(ledger.engine, operator=params.operator,
                                        provider_key=ledger.provider_id)
        self._onchain_last_epoch = onchain_last_epoch
        self._signing_key = signing_key
        self._secret = master_secret(signing_key)
        self._closing = threading.Lock()
        self._executor_factory = executor_factory or (lambda: make_executor(
            workers=params.proof_workers, ray_address=params.ray_address,
            ray_tls=params.ray_tls, ray_allow_plaintext=params.ray_allow_plaintext))

    def context(self, epoch_id: int, account_id: bytes | None = None) -> RangeProofContext:
        """The range-proof context of an account's epoch (its subject is the account id;
        without one, the provider id: the version-1 context)."""
        return RangeProofContext(chain_id=self.params.chain_id, contract=self.params.contract,
                                 provider_id=account_id or self.ledger.provider_id,
                                 epoch_id=epoch_id)

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

    def _fixed_min_leaves(self, epoch_id: int, users: Sequence[int], fixed: CloseParams) -> int:
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
            leaves = sum(leaf_count(n, now.min_leaves) for n in users)
            if leaves != fixed.leaves_total:
                raise EpochStateError(
                    f"epoch {epoch_id}'s close started with {fixed.leaves_total} leaves; "
                    f"ZKMETER_MIN_LEAVES={now.min_leaves} would make {leaves}: set it back "
                    "to resume it")
            return now.min_leaves
        if fixed.min_leaves != now.min_leaves:
            log.warning("epoch %d: resuming with the close's own min_leaves=%d "
                        "(ZKMETER_MIN_LEAVES=%d applies to later epochs)", epoch_id,
                        fixed.min_leaves, now.min_leaves)
        return fixed.min_leaves

    def close(self, *, progress: Callable[[int, int], None] | None = None,
              allow_empty: bool | None = None) -> PublishedEpoch:
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

    def _split(self, epoch_id: int, totals: dict[str, int]
               ) -> list[tuple[Account, dict[str, int]]]:
        """The epoch's totals by billing account, in account-id order. Every user with usage
        must belong to an account whose id this provider's operator address derives."""
        owners = self._db(self.accounts.accounts_of, list(totals))
        orphans = len(set(totals) - set(owners))
        if orphans:
            raise EpochStateError(f"epoch {epoch_id}: {orphans} users with usage belong to no "
                                  "billing account; register each under its payer's account "
                                  "(RegisterUser) to close the epoch")
        known = self._db(self.accounts.accounts, set(owners.values()))
        groups: dict[bytes, dict[str, int]] = {}
        for user, account_id in owners.items():
            groups.setdefault(account_id, {})[user] = totals[user]
        out = []
        for account_id in sorted(groups):
            account = known[account_id]
            derived = account.block(self.params.operator).account_id(self.ledger.provider_id)
            if derived != account_id:
                raise EpochStateError(
                    f"billing account 0x{account_id.hex()} was registered under another "
                    f"operator address (ZKMETER_OPERATOR_ADDRESS is now "
                    f"0x{self.params.operator.hex()}): set it back to close the epoch")
            out.append((account, groups[account_id]))
        return out

    def _close(self, progress: Callable[[int, int], None] | None,
               allow_empty: bool) -> PublishedEpoch:
        info = self.epoch_to_close(allow_empty=allow_empty)
        totals = self._db(self.ledger.totals, info.id)
        if info.window_end_ms is None:  # a closing epoch always has its window end
            raise EpochStateError(f"epoch {info.id} has no window end")
        params = self.params
        parts = self._split(info.id, totals)
        self._check_fresh(info.id, [account.account_id for account, _ in parts])
        counts = [len(users) for _, users in parts]
        fixed = self.ledger.with_retries(lambda: self.store.start_close(
            info.id, sum(leaf_count(n, params.min_leaves) for n in counts),
            min_leaves=params.min_leaves, chain_id=params.chain_id, contract=params.contract))
        min_leaves = self._fixed_min_leaves(info.id, counts, fixed)
        keys = self.ledger.with_retries(lambda: self.store.user_keys(totals, epoch_id=info.id))
        heads = self._db(self.ledger.chain_heads, info.id)
        overall = sum(leaf_count(n, min_leaves) for n in counts)
        closed: dict[bytes, ClosedEpoch] = {}
        statements: dict[bytes, bytes] = {}
        with self._executor_factory() as executor:
            for account, users in parts:
                account_id = account.account_id
                offset = sum(len(c.bundle.leaves) for c in closed.values())
                self._db(self.store.start_account_close, info.id, account_id,
                         leaf_count(len(users), min_leaves))
                inputs = EpochInputs(
                    ctx=self.context(info.id, account_id), window_start=info.window_start_ms,
                    window_end=info.window_end_ms, rate_card_hash=info.rate_card_hash,
                    bit_size=info.bit_size, totals=users, min_leaves=min_leaves,
                    account=account.block(params.operator))
                part = close_epoch(
                    inputs, secret=self._secret, signing_key=self._signing_key,
                    store=RetryingLeafStore(self.store.leaves(info.id, account_id), self.ledger),
                    executor=executor, user_keys=keys,
                    progress=_offset(progress, offset, overall))
                closed[account_id] = part
                statements[account_id] = self._statement(part, heads, account)
        published = PublishedEpoch(info.id, closed, statements)
        self._publish(published, keys)
        return published

    def _check_fresh(self, epoch_id: int, account_ids: Sequence[bytes]) -> None:
        """Refuse to close an epoch id the chain already holds for one of its accounts: the
        database restarted its epoch ids (restored from a backup, or a second database under
        the same key and contract), and a second close of the same context with other totals
        would publish two openings of one context (docs/security.md)."""
        if self._onchain_last_epoch is None:
            return
        for account_id in account_ids:
            last = self._onchain_last_epoch(account_id)
            if last >= epoch_id:
                raise EpochStateError(
                    f"billing account 0x{account_id.hex()} already has epoch {last} on-chain, "
                    f"so epoch {epoch_id} of this database was used before (a database "
                    "restored from a backup, or another one under the same key and contract)"
                    ": its context must never be closed twice; nothing was proved")

    def _statement(self, part: ClosedEpoch, heads: dict[str, bytes], account: Account) -> bytes:
        """The account's payer statement, signed and sealed to the payer's key."""
        entries = [(p.job.tag, p.user_id, p.job.value, p.job.blinding,
                    bytes(32) if p.user_id is None else heads[p.user_id])
                   for p in part.planned]
        statement = make_statement(part.bundle, entries, self._signing_key)
        return seal_statement(statement, account.payer_x25519_public_key)

    def _publish(self, published: PublishedEpoch, keys: dict[str, bytes]) -> None:
        """Publish and mark closed (one transaction, EpochStore.publish), retried; a retry
        that finds its own earlier attempt committed (the same bundles) is a success."""
        epoch_id = published.epoch_id
        parts = []
        for account_id, part in published.accounts.items():
            private = {o.tag: (user, o.to_bytes()) for user, o in part.openings.items()
                       if user not in keys}
            parts.append(AccountPublication(
                account_id=account_id, bundle_json=part.bundle.dumps().encode(),
                merkle_root=part.bundle.merkle_root, total_units=part.bundle.total,
                statement=published.statements[account_id], sealed=part.sealed,
                private_openings=private))
        attempts = 0

        def publish() -> None:
            nonlocal attempts
            attempts += 1
            self.store.publish(epoch_id, accounts=parts,
                               private_retention_ms=self.params
                               .plaintext_opening_retention_days * 86_400_000)

        try:
            self.ledger.with_retries(publish)
        except EpochStateError:
            if attempts > 1 and all(
                    self._db(self.store.account_bundle_json, epoch_id, p.account_id)
                    == p.bundle_json for p in parts):
                return  # our own commit went through; only its answer was lost
            raise
        try:  # keyless users' plaintext openings past their retention (docs/security.md)
            self.store.purge_expired_openings()
        except Exception as exc:  # the close is published; the purge runs again next close
            log.warning("purging expired plaintext openings failed (%s)", type(exc).__name__)
