"""Batch verification: many valid statements pass as one MSM; a single bad one anywhere
makes the whole batch fail, whatever kind of bad it is."""

import pytest

from circuits.constants import CURVE_ORDER
from circuits.encoding import point_to_bytes
from circuits.errors import DecodeError, ParameterError, VerificationError
from circuits.pedersen import commit
from circuits.rangeproof import Statement, _prove, batch_verify
from tests.circuits.conftest import CONTEXT, KeccakRng, make_proof, other_context

R = CURVE_ORDER
MIXED = [(8, 1), (16, 1), (32, 1), (64, 1), (8, 2), (16, 4), (32, 2), (8, 8)]


def statements(items, ctxs=None):
    """Verifier's scope: one fresh transcript per statement, from the context alone."""
    ctxs = ctxs or [CONTEXT] * len(items)
    return [Statement(ctx.transcript(), proof, list(commitments), n)
            for (proof, commitments, n), ctx in zip(items, ctxs, strict=True)]


@pytest.fixture(scope="module")
def mixed64(mcl):
    """64 honest proofs over a mix of (n, m)."""
    items = []
    for i in range(64):
        n, m = MIXED[i % len(MIXED)]
        rng = KeccakRng(b"mixed-values-%d" % i)
        values = [rng.below(1 << n) for _ in range(m)]
        proof, commitments = make_proof(values, n, backend=mcl, seed=b"mixed-%d" % i)
        items.append((proof, commitments, n))
    return items


@pytest.fixture(scope="module")
def singles1024(mcl):
    """1024 honest single 32-bit proofs."""
    items = []
    for i in range(1024):
        proof, commitments = make_proof([i * 4_194_301 % 2**32], 32, backend=mcl,
                                        seed=b"single-%d" % i)
        items.append((proof, commitments, 32))
    return items


def bump_t_x(proof: bytes) -> bytes:
    """The proof with t_x + 1 (still canonical, so it decodes)."""
    start = 1 + 4 * 64
    t_x = (int.from_bytes(proof[start:start + 32], "big") + 1) % R
    return proof[:start] + t_x.to_bytes(32, "big") + proof[start + 32:]


def test_empty_batch_passes(mcl):
    batch_verify([], backend=mcl)


def test_64_mixed_proofs_pass(mcl, mixed64):
    batch_verify(statements(mixed64), backend=mcl)


def test_1024_single_proofs_pass(mcl, singles1024):
    batch_verify(statements(singles1024), backend=mcl)


@pytest.mark.parametrize("position", [0, 517, 1023])
def test_one_bad_proof_among_1024_fails_the_batch(mcl, singles1024, position):
    items = list(singles1024)
    proof, commitments, n = items[position]
    items[position] = (bump_t_x(proof), commitments, n)
    with pytest.raises(VerificationError):
        batch_verify(statements(items), backend=mcl)


def _corrupt(kind, items, position, mcl):
    """Make statement `position` bad in the given way; return the items and contexts."""
    items = list(items)
    ctxs = [CONTEXT] * len(items)
    proof, commitments, n = items[position]
    if kind == "t_x":
        items[position] = (bump_t_x(proof), commitments, n)
    elif kind == "other-commitment":
        items[position] = (proof, [commit(7, 7, backend=mcl)] * len(commitments), n)
    elif kind == "borrowed-commitment":
        neighbour = items[(position + 1) % len(items)][1]
        items[position] = (proof, neighbour, n)
    elif kind == "other-context":
        ctxs[position] = other_context(epoch_id=CONTEXT.epoch_id + 1)
    elif kind == "swapped-proofs":
        other = (position + 1) % len(items)
        items[position], items[other] = ((items[other][0], commitments, n),
                                         (proof, items[other][1], n))
    elif kind == "dishonest-2^n":
        rng = KeccakRng(b"batch-dishonest")
        bad, points = _prove(CONTEXT.transcript(), [1 << 32], [rng()], [0] * 32, 32, mcl, rng)
        items[position] = (bad.to_bytes(), [point_to_bytes(p) for p in points], 32)
    else:  # pragma: no cover
        raise AssertionError(kind)
    return items, ctxs


BAD_KINDS = ["t_x", "other-commitment", "borrowed-commitment", "other-context",
             "swapped-proofs", "dishonest-2^n"]


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("position", [0, 100, 255])
def test_one_bad_statement_among_256_fails_the_batch(mcl, singles1024, kind, position):
    items, ctxs = _corrupt(kind, singles1024[:256], position, mcl)
    with pytest.raises(VerificationError):
        batch_verify(statements(items, ctxs), backend=mcl)


@pytest.mark.parametrize("kind", ["t_x", "other-commitment", "other-context"])
def test_one_bad_statement_among_mixed_sizes_fails_the_batch(mcl, mixed64, kind):
    for position in (5, 63):  # a (16, 4) and an (8, 8) statement
        items, ctxs = _corrupt(kind, mixed64, position, mcl)
        with pytest.raises(VerificationError):
            batch_verify(statements(items, ctxs), backend=mcl)


def test_two_compensating_bad_proofs_fail_the_batch(mcl, singles1024):
    """t_x + 1 in one proof and t_x - 1 in another must not cancel under random weights."""
    items = list(singles1024[:16])
    p0, c0, n0 = items[0]
    p1, c1, n1 = items[1]
    start = 1 + 4 * 64
    t1 = (int.from_bytes(p1[start:start + 32], "big") - 1) % R
    items[0] = (bump_t_x(p0), c0, n0)
    items[1] = (p1[:start] + t1.to_bytes(32, "big") + p1[start + 32:], c1, n1)
    for seed in range(5):
        with pytest.raises(VerificationError):
            batch_verify(statements(items), backend=mcl, rng=KeccakRng(b"w%d" % seed))


def test_statements_from_different_contexts_pass_together(mcl):
    ctxs = [other_context(epoch_id=e) for e in range(8)]
    ctxs += [other_context(chain_id=c) for c in (1, 10, 137)]
    ctxs += [other_context(provider_id=bytes([i]) * 32) for i in range(3)]
    items = [(*make_proof([i * 1000], 16, backend=mcl, seed=b"ctx-%d" % i, ctx=ctx), 16)
             for i, ctx in enumerate(ctxs)]
    batch_verify(statements(items, ctxs), backend=mcl)
    swapped = list(ctxs)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    with pytest.raises(VerificationError):
        batch_verify(statements(items, swapped), backend=mcl)
    with pytest.raises(VerificationError):
        batch_verify(statements(items), backend=mcl)  # all under the default context


def test_duplicated_valid_statement_passes(mcl, mixed64):
    batch_verify(statements([mixed64[0]] * 5), backend=mcl)


def test_a_malformed_statement_is_a_decode_error_for_the_whole_batch(mcl, mixed64):
    items = list(mixed64)
    proof, commitments, n = items[10]
    items[10] = (proof[:-1], commitments, n)
    with pytest.raises(DecodeError):
        batch_verify(statements(items), backend=mcl)
    items[10] = (proof, [bytes(64)] * len(commitments), n)
    with pytest.raises(DecodeError):
        batch_verify(statements(items), backend=mcl)


def test_a_statement_with_undefined_parameters_fails_the_batch(mcl, mixed64):
    items = list(mixed64)
    proof, commitments, _ = items[0]
    items[0] = (proof, commitments, 7)
    with pytest.raises(ParameterError):
        batch_verify(statements(items), backend=mcl)
    items[0] = (proof, [*commitments, *commitments, commitments[0]], 8)  # m = 3
    with pytest.raises(ParameterError):
        batch_verify(statements(items), backend=mcl)


def test_valid_batch_passes_under_any_verifier_randomness(mcl, mixed64):
    for seed in range(5):
        batch_verify(statements(mixed64[:16]), backend=mcl, rng=KeccakRng(b"v%d" % seed))


def test_batch_on_the_python_backend(pure, mixed64):
    items = mixed64[:8]  # one of each (n, m)
    batch_verify(statements(items), backend=pure)
    bad = list(items)
    bad[3] = (bump_t_x(bad[3][0]), bad[3][1], bad[3][2])
    with pytest.raises(VerificationError):
        batch_verify(statements(bad), backend=pure)


def test_a_batch_of_one_bad_statement_fails(mcl, mixed64):
    proof, commitments, n = mixed64[0]
    with pytest.raises(VerificationError):
        batch_verify(statements([(bump_t_x(proof), commitments, n)]), backend=mcl)
