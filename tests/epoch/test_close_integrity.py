"""Epoch close never signs a bundle that could get an honest provider slashed (issue 12):
only the settlement bit size, and (below) every proof checked before the signature."""

import logging
from dataclasses import replace

import pytest
from nacl.signing import SigningKey

from circuits.pedersen import commit, sum_commitments
from circuits.transcript import RangeProofContext
from prover.epoch.close import EpochCloseError, EpochInputs, MemoryLeafStore, close_epoch
from prover.epoch.derive import proof_seed
from prover.epoch.executor import LeafResult, ProofExecutor, prove_leaf
from verifier.bundle import verify_bundle

SECRET = b"close integrity test master secret (32+ bytes)"
KEY = SigningKey(b"i" * 32)


def inputs(**changes) -> EpochInputs:
    ctx = RangeProofContext(chain_id=5, contract=b"\x07" * 20,
                            provider_id=bytes(KEY.verify_key), epoch_id=4)
    base = EpochInputs(ctx=ctx, window_start=10, window_end=20, rate_card_hash=b"\x01" * 32,
                       bit_size=32, totals={"alice": 12, "bob": 30}, min_leaves=4)
    return replace(base, **changes)


@pytest.mark.parametrize("n", [8, 16, 64])
def test_close_refuses_a_bit_size_the_contract_cannot_check(n):
    store = MemoryLeafStore()
    with pytest.raises(EpochCloseError, match=f"n = {n} cannot settle"):
        close_epoch(inputs(bit_size=n), secret=SECRET, signing_key=KEY, store=store)
    assert store.finished() == {}  # nothing proved, nothing stored


class FaultyExecutor(ProofExecutor):
    """A worker that gets some leaves wrong: the way a broken Ray node or native backend
    would. ``fault`` picks what it does to the leaf at position ``index`` of the jobs."""

    name = "faulty-test-executor"

    def __init__(self, fault: str, index: int = 1) -> None:
        self.fault, self.index = fault, index

    def run(self, ctx, n, jobs):
        results = [prove_leaf(ctx, n, job) for job in jobs]
        if self.index < len(results):
            r = results[self.index]
            if self.fault == "proof_byte":
                proof = bytearray(r.proof)
                proof[300] ^= 1
                results[self.index] = LeafResult(r.tag, r.commitment, bytes(proof))
            elif self.fault == "other_value":  # a valid proof, for another value
                job = jobs[self.index]
                other = prove_leaf(ctx, n, replace(job, value=job.value + 1))
                results[self.index] = LeafResult(r.tag, other.commitment, other.proof)
            elif self.fault == "other_proof":  # another leaf's proof under this commitment
                results[self.index] = LeafResult(r.tag, r.commitment, results[0].proof)
            elif self.fault == "dropped":
                del results[self.index]
        yield results


@pytest.mark.parametrize("fault", ["proof_byte", "other_value", "other_proof", "dropped"])
def test_close_reproves_what_a_faulty_executor_got_wrong_and_names_it(fault, caplog):
    store = MemoryLeafStore()
    with caplog.at_level(logging.WARNING):
        closed = close_epoch(inputs(), secret=SECRET, signing_key=KEY, store=store,
                             executor=FaultyExecutor(fault))
    assert all(c.ok for c in verify_bundle(closed.bundle))  # what is signed is valid
    assert len(closed.reproved) == 1
    assert set(closed.reproved.values()) == {"faulty-test-executor"}
    assert "faulty-test-executor" in caplog.text
    honest = close_epoch(inputs(), secret=SECRET, signing_key=KEY, store=MemoryLeafStore())
    assert closed.bundle == honest.bundle  # the repaired bundle is the deterministic one
    # what was stored is the repaired leaf, never the faulty one
    assert store.finished() == {leaf.tag: LeafResult(leaf.tag, leaf.commitment, leaf.proof)
                                for leaf in honest.bundle.leaves}


def test_a_stored_leaf_whose_proof_fails_is_never_signed():
    store = MemoryLeafStore()
    honest = close_epoch(inputs(), secret=SECRET, signing_key=KEY, store=store)
    leaf = honest.bundle.leaves[2]
    proof = bytearray(leaf.proof)
    proof[200] ^= 1
    store.save([LeafResult(leaf.tag, leaf.commitment, bytes(proof))])
    with pytest.raises(EpochCloseError, match="does not verify"):
        close_epoch(inputs(), secret=SECRET, signing_key=KEY, store=store)


def _commitment_of(closed, user):
    opening = closed.openings[user]
    return next(leaf.commitment for leaf in closed.bundle.leaves if leaf.tag == opening.tag)


def test_one_context_closed_twice_with_other_totals_leaks_no_difference():
    """A restored database re-closing an epoch id under the same key and contract: with the
    blinding bound to the value, C' - C is not (v' - v) G (issue 12)."""
    first = close_epoch(inputs(), secret=SECRET, signing_key=KEY, store=MemoryLeafStore())
    second = close_epoch(inputs(totals={"alice": 19, "bob": 30}), secret=SECRET,
                         signing_key=KEY, store=MemoryLeafStore())
    c1, c2 = _commitment_of(first, "alice"), _commitment_of(second, "alice")
    assert first.openings["alice"].tag == second.openings["alice"].tag  # same leaf slot
    shifted = sum_commitments([c1, commit(7, 1)])  # C + 7 G + 1 H
    assert shifted != sum_commitments([c2, commit(0, 1)])  # C' + 0 G + 1 H
    assert first.openings["alice"].blinding != second.openings["alice"].blinding
    # an unchanged value keeps its leaf byte for byte (resume stays deterministic)
    assert _commitment_of(first, "bob") == _commitment_of(second, "bob")


def test_the_proof_seed_binds_the_whole_statement():
    ctx = inputs().ctx
    base = {"n": 32, "commitments": [commit(5, 9)]}
    seed = proof_seed(SECRET, ctx, b"t" * 32, 5, 9, **base)
    assert seed != proof_seed(SECRET, ctx, b"t" * 32, 5, 9, n=16, commitments=[commit(5, 9)])
    assert seed != proof_seed(SECRET, ctx, b"t" * 32, 5, 9, n=32,
                              commitments=[commit(5, 9), commit(1, 2)])
    assert seed != proof_seed(SECRET, ctx, b"t" * 32, 5, 9, n=32, commitments=[commit(6, 9)])
