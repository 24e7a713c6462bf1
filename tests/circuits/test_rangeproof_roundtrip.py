"""Range proofs that should verify do: every (n, m), edge values, every backend, across
backends. Prover and verifier share only bytes; the verifier builds its own transcript."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.backend import get_backend
from circuits.constants import ALLOWED_BIT_SIZES, CURVE_ORDER, MAX_AGGREGATION
from circuits.errors import ParameterError
from circuits.rangeproof import RangeProof, proof_size, prove, verify
from tests.circuits.conftest import CONTEXT, KeccakRng, check_proof, make_proof


def edge_values(n: int, m: int) -> list[int]:
    """m values cycling through 0, 1, 2^n - 1, 2^(n-1), 2^n - 2, and a middling one."""
    cycle = [0, 1, (1 << n) - 1, 1 << (n - 1), (1 << n) - 2, (1 << n) // 3]
    return [cycle[i % len(cycle)] for i in range(m)]


SINGLE_CASES = [(n, v) for n in ALLOWED_BIT_SIZES for v in (0, 1, (1 << n) - 1, (1 << n) // 3)]
AGGREGATED = [(8, 2), (8, 4), (16, 8), (32, 2), (32, 16)]


@pytest.mark.parametrize(("n", "value"), SINGLE_CASES, ids=lambda x: str(x))
def test_single_round_trip_mcl(mcl, n, value):
    proof, commitments = make_proof([value], n, backend=mcl, seed=f"single-{n}-{value}")
    assert len(proof) == proof_size(n, 1)
    assert len(commitments) == 1
    check_proof(proof, commitments, n, backend=mcl)


@pytest.mark.parametrize(("n", "m"), AGGREGATED, ids=lambda x: str(x))
def test_aggregated_round_trip_mcl(mcl, n, m):
    values = edge_values(n, m)
    proof, commitments = make_proof(values, n, backend=mcl, seed=f"agg-{n}-{m}")
    assert len(proof) == proof_size(n, m)
    assert len(commitments) == m
    check_proof(proof, commitments, n, backend=mcl)


@pytest.mark.parametrize(("n", "m", "values"), [
    (8, 1, [0]), (8, 1, [255]), (32, 1, [2**32 - 1]), (64, 1, [2**64 - 1]), (64, 1, [1]),
    (16, 4, [0, 65535, 1, 300]), (8, 8, [0, 255, 1, 2, 254, 128, 127, 3]),
], ids=lambda x: str(x))
def test_round_trip_python_backend(pure, n, m, values):
    assert len(values) == m
    proof, commitments = make_proof(values, n, backend=pure, seed=f"pure-{n}-{m}")
    check_proof(proof, commitments, n, backend=pure)


@pytest.mark.parametrize(("n", "values"), [(32, [123456789]), (8, [0, 255]),
                                           (64, [2**64 - 1]), (16, [1, 2, 3, 65535])])
def test_proof_made_on_mcl_verifies_on_python(mcl, pure, n, values):
    proof, commitments = make_proof(values, n, backend=mcl, seed=b"cross-a")
    check_proof(proof, commitments, n, backend=pure)


@pytest.mark.parametrize(("n", "values"), [(32, [123456789]), (8, [0, 255]),
                                           (64, [0]), (16, [1, 2, 3, 65535])])
def test_proof_made_on_python_verifies_on_mcl(mcl, pure, n, values):
    proof, commitments = make_proof(values, n, backend=pure, seed=b"cross-b")
    check_proof(proof, commitments, n, backend=mcl)


@pytest.mark.parametrize(("n", "values"), [(8, [200]), (32, [2**31 + 5]), (16, [7, 9])])
def test_backends_make_identical_proof_bytes_from_the_same_randomness(mcl, pure, n, values):
    assert make_proof(values, n, backend=mcl, seed=b"same") == make_proof(
        values, n, backend=pure, seed=b"same")


def test_py_ecc_reference_round_trip_and_identical_bytes(mcl, pyecc):
    """The one protocol run on the slow reference backend: n = 8, m = 1."""
    proof, commitments = make_proof([173], 8, backend=pyecc, seed=b"pyecc")
    assert (proof, commitments) == make_proof([173], 8, backend=mcl, seed=b"pyecc")
    check_proof(proof, commitments, 8, backend=pyecc)


def test_the_same_proof_verifies_under_many_verifier_challenges(mcl, proof32):
    proof, commitments = proof32
    for i in range(20):
        verify(CONTEXT.transcript(), proof, commitments, n=32, backend=mcl,
               rng=KeccakRng(b"verifier-%d" % i))


def test_proofs_are_randomised_by_default(mcl):
    """With the default CSPRNG, two proofs of the same statement differ but both verify."""
    blinding = KeccakRng(b"fixed-blinding")()
    p1, c1 = prove(CONTEXT.transcript(), values=[5], blindings=[blinding], n=8, backend=mcl)
    p2, c2 = prove(CONTEXT.transcript(), values=[5], blindings=[blinding], n=8, backend=mcl)
    assert c1 == c2
    assert p1 != p2
    check_proof(p1, c1, 8, backend=mcl)
    check_proof(p2, c2, 8, backend=mcl)


def test_default_backend_is_used_when_none_is_given(mcl):
    proof, commitments = prove(CONTEXT.transcript(), values=[9], blindings=[3], n=8)
    verify(CONTEXT.transcript(), proof, commitments, n=8)
    check_proof(proof, commitments, 8, backend=mcl)


def test_verify_accepts_bytearray_and_memoryview(mcl, proof8x2):
    proof, commitments = proof8x2
    verify(CONTEXT.transcript(), bytearray(proof), [bytearray(c) for c in commitments], n=8,
           backend=mcl)
    verify(CONTEXT.transcript(), memoryview(proof), [memoryview(c) for c in commitments], n=8,
           backend=mcl)


def test_decoded_proof_re_encodes_to_the_same_bytes(proof32, proof8x2):
    for (proof, commitments), n in ((proof32, 32), (proof8x2, 8)):
        decoded = RangeProof.from_bytes(proof, n=n, m=len(commitments))
        assert decoded.to_bytes() == proof
        assert proof[0] == 1


ALL_PARAMETERS = [(n, m) for n in ALLOWED_BIT_SIZES for m in (1, 2, 4, 16, MAX_AGGREGATION)]


@pytest.mark.parametrize(("n", "m"), ALL_PARAMETERS, ids=lambda x: str(x))
def test_proof_size_formula(n, m):
    rounds = (n * m).bit_length() - 1
    assert 2**rounds == n * m
    assert proof_size(n, m) == 1 + 4 * 64 + 3 * 32 + 2 * rounds * 64 + 2 * 32


def test_proof_size_of_a_32_bit_proof_is_1057():
    assert proof_size(32, 1) == 1057


@pytest.mark.parametrize(("n", "m"), [(8, 1), (64, 1), (8, 2), (16, 8), (32, 2)],
                         ids=lambda x: str(x))
def test_proof_size_matches_len_of_real_proofs(mcl, n, m):
    proof, _ = make_proof(edge_values(n, m), n, backend=mcl, seed=b"size")
    assert len(proof) == proof_size(n, m)


@pytest.mark.parametrize(("n", "m"), [(7, 1), (128, 1), (0, 1), (8, 0), (8, 3),
                                      (8, MAX_AGGREGATION * 2)], ids=lambda x: str(x))
def test_proof_size_rejects_undefined_parameters(n, m):
    with pytest.raises(ParameterError):
        proof_size(n, m)


@settings(max_examples=20, deadline=None)
@given(n=st.sampled_from(ALLOWED_BIT_SIZES), m=st.sampled_from([1, 2, 4]), data=st.data())
def test_property_round_trip_on_random_values(n, m, data):
    mcl = get_backend("mcl")
    values = data.draw(st.lists(st.integers(min_value=0, max_value=(1 << n) - 1),
                                min_size=m, max_size=m))
    blindings = data.draw(st.lists(st.integers(min_value=1, max_value=CURVE_ORDER - 1),
                                   min_size=m, max_size=m))
    proof, commitments = prove(CONTEXT.transcript(), values=values, blindings=blindings, n=n,
                               backend=mcl, rng=KeccakRng(b"prop"))
    check_proof(proof, commitments, n, backend=mcl)
