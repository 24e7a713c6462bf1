"""The GLV endomorphism of the pure-Python backend: constants and scalar splitting."""

import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.backend.pure import GLV_BETA, GLV_LAMBDA, PureBackend, glv_split
from circuits.backend.pyecc import PyEccBackend
from circuits.constants import CURVE_ORDER, FIELD_MODULUS
from circuits.encoding import G1Affine

G = G1Affine(1, 2)


def test_beta_is_a_nontrivial_cube_root_of_unity_mod_p():
    assert GLV_BETA != 1
    assert pow(GLV_BETA, 3, FIELD_MODULUS) == 1


def test_lambda_is_a_nontrivial_cube_root_of_unity_mod_r():
    assert (GLV_LAMBDA * GLV_LAMBDA + GLV_LAMBDA + 1) % CURVE_ORDER == 0


def test_endomorphism_is_multiplication_by_lambda():
    ref = PyEccBackend()
    lam_g = ref.to_affine(ref.mul(ref.from_affine(G), GLV_LAMBDA))
    assert lam_g == G1Affine(G.x * GLV_BETA % FIELD_MODULUS, G.y)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=CURVE_ORDER - 1))
def test_split_recombines_and_is_short(k):
    k1, k2 = glv_split(k)
    assert (k1 + k2 * GLV_LAMBDA - k) % CURVE_ORDER == 0
    assert abs(k1).bit_length() <= 128
    assert abs(k2).bit_length() <= 128


@pytest.mark.parametrize(
    "k", [1, 2, 15, 16, GLV_LAMBDA, CURVE_ORDER - 1, CURVE_ORDER - GLV_LAMBDA, 2**253 + 7]
)
def test_glv_multiplication_matches_reference_on_edge_scalars(k):
    pure, ref = PureBackend(), PyEccBackend()
    got = pure.to_affine(pure.mul(pure.from_affine(G), k))
    assert got == ref.to_affine(ref.mul(ref.from_affine(G), k))


def test_glv_multiplication_matches_reference_on_random_points_and_scalars():
    pure, ref = PureBackend(), PyEccBackend()
    for _ in range(5):
        base_k = secrets.randbelow(CURVE_ORDER - 1) + 1
        point = ref.to_affine(ref.mul(ref.from_affine(G), base_k))
        k = secrets.randbelow(CURVE_ORDER)
        got = pure.to_affine(pure.mul(pure.from_affine(point), k))
        assert got == ref.to_affine(ref.mul(ref.from_affine(point), k))
