"""Closing one billing account's epoch: from per-user totals to a signed bundle and sealed
openings (prover/epoch/service.py runs this once per account with usage).

The range-proof context's subject (its provider slot) is the billing account's on-chain id,
so tags, blindings and proofs are per account and the contract verifies a challenged proof
under the account it pays from. Without an account (``EpochInputs.account`` None: benchmarks
and the version-1 format) the subject is the provider's Ed25519 key.

Steps (docs/epoch.md):

1. take the snapshot of per-user totals (billable units, each in [0, 2^n));
2. pad to a power of two (at least ``min_leaves``) with zero-value leaves whose tags look
   like users' tags;
3. derive each leaf's tag, blinding, commitment and proof randomness from the master secret
   (prover/epoch/derive.py), so a redone close is byte-identical;
4. commit and prove every leaf not already stored, over the executor, saving each finished
   leaf at once (a crash resumes where it stopped);
   verify before saving: every leaf the executor returns must carry the commitment computed
   here from its job, and its proof must batch-verify; a leaf that fails is proved again in
   this process (and the executor named in a warning), so a faulty worker (a Ray node, a
   broken native backend) can never get a slashable proof signed. Resumed leaves are checked
   the same way;
5. order the leaves by tag, build the Merkle tree, compute V = sum v and R = sum r mod r, and
   check V*G + R*H = sum C and V < 2^96 (the contract's uint96);
6. sign the bundle's canonical bytes with the provider's Ed25519 key;
7. make one opening per leaf, sealed to the user's X25519 key (or to a throwaway key for
   padding leaves and for users without a key), all of the same length.
"""

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from circuits import merkle
from circuits.constants import CURVE_ORDER
from circuits.pedersen import commit, sum_commitments
from circuits.transcript import RangeProofContext
from prover.epoch.derive import blinding, padding_tag, proof_seed, user_tag
from prover.epoch.executor import InlineExecutor, LeafJob, LeafResult, ProofExecutor, prove_leaf
from verifier.account import AccountBlock
from verifier.bundle import (
    SETTLEMENT_BIT_SIZE,
    SETTLEMENT_TOTAL_BITS,
    Bundle,
    Leaf,
    failing_proofs,
    sign_bundle,
)
from verifier.opening import Opening, seal

log = logging.getLogger(__name__)

DEFAULT_MIN_LEAVES = 16


class EpochCloseError(RuntimeError):
    """The epoch cannot be closed as asked (bad snapshot, stale stored leaf, wrong key)."""


class LeafStore(Protocol):
    """Durable storage of finished leaves of one epoch."""

    def finished(self) -> dict[bytes, LeafResult]:
        """The leaves already proved, by tag."""

    def save(self, results: Sequence[LeafResult]) -> None:
        """Persist finished leaves (durably, before returning)."""


class MemoryLeafStore:
    """A LeafStore in memory: for one-shot closes (benchmarks, tests) with nothing to resume."""

    def __init__(self) -> None:
        self._leaves: dict[bytes, LeafResult] = {}

    def finished(self) -> dict[bytes, LeafResult]:
        return dict(self._leaves)

    def save(self, results: Sequence[LeafResult]) -> None:
        for result in results:
            self._leaves[result.tag] = result


@dataclass(frozen=True, slots=True)
class EpochInputs:
    """Everything public about the epoch, plus the snapshot of totals."""

    ctx: RangeProofContext
    window_start: int
    window_end: int
    rate_card_hash: bytes
    bit_size: int
    totals: Mapping[str, int]
    min_leaves: int = DEFAULT_MIN_LEAVES
    account: AccountBlock | None = None  # the billing account billed (module docstring)


@dataclass(frozen=True, slots=True)
class PlannedLeaf:
    """A leaf before proving: its job, the commitment it must produce, and, for real users,
    the user id."""

    user_id: str | None
    job: LeafJob
    commitment: bytes


@dataclass(frozen=True, slots=True)
class ClosedEpoch:
    """The outputs of a close: the public bundle and the openings."""

    bundle: Bundle
    openings: dict[str, Opening]  # private: user id -> its opening
    sealed: dict[bytes, bytes]  # public: tag -> sealed opening
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    # leaves the executor got wrong and this process proved again: tag -> executor name
    reproved: dict[bytes, str] = field(default_factory=dict)
    # private: every leaf in the bundle's (tag) order, users and padding, with its witness
    planned: tuple[PlannedLeaf, ...] = ()


def leaf_count(users: int, min_leaves: int) -> int:
    """The padded number of leaves: the next power of two >= max(users, min_leaves)."""
    return 1 << (max(users, min_leaves, 1) - 1).bit_length()


def plan(inputs: EpochInputs, secret: bytes) -> list[PlannedLeaf]:
    """Every leaf of the epoch (users, then padding), with derived tag, blinding and seed."""
    if inputs.bit_size != SETTLEMENT_BIT_SIZE:
        raise EpochCloseError(f"bit size n = {inputs.bit_size} cannot settle: the on-chain "
                              f"verifier checks n = {SETTLEMENT_BIT_SIZE} only")
    limit = 1 << inputs.bit_size
    planned: list[PlannedLeaf] = []
    for user_id in sorted(inputs.totals):
        value = inputs.totals[user_id]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
            raise EpochCloseError(f"a total is outside [0, 2^{inputs.bit_size})")
        tag = user_tag(secret, inputs.ctx, user_id)
        planned.append(_planned(inputs, secret, user_id, tag, value))
    for index in range(leaf_count(len(planned), inputs.min_leaves) - len(planned)):
        tag = padding_tag(secret, inputs.ctx, index)
        planned.append(_planned(inputs, secret, None, tag, 0))
    if len({p.job.tag for p in planned}) != len(planned):
        raise EpochCloseError("two leaves derived the same tag")  # probability 2^-128
    return planned


def _planned(inputs: EpochInputs, secret: bytes, user_id: str | None, tag: bytes,
             value: int) -> PlannedLeaf:
    blind = blinding(secret, inputs.ctx, tag, value)
    commitment = commit(value, blind)
    seed = proof_seed(secret, inputs.ctx, tag, value, blind, n=inputs.bit_size,
                      commitments=[commitment])
    return PlannedLeaf(user_id, LeafJob(tag, value, blind, seed), commitment)


def _invalid(ctx: RangeProofContext, n: int, planned: Mapping[bytes, PlannedLeaf],
             results: Sequence[LeafResult]) -> list[LeafResult]:
    """The results that are not this epoch's planned leaves: unknown tag, a commitment other
    than the one computed from the job, or a proof that does not verify."""
    known = [r for r in results if r.tag in planned and r.commitment == planned[r.tag].commitment]
    known_tags = {r.tag for r in known}
    bad = [r for r in results if r.tag not in known_tags]
    failing = set(failing_proofs(ctx, n, [(r.proof, r.commitment) for r in known]))
    return bad + [r for i, r in enumerate(known) if i in failing]


def close_epoch(
    inputs: EpochInputs,
    *,
    secret: bytes,
    signing_key: SigningKey,
    store: LeafStore,
    executor: ProofExecutor | None = None,
    user_keys: Mapping[str, bytes] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ClosedEpoch:
    """Run the whole close (module docstring); resumable through ``store``."""
    key = bytes(signing_key.verify_key)
    subject = key if inputs.account is None else inputs.account.account_id(key)
    if subject != inputs.ctx.provider_id:
        raise EpochCloseError("the context's subject is not the signing key's "
                              + ("provider id" if inputs.account is None else "account id"))
    started = time.perf_counter()
    planned = plan(inputs, secret)
    timings = {"derive": time.perf_counter() - started}
    by_tag = {p.job.tag: p for p in planned}
    finished = store.finished()
    stale = set(finished) - set(by_tag)
    if stale:
        raise EpochCloseError(f"{len(stale)} stored leaves do not belong to this epoch's plan")
    for tag, result in finished.items():  # a resumed leaf must open to the planned value
        if by_tag[tag].commitment != result.commitment:
            raise EpochCloseError("a stored leaf does not match the snapshot")
    if _invalid(inputs.ctx, inputs.bit_size, by_tag, list(finished.values())):
        raise EpochCloseError("a stored leaf's range proof does not verify; nothing was "
                              "signed (delete the epoch's stored leaves to prove them again)")
    todo = [p.job for p in planned if p.job.tag not in finished]
    started = time.perf_counter()
    done = len(finished)
    if progress is not None:
        progress(done, len(planned))
    runner = executor or InlineExecutor()
    reproved: dict[bytes, str] = {}
    pending = {job.tag for job in todo}
    for results in runner.run(inputs.ctx, inputs.bit_size, todo):
        results = [r for r in results if r.tag in pending]  # a duplicate is never counted
        good = _repair(inputs, by_tag, results, runner.name, reproved)
        store.save(good)
        for result in good:
            finished[result.tag] = result
            pending.discard(result.tag)
        done += len(good)
        if progress is not None:
            progress(done, len(planned))
    if pending:  # an executor that silently dropped jobs: prove them here
        missing = [by_tag[tag].job for tag in sorted(pending)]
        log.warning("epoch %d: the %s executor returned no result for %d leaves; proving them "
                    "in process", inputs.ctx.epoch_id, runner.name, len(missing))
        good = [_reprove(inputs, by_tag, job.tag) for job in missing]
        reproved.update({r.tag: runner.name for r in good})
        store.save(good)
        finished.update({r.tag: r for r in good})
        if progress is not None:
            progress(len(finished), len(planned))
    timings["commit_and_prove"] = time.perf_counter() - started
    closed = assemble(inputs, planned, finished, signing_key=signing_key,
                      user_keys=user_keys or {})
    closed.timings.update(timings)
    closed.reproved.update(reproved)
    return closed


def _repair(inputs: EpochInputs, by_tag: Mapping[bytes, PlannedLeaf],
            results: Sequence[LeafResult], executor: str,
            reproved: dict[bytes, str]) -> list[LeafResult]:
    """``results`` with every invalid leaf replaced by one proved (and checked) in process."""
    bad = _invalid(inputs.ctx, inputs.bit_size, by_tag, results)
    if not bad:
        return list(results)
    log.warning("epoch %d: the %s executor returned %d invalid leaves (wrong commitment or a "
                "proof that does not verify); proving them again in process",
                inputs.ctx.epoch_id, executor, len(bad))
    bad_ids = {id(r) for r in bad}
    good = [r for r in results if id(r) not in bad_ids]
    for result in bad:
        if result.tag in by_tag:
            good.append(_reprove(inputs, by_tag, result.tag))
            reproved[result.tag] = executor
    return good


def _reprove(inputs: EpochInputs, by_tag: Mapping[bytes, PlannedLeaf], tag: bytes
             ) -> LeafResult:
    """Prove one planned leaf in this process and check it; raise if even that fails."""
    result = prove_leaf(inputs.ctx, inputs.bit_size, by_tag[tag].job)
    if _invalid(inputs.ctx, inputs.bit_size, by_tag, [result]):
        raise EpochCloseError("a leaf proved in process does not verify: the group backend "
                              "is faulty; nothing was signed")
    return result


def assemble(
    inputs: EpochInputs,
    planned: Sequence[PlannedLeaf],
    finished: Mapping[bytes, LeafResult],
    *,
    signing_key: SigningKey,
    user_keys: Mapping[str, bytes],
) -> ClosedEpoch:
    """Order, tree, totals, signature, openings (steps 5-7)."""
    started = time.perf_counter()
    ordered = sorted(planned, key=lambda p: p.job.tag)
    leaves = tuple(
        Leaf(p.job.tag, finished[p.job.tag].commitment, finished[p.job.tag].proof)
        for p in ordered
    )
    tree = merkle.levels([leaf.hash() for leaf in leaves])
    timings = {"tree": time.perf_counter() - started}
    started = time.perf_counter()
    unsigned = Bundle(
        chain_id=inputs.ctx.chain_id,
        contract=inputs.ctx.contract,
        provider_id=bytes(signing_key.verify_key),
        account=inputs.account,
        epoch_id=inputs.ctx.epoch_id,
        window_start=inputs.window_start,
        window_end=inputs.window_end,
        rate_card_hash=inputs.rate_card_hash,
        bit_size=inputs.bit_size,
        leaves=leaves,
        total=sum(p.job.value for p in planned),
        total_blinding=sum(p.job.blinding for p in planned) % CURVE_ORDER,
        merkle_root=tree[-1][0],
    )
    if not unsigned.total < 1 << SETTLEMENT_TOTAL_BITS:
        raise EpochCloseError(f"the epoch total does not fit the contract's "
                              f"uint{SETTLEMENT_TOTAL_BITS}")
    if sum_commitments([leaf.commitment for leaf in leaves]) != commit(
            unsigned.total, unsigned.total_blinding):
        raise EpochCloseError("the leaves do not sum to V*G + R*H; nothing was signed")
    bundle = sign_bundle(unsigned, lambda message: bytes(signing_key.sign(message).signature))
    timings["sign"] = time.perf_counter() - started
    started = time.perf_counter()
    openings: dict[str, Opening] = {}
    sealed: dict[bytes, bytes] = {}
    for index, p in enumerate(ordered):
        opening = Opening(
            epoch_id=inputs.ctx.epoch_id, tag=p.job.tag, value=p.job.value,
            blinding=p.job.blinding, leaf_index=index, path=tuple(merkle.path(tree, index)),
        )
        key = user_keys.get(p.user_id) if p.user_id is not None else None
        if p.user_id is not None:
            openings[p.user_id] = opening
        sealed[p.job.tag] = seal(opening, key or bytes(PrivateKey.generate().public_key))
    timings["seal"] = time.perf_counter() - started
    return ClosedEpoch(bundle, openings, sealed, timings, planned=tuple(ordered))
