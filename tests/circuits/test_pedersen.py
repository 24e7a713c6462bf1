"""Pedersen commitments: the formula, opening, homomorphism, and input checks."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.backend import get_backend
from circuits.constants import CURVE_ORDER
from circuits.encoding import G1Affine, bytes_to_point, point_to_bytes
from circuits.errors import DecodeError, ValueOutOfRangeError
from circuits.generators import PedersenGens
from circuits.pedersen import commit, opens, sum_commitments
from tests.circuits.conftest import KeccakRng

R = CURVE_ORDER


@pytest.fixture(params=["mcl", "python"])
def be(request):
    return request.getfixturevalue("mcl" if request.param == "mcl" else "pure")


def reference_commit(pyecc, value, blinding):
    g = pyecc.from_affine(PedersenGens.G_AFFINE)
    h = pyecc.from_affine(PedersenGens.H_AFFINE)
    return point_to_bytes(pyecc.to_affine(pyecc.add(pyecc.mul(g, value), pyecc.mul(h, blinding))))


@pytest.mark.parametrize(("value", "blinding"), [
    (0, 1), (1, 1), (2**32 - 1, 12345), (2**64 - 1, R - 1), (R - 1, 2**253 + 1),
])
def test_commit_matches_reference_formula(be, pyecc, value, blinding):
    assert commit(value, blinding, backend=be) == reference_commit(pyecc, value, blinding)


def test_commit_to_zero_with_blinding_one_is_h(be):
    assert commit(0, 1, backend=be) == point_to_bytes(PedersenGens.H_AFFINE)


def test_commit_is_64_canonical_bytes(be):
    c = commit(42, 99, backend=be)
    assert isinstance(c, bytes)
    assert len(c) == 64
    assert bytes_to_point(c) is not None


def test_opens_accepts_the_right_opening(be):
    c = commit(1000, 777, backend=be)
    assert opens(c, 1000, 777, backend=be)


@pytest.mark.parametrize(("value", "blinding"), [
    (1001, 777), (999, 777), (1000, 778), (1000, 776), (777, 1000), (1000 + R, 777),
    (1000, 777 + R), (-1, 777), (1000, 0),
])
def test_opens_rejects_a_wrong_opening(be, value, blinding):
    c = commit(1000, 777, backend=be)
    assert opens(c, value, blinding, backend=be) is False


def test_opens_rejects_malformed_commitment_with_decode_error(be):
    with pytest.raises(DecodeError):
        opens(b"\x00" * 64, 0, 1, backend=be)
    with pytest.raises(DecodeError):
        opens(b"\x01" * 63, 0, 1, backend=be)
    with pytest.raises(DecodeError):
        opens((1).to_bytes(32, "big") + (3).to_bytes(32, "big"), 0, 1, backend=be)


@pytest.mark.parametrize(("value", "blinding"), [
    (-1, 5), (R, 5), (2**256, 5), (5, 0), (5, R), (5, -1), (5, R + 1),
])
def test_commit_rejects_out_of_range_inputs(value, blinding):
    with pytest.raises(ValueOutOfRangeError):
        commit(value, blinding)


def test_commitments_hide_with_different_blindings(be):
    assert commit(5, 1, backend=be) != commit(5, 2, backend=be)
    assert commit(5, 1, backend=be) != commit(6, 1, backend=be)


def test_sum_of_commitments_is_commitment_to_sums(be):
    rng = KeccakRng(b"pedersen-sum")
    values = [rng.below(2**32) for _ in range(20)]
    blindings = [rng() for _ in range(20)]
    commitments = [commit(v, b, backend=be) for v, b in zip(values, blindings, strict=True)]
    total = sum_commitments(commitments, backend=be)
    assert total == commit(sum(values) % R, sum(blindings) % R, backend=be)
    assert opens(total, sum(values), sum(blindings) % R, backend=be)
    assert not opens(total, sum(values) + 1, sum(blindings) % R, backend=be)


def test_sum_wraps_blindings_mod_r(be):
    # Blindings r-1 and 2 sum to 1 mod r.
    total = sum_commitments([commit(3, R - 1, backend=be), commit(4, 2, backend=be)], backend=be)
    assert total == commit(7, 1, backend=be)


def test_sum_that_cancels_is_the_identity_encoding(be):
    c1 = commit(10, 5, backend=be)
    c2 = commit(R - 10, R - 5, backend=be)
    assert sum_commitments([c1, c2], backend=be) == bytes(64)


def test_sum_of_nothing_and_of_one(be):
    c = commit(3, 4, backend=be)
    assert sum_commitments([], backend=be) == bytes(64)
    assert sum_commitments([c], backend=be) == c


def test_sum_rejects_malformed_commitments(be):
    c = commit(3, 4, backend=be)
    for bad in (bytes(64), c[:-1], c[:32] + (3).to_bytes(32, "big")):
        with pytest.raises(DecodeError):
            sum_commitments([c, bad], backend=be)


def test_backends_agree_on_commitments(mcl, pure):
    rng = KeccakRng(b"pedersen-agree")
    for _ in range(10):
        v, b = rng.below(R), rng()
        assert commit(v, b, backend=mcl) == commit(v, b, backend=pure)


def test_h_is_not_a_small_multiple_of_g(mcl):
    # Binding rests on log_G H being unknown; at least it is no small number.
    g = mcl.from_affine(G1Affine(1, 2))
    h = PedersenGens.H_AFFINE
    acc = mcl.identity()
    for _ in range(1, 1000):
        acc = mcl.add(acc, g)
        assert mcl.to_affine(acc) != h


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=R - 1),
                          st.integers(min_value=1, max_value=R - 1)),
                min_size=1, max_size=6))
def test_property_homomorphism(pairs):
    mcl = get_backend("mcl")
    commitments = [commit(v, b, backend=mcl) for v, b in pairs]
    v_sum = sum(v for v, _ in pairs) % R
    b_sum = sum(b for _, b in pairs) % R
    total = sum_commitments(commitments, backend=mcl)
    if b_sum == 0:
        return  # commit refuses blinding 0; the sum is v_sum*G
    assert total == commit(v_sum, b_sum, backend=mcl)
