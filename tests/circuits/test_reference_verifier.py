"""The verifier's single-MSM formula against a naive reference (tests/circuits/reference.py)
that checks the two equations of the paper separately and folds the generators round by
round: both must accept honest proofs and both must reject the same bad ones."""

import pytest

from circuits.constants import CURVE_ORDER, FIELD_MODULUS
from circuits.encoding import G1Affine, bytes_to_point, point_to_bytes
from circuits.errors import VerificationError
from circuits.rangeproof import RangeProof, _prove, _verification_terms, prove, verify
from tests.circuits.conftest import CONTEXT, KeccakRng, check_proof, make_proof, other_context
from tests.circuits.reference import (
    delta,
    inv,
    naive_verify,
    parse_proof,
    reference_hash_to_g1,
    replay,
    s_vector,
)

R = CURVE_ORDER


def bump_t_x(proof: bytes) -> bytes:
    start = 257
    t_x = (int.from_bytes(proof[start:start + 32], "big") + 1) % R
    return proof[:start] + t_x.to_bytes(32, "big") + proof[start + 32:]


def test_naive_verifier_accepts_an_honest_proof_on_py_ecc(mcl, pyecc):
    """The reference backend, the naive verifier, n = 8, m = 1: the slowest test here."""
    proof, commitments = make_proof([201], 8, backend=mcl, seed=b"naive-pyecc")
    assert naive_verify(pyecc, proof, commitments, 8, CONTEXT)


@pytest.mark.parametrize(("n", "values"), [(8, [0]), (8, [255, 3]), (16, [40000]),
                                           (8, [1, 2, 3, 4]), (32, [2**32 - 1]),
                                           (16, [5, 6, 7, 8, 9, 10, 11, 65535])])
def test_naive_verifier_accepts_honest_proofs(mcl, n, values):
    proof, commitments = make_proof(values, n, backend=mcl, seed=b"naive")
    assert naive_verify(mcl, proof, commitments, n, CONTEXT)


def dishonest_2n(mcl, n):
    rng = KeccakRng(b"naive-dishonest")
    bad, points = _prove(CONTEXT.transcript(), [1 << n], [rng()], [0] * (n - 1) + [2], n, mcl,
                         rng)
    return bad.to_bytes(), [point_to_bytes(p) for p in points]


def bad_cases(mcl):
    proof, commitments = make_proof([17, 99], 8, backend=mcl, seed=b"naive-bad")
    yield "t_x+1", bump_t_x(proof), commitments, CONTEXT
    yield "swapped", proof, commitments[::-1], CONTEXT
    yield "other-epoch", proof, commitments, other_context(epoch_id=CONTEXT.epoch_id + 1)
    point = bytes_to_point(proof[1:65])
    negated_a = point_to_bytes(G1Affine(point.x, FIELD_MODULUS - point.y))
    yield "neg-A", proof[:1] + negated_a + proof[65:], commitments, CONTEXT
    last_b = int.from_bytes(proof[-32:], "big")
    yield "b+1", proof[:-32] + ((last_b + 1) % R).to_bytes(32, "big"), commitments, CONTEXT
    d_proof, d_commitments = dishonest_2n(mcl, 8)
    yield "dishonest-2^n", d_proof, d_commitments, CONTEXT


@pytest.mark.parametrize("case", ["t_x+1", "swapped", "other-epoch", "neg-A", "b+1",
                                  "dishonest-2^n"])
def test_naive_and_fast_verifiers_both_reject(mcl, case):
    cases = {name: rest for name, *rest in bad_cases(mcl)}
    proof, commitments, ctx = cases[case]
    assert not naive_verify(mcl, proof, commitments, 8, ctx)
    with pytest.raises(VerificationError):
        check_proof(proof, commitments, 8, backend=mcl, ctx=ctx)


@pytest.mark.parametrize(("n", "values"), [(8, [9]), (8, [1, 2, 3, 4]), (32, [77])])
def test_challenges_match_the_documented_transcript_order(mcl, n, values):
    proof, commitments = make_proof(values, n, backend=mcl, seed=b"challenges")
    m = len(values)
    parsed = parse_proof(proof, (n * m).bit_length() - 1)
    ch = replay(parsed, commitments, n, CONTEXT)
    decoded = RangeProof.from_bytes(proof, n=n, m=m)
    terms = _verification_terms(CONTEXT.transcript(), decoded,
                                [bytes_to_point(c) for c in commitments], n, c=1)
    assert terms.challenges == (ch.y, ch.z, ch.x, ch.w, *ch.us)


@pytest.mark.parametrize(("n", "m"), [(8, 1), (8, 2), (16, 4), (64, 1)])
def test_s_vector_equals_the_naive_fold_of_the_generators(mcl, n, m):
    """Folding G_i round by round (G' = u^-1 G_lo + u G_hi) gives <s, G>; folding H'
    (H' = u H_lo + u^-1 H_hi) gives <s^-1, H>, with s from the documented formula."""
    size = n * m
    proof, commitments = make_proof([1] * m, n, backend=mcl, seed=b"s-vector")
    ch = replay(parse_proof(proof, size.bit_length() - 1), commitments, n, CONTEXT)
    s = s_vector(ch.us, size)
    gs = [mcl.from_affine(reference_hash_to_g1(b"bulletproofs.G", i)) for i in range(size)]
    hs = [mcl.from_affine(reference_hash_to_g1(b"bulletproofs.H", i)) for i in range(size)]
    g_vec, h_vec = gs, hs
    for u in ch.us:
        half, u_inv = len(g_vec) // 2, inv(u)
        g_vec = [mcl.add(mcl.mul(g_vec[i], u_inv), mcl.mul(g_vec[half + i], u))
                 for i in range(half)]
        h_vec = [mcl.add(mcl.mul(h_vec[i], u), mcl.mul(h_vec[half + i], u_inv))
                 for i in range(half)]
    assert mcl.to_affine(g_vec[0]) == mcl.to_affine(mcl.msm(gs, s))
    assert mcl.to_affine(h_vec[0]) == mcl.to_affine(mcl.msm(hs, [inv(x) for x in s]))
    # And s^-1 is s reversed, which the verifier relies on.
    assert [inv(x) for x in s] == s[::-1]


@pytest.mark.parametrize(("n", "m"), [(8, 1), (8, 2), (16, 4)])
def test_verification_coefficients_match_the_paper(mcl, n, m):
    """White box: the MSM coefficients of G_i, H_i, G, H and U are the documented formulas
    with the naive s vector and delta (PROTOCOL.md §6)."""
    size = n * m
    proof, commitments = make_proof(list(range(1, m + 1)), n, backend=mcl, seed=b"coeffs")
    parsed = parse_proof(proof, size.bit_length() - 1)
    ch = replay(parsed, commitments, n, CONTEXT)
    c = 123456789
    decoded = RangeProof.from_bytes(proof, n=n, m=m)
    terms = _verification_terms(CONTEXT.transcript(), decoded,
                                [bytes_to_point(v) for v in commitments], n, c)
    y, z, x, w = ch.y, ch.z, ch.x, ch.w
    a, b = parsed.a, parsed.b
    s = s_vector(ch.us, size)
    y_inv = inv(y)
    for i in range(size):
        zeta = pow(z, 2 + i // n, R) * pow(2, i % n, R)
        assert terms.gs[i] == (-z - a * s[i]) % R
        assert terms.hs[i] == (z + (zeta - b * inv(s[i])) * pow(y_inv, i, R)) % R
    assert terms.g == c * (parsed.t_x - delta(y, z, n, m)) % R
    assert terms.h == (c * parsed.t_x_blinding - parsed.e_blinding) % R
    assert terms.u == w * (parsed.t_x - a * b) % R
    assert terms.scalars == [
        *((-c * pow(z, 2 + j, R)) % R for j in range(m)), (-c * x) % R, (-c * x * x) % R,
        1, x, *(u * u % R for u in ch.us), *(inv(u * u) for u in ch.us)]


def test_a_32_bit_proof_is_checked_with_82_msm_terms(proof32):
    """PROTOCOL.md §6: G, H, U, 32 G_i, 32 H_i, V, T1, T2, A, S and 5 pairs L_j, R_j."""
    proof, commitments = proof32
    decoded = RangeProof.from_bytes(proof, n=32, m=1)
    terms = _verification_terms(CONTEXT.transcript(), decoded,
                                [bytes_to_point(c) for c in commitments], 32, c=1)
    assert 3 + len(terms.gs) + len(terms.hs) + len(terms.points) == 82
    assert len(terms.points) == len(terms.scalars)


@pytest.mark.parametrize(("n", "values"), [(8, [3]), (32, [2**32 - 1]), (16, [1, 2, 3, 4])])
def test_prover_and_verifier_transcripts_end_in_the_same_state(mcl, n, values):
    rng = KeccakRng(b"end-state")
    blindings = [rng() for _ in values]
    prover_t = CONTEXT.transcript()
    proof, commitments = prove(prover_t, values=values, blindings=blindings, n=n, backend=mcl,
                               rng=rng)
    verifier_t = CONTEXT.transcript()
    verify(verifier_t, proof, commitments, n=n, backend=mcl)
    ch = replay(parse_proof(proof, (n * len(values)).bit_length() - 1), commitments, n, CONTEXT)
    # the reference verifier's replay ends where the prover ended; the real verifier works on
    # a clone, so the caller's transcript is left as it was (issue 12)
    assert prover_t.state == ch.state
    assert verifier_t.state == CONTEXT.transcript().state != ch.state

