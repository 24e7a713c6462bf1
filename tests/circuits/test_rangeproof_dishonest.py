"""Dishonest provers, played with ``circuits.rangeproof._prove`` (which checks nothing), and
the honest prover's refusals. A dishonest proof is well formed (it decodes) and must still
fail verification."""

import pytest

from circuits.constants import CURVE_ORDER, MAX_AGGREGATION
from circuits.encoding import point_to_bytes
from circuits.errors import ParameterError, ValueOutOfRangeError, VerificationError
from circuits.pedersen import commit
from circuits.rangeproof import RangeProof, _prove, prove
from tests.circuits.conftest import CONTEXT, KeccakRng, check_proof

R = CURVE_ORDER


def bits(value: int, n: int) -> list[int]:
    return [(value >> i) & 1 for i in range(n)]


def dishonest(values, a_l, n, backend, seed=b"dishonest"):
    """The prover's scope: run _prove with the given bit vector; return only bytes."""
    rng = KeccakRng(seed)
    blindings = [rng() for _ in values]
    proof, commitments = _prove(CONTEXT.transcript(), values, blindings, a_l, n, backend, rng)
    assert isinstance(proof, RangeProof)
    data = proof.to_bytes()
    encoded = [point_to_bytes(c) for c in commitments]
    # The commitments really are to the claimed values (v mod r).
    for v, gamma, c in zip(values, blindings, encoded, strict=True):
        assert c == commit(v % R, gamma, backend=backend)
    return data, encoded


def assert_rejected(data, commitments, n, backend):
    RangeProof.from_bytes(data, n=n, m=len(commitments))  # well formed: it decodes
    with pytest.raises(VerificationError):
        check_proof(data, commitments, n, backend=backend)


@pytest.mark.parametrize("n", [8, 32])
def test_honest_bits_through_the_same_path_verify(mcl, n):
    """Control: the harness itself accepts an honest run of _prove."""
    value = (1 << n) - 1
    data, commitments = dishonest([value], bits(value, n), n, mcl)
    check_proof(data, commitments, n, backend=mcl)


@pytest.mark.parametrize("n", [8, 16, 32, 64])
@pytest.mark.parametrize("seed", [b"s1", b"s2"])
def test_commitment_to_2_to_the_n_with_its_bits_mod_2_to_the_n(mcl, n, seed):
    # bits of 2^n mod 2^n: all zeros, so <a_L, 2^n> = 0 != 2^n.
    data, commitments = dishonest([1 << n], [0] * n, n, mcl, seed)
    assert_rejected(data, commitments, n, mcl)


@pytest.mark.parametrize("n", [8, 16, 32, 64])
def test_commitment_to_2_to_the_n_with_a_two_in_the_top_bit(mcl, n):
    # <a_L, 2^n> = 2 * 2^(n-1) = 2^n: the linear relation holds, a_L o a_R = 0 does not.
    a_l = [0] * (n - 1) + [2]
    assert sum(b << i for i, b in enumerate(a_l)) == 1 << n
    data, commitments = dishonest([1 << n], a_l, n, mcl)
    assert_rejected(data, commitments, n, mcl)


@pytest.mark.parametrize("n", [8, 32])
def test_commitment_to_2_to_the_n_with_a_two_in_the_low_bit(mcl, n):
    # 2 + 2 + 4 + ... + 2^(n-1) = 2^n.
    a_l = [2] + [1] * (n - 1)
    assert sum(b << i for i, b in enumerate(a_l)) == 1 << n
    data, commitments = dishonest([1 << n], a_l, n, mcl)
    assert_rejected(data, commitments, n, mcl)


@pytest.mark.parametrize("n", [8, 32, 64])
def test_commitment_to_minus_one_with_all_ones(mcl, n):
    # v = r - 1 ("-1"); a_L = the bits of 2^n - 1.
    data, commitments = dishonest([R - 1], [1] * n, n, mcl)
    assert_rejected(data, commitments, n, mcl)


@pytest.mark.parametrize("n", [8, 32])
def test_commitment_to_minus_one_with_its_low_bits(mcl, n):
    data, commitments = dishonest([R - 1], bits((R - 1) % (1 << n), n), n, mcl)
    assert_rejected(data, commitments, n, mcl)


@pytest.mark.parametrize("n", [8, 32])
def test_commitment_to_minus_one_with_a_minus_one_bit(mcl, n):
    # a_L = (-1, 0, ..., 0): <a_L, 2^n> = -1 = v mod r, but -1 is no bit.
    a_l = [R - 1] + [0] * (n - 1)
    data, commitments = dishonest([R - 1], a_l, n, mcl)
    assert_rejected(data, commitments, n, mcl)


@pytest.mark.parametrize(("value", "a_l_prefix"), [
    (5, [1, 2]),        # 1 + 2*2 = 5
    (3, [3]),           # 3*1 = 3
    (6, [0, 3]),        # 3*2 = 6
    (0, [2, R - 1]),    # 2 - 2 = 0
    (200, [0, 0, 0, 25]),  # 25*8 = 200
])
def test_in_range_value_with_non_bit_entries(mcl, value, a_l_prefix):
    n = 8
    a_l = a_l_prefix + [0] * (n - len(a_l_prefix))
    assert sum(b * (1 << i) for i, b in enumerate(a_l)) % R == value
    data, commitments = dishonest([value], a_l, n, mcl)
    assert_rejected(data, commitments, n, mcl)


def test_bits_of_another_value(mcl):
    data, commitments = dishonest([5], bits(6, 8), 8, mcl)
    assert_rejected(data, commitments, 8, mcl)


@pytest.mark.parametrize("bad_index", [0, 1])
def test_aggregated_proof_with_one_out_of_range_value(mcl, bad_index):
    n = 8
    values = [17, 17]
    values[bad_index] = 1 << n
    a_l = bits(17, n) + bits(17, n)
    a_l[bad_index * n:(bad_index + 1) * n] = [0] * (n - 1) + [2]
    data, commitments = dishonest(values, a_l, n, mcl)
    assert_rejected(data, commitments, n, mcl)


def test_aggregated_proof_of_a_value_spilling_into_the_next_block(mcl):
    # 2^8 expressed by the first block's bits "carrying" into the second: v0 = 256, v1 = 0,
    # a_L = (0..0 | 1, 0..0). Each block must stand for its own value.
    n = 8
    a_l = [0] * n + [1] + [0] * (n - 1)
    data, commitments = dishonest([256, 0], a_l, n, mcl)
    assert_rejected(data, commitments, n, mcl)


def test_dishonest_proof_is_rejected_on_the_python_backend_too(pure):
    data, commitments = dishonest([256], [0] * 7 + [2], 8, pure)
    assert_rejected(data, commitments, 8, pure)


# --- the honest prover refuses --------------------------------------------------------


def _prove_call(mcl, *, values, blindings=None, n=8):
    blindings = [5] * len(values) if blindings is None else blindings
    return prove(CONTEXT.transcript(), values=values, blindings=blindings, n=n, backend=mcl,
                 rng=KeccakRng(b"refuse"))


@pytest.mark.parametrize("n", [8, 16, 32, 64])
@pytest.mark.parametrize("offset", [-1, 0], ids=["minus1", "two_to_n"])
def test_prove_refuses_values_just_outside_the_range(mcl, n, offset):
    value = -1 if offset == -1 else 1 << n
    with pytest.raises(ValueOutOfRangeError):
        _prove_call(mcl, values=[value], n=n)


@pytest.mark.parametrize("value", [R - 1, R, 2**256, -(2**64)])
def test_prove_refuses_large_and_negative_values(mcl, value):
    with pytest.raises(ValueOutOfRangeError):
        _prove_call(mcl, values=[value])


@pytest.mark.parametrize("value", [1.0, "1", None, b"\x01", True, False, 2**8 + 0.5],
                         ids=["float", "str", "none", "bytes", "true", "false", "float2"])
def test_prove_refuses_non_int_values(mcl, value):
    with pytest.raises(ValueOutOfRangeError):
        _prove_call(mcl, values=[value])


def test_prove_refuses_one_bad_value_among_good_ones(mcl):
    with pytest.raises(ValueOutOfRangeError):
        _prove_call(mcl, values=[1, 2, 256, 3])


@pytest.mark.parametrize("blinding", [0, R, R + 1, -1, True, 1.0, "5", None],
                         ids=["zero", "r", "r+1", "minus1", "true", "float", "str", "none"])
def test_prove_refuses_bad_blindings(mcl, blinding):
    with pytest.raises(ValueOutOfRangeError):
        _prove_call(mcl, values=[1], blindings=[blinding])


@pytest.mark.parametrize(("n", "m"), [(7, 1), (128, 1), (0, 1), (9, 1), (8, 3), (8, 0),
                                      (8, 5), (8, 2 * MAX_AGGREGATION)],
                         ids=lambda x: str(x))
def test_prove_refuses_undefined_parameters(mcl, n, m):
    with pytest.raises(ParameterError):
        _prove_call(mcl, values=[1] * m, n=n)


@pytest.mark.parametrize("count", [0, 2])
def test_prove_refuses_blinding_count_mismatch(mcl, count):
    with pytest.raises(ParameterError):
        _prove_call(mcl, values=[1], blindings=[5] * count)


def test_prove_refusal_leaves_nothing_usable(mcl):
    """A refused call raises before returning anything; the boundary value itself works."""
    proof, commitments = _prove_call(mcl, values=[255])
    check_proof(proof, commitments, 8, backend=mcl)
    with pytest.raises(ValueOutOfRangeError):
        _prove_call(mcl, values=[256])
