"""Closing an epoch: from per-user totals to a signed bundle and sealed openings.

Steps (docs/epoch.md):

1. take the snapshot of per-user totals (billable units, each in [0, 2^n));
2. pad to a power of two (at least ``min_leaves``) with zero-value leaves whose tags look
   like users' tags;
3. derive each leaf's tag, blinding and proof randomness from the master secret
   (prover/epoch/derive.py), so a redone close is byte-identical;
4. commit and prove every leaf not already stored, over the executor, saving each finished
   leaf at once (a crash resumes where it stopped);
5. order the leaves by tag, build the Merkle tree, compute V = sum v and R = sum r mod r;
6. sign the bundle's canonical bytes with the provider's Ed25519 key;
7. make one opening per leaf, sealed to the user's X25519 key (or to a throwaway key for
   padding leaves and for users without a key), all of the same length.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from circuits import merkle
from circuits.constants import CURVE_ORDER
from circuits.pedersen import commit
from circuits.transcript import RangeProofContext
from prover.epoch.derive import blinding, padding_tag, proof_seed, user_tag
from prover.epoch.executor import InlineExecutor, LeafJob, LeafResult, ProofExecutor
from verifier.bundle import SETTLEMENT_BIT_SIZE, Bundle, Leaf, sign_bundle
from verifier.opening import Opening, seal

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


@dataclass(frozen=True, slots=True)
class PlannedLeaf:
    """A leaf before proving: its job and, for real users, the user id."""

    user_id: str | None
    job: LeafJob


@dataclass(frozen=True, slots=True)
class ClosedEpoch:
    """The outputs of a close: the public bundle and the openings."""

    bundle: Bundle
    openings: dict[str, Opening]  # private: user id -> its opening
    sealed: dict[bytes, bytes]  # public: tag -> sealed opening
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase


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
        planned.append(_planned(inputs.ctx, secret, user_id, tag, value))
    for index in range(leaf_count(len(planned), inputs.min_leaves) - len(planned)):
        tag = padding_tag(secret, inputs.ctx, index)
        planned.append(_planned(inputs.ctx, secret, None, tag, 0))
    if len({p.job.tag for p in planned}) != len(planned):
        raise EpochCloseError("two leaves derived the same tag")  # probability 2^-128
    return planned


def _planned(ctx: RangeProofContext, secret: bytes, user_id: str | None, tag: bytes,
             value: int) -> PlannedLeaf:
    blind = blinding(secret, ctx, tag)
    return PlannedLeaf(user_id, LeafJob(tag, value, blind, proof_seed(secret, ctx, tag, value,
                                                                        blind)))


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
    if bytes(signing_key.verify_key) != inputs.ctx.provider_id:
        raise EpochCloseError("the signing key does not belong to the context's provider id")
    started = time.perf_counter()
    planned = plan(inputs, secret)
    timings = {"derive": time.perf_counter() - started}
    by_tag = {p.job.tag: p for p in planned}
    finished = store.finished()
    stale = set(finished) - set(by_tag)
    if stale:
        raise EpochCloseError(f"{len(stale)} stored leaves do not belong to this epoch's plan")
    for tag, result in finished.items():  # a resumed leaf must open to the planned value
        job = by_tag[tag].job
        if commit(job.value, job.blinding) != result.commitment:
            raise EpochCloseError("a stored leaf does not match the snapshot")
    todo = [p.job for p in planned if p.job.tag not in finished]
    started = time.perf_counter()
    done = len(finished)
    if progress is not None:
        progress(done, len(planned))
    for results in (executor or InlineExecutor()).run(inputs.ctx, inputs.bit_size, todo):
        store.save(results)
        for result in results:
            finished[result.tag] = result
        done += len(results)
        if progress is not None:
            progress(done, len(planned))
    timings["commit_and_prove"] = time.perf_counter() - started
    closed = assemble(inputs, planned, finished, signing_key=signing_key,
                      user_keys=user_keys or {})
    closed.timings.update(timings)
    return closed


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
        provider_id=inputs.ctx.provider_id,
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
    return ClosedEpoch(bundle, openings, sealed, timings)
