"""Generators: the hash to G1 re-derived independently from its documented definition, and
the properties every generator must have (on the curve, distinct, prefix-stable)."""

import pytest
from py_ecc import optimized_bn128 as bn

from circuits.constants import (
    BP_G_LABEL,
    BP_H_LABEL,
    BP_U_LABEL,
    FIELD_MODULUS,
    PEDERSEN_H_LABEL,
)
from circuits.encoding import G1Affine, is_on_curve
from circuits.generators import (
    BulletproofGens,
    PedersenGens,
    bulletproof_gens,
    hash_to_g1,
    pedersen_gens,
)
from circuits.hashing import keccak256
from tests.circuits.reference import reference_hash_to_g1

P = FIELD_MODULUS


LABELS = [PEDERSEN_H_LABEL, BP_G_LABEL, BP_H_LABEL, BP_U_LABEL]


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("index", [0, 1, 2, 7, 63, 255, 256, 2047])
def test_hash_to_g1_matches_independent_reimplementation(label, index):
    assert hash_to_g1(label, index) == reference_hash_to_g1(label, index)


def test_some_generator_needs_more_than_one_try():
    # Otherwise the reference test above would not exercise the "increment".
    counters = []
    for index in range(64):
        point = hash_to_g1(BP_G_LABEL, index)
        prefix = (b"ZKMETER_H2G1_V1_" + bytes([len(BP_G_LABEL)]) + BP_G_LABEL
                  + index.to_bytes(4, "big"))
        first_x = int.from_bytes(keccak256(prefix, b"\x00"), "big") % P
        counters.append(point.x != first_x)
    assert any(counters)
    assert not all(counters)


@pytest.mark.parametrize("label", LABELS)
def test_generators_are_on_the_curve_with_even_y(label):
    for index in range(64):
        point = hash_to_g1(label, index)
        assert is_on_curve(point.x, point.y)
        assert bn.is_on_curve((bn.FQ(point.x), bn.FQ(point.y), bn.FQ.one()), bn.b)
        assert 0 <= point.x < P
        assert 0 <= point.y < P
        assert point.y % 2 == 0
        assert not point.is_identity()


def test_generators_are_distinct_across_labels_and_indices():
    points = [hash_to_g1(label, i) for label in LABELS for i in range(256)]
    points += [PedersenGens.G_AFFINE]
    xs = {p.x for p in points}
    # Distinct x: no two are equal and none is the negation of another.
    assert len(xs) == len(points)


def test_label_length_is_bound_into_the_hash():
    # "bulletproofs.G" with index bytes shifted must not collide with a longer label.
    assert hash_to_g1(b"ab", 0) != hash_to_g1(b"a", 0)
    assert hash_to_g1(b"a", 1) != hash_to_g1(b"a", 0)


@pytest.mark.parametrize("label", [b"", b"x" * 256])
def test_hash_to_g1_rejects_bad_label_length(label):
    with pytest.raises(ValueError):
        hash_to_g1(label, 0)


def test_pedersen_bases():
    assert G1Affine(1, 2) == PedersenGens.G_AFFINE
    assert reference_hash_to_g1(b"pedersen.H", 0) == PedersenGens.H_AFFINE
    assert PedersenGens.H_AFFINE != PedersenGens.G_AFFINE
    assert PedersenGens.H_AFFINE.x != 1  # not -G either


def test_inner_product_base_u():
    assert reference_hash_to_g1(b"bulletproofs.U", 0) == BulletproofGens.U_AFFINE


@pytest.mark.parametrize("backend_name", ["mcl", "python"])
def test_pedersen_gens_in_native_form_match_affine(request, backend_name):
    be = request.getfixturevalue("mcl" if backend_name == "mcl" else "pure")
    gens = PedersenGens(be)
    assert be.to_affine(gens.G) == G1Affine(1, 2)
    assert be.to_affine(gens.H) == PedersenGens.H_AFFINE
    assert pedersen_gens(be) is pedersen_gens(be)


@pytest.mark.parametrize("backend_name", ["mcl", "python"])
def test_bulletproof_gens_growth_keeps_the_prefix(request, backend_name):
    be = request.getfixturevalue("mcl" if backend_name == "mcl" else "pure")
    gens = BulletproofGens(be)
    small_g = [be.to_affine(p) for p in gens.G(8)]
    small_h = [be.to_affine(p) for p in gens.H(8)]
    big_g = [be.to_affine(p) for p in gens.G(64)]
    big_h = [be.to_affine(p) for p in gens.H(64)]
    assert len(big_g) == len(big_h) == 64
    assert big_g[:8] == small_g
    assert big_h[:8] == small_h
    assert big_g == [reference_hash_to_g1(b"bulletproofs.G", i) for i in range(64)]
    assert big_h == [reference_hash_to_g1(b"bulletproofs.H", i) for i in range(64)]
    # Asking for fewer after growing gives the prefix again.
    assert [be.to_affine(p) for p in gens.G(4)] == small_g[:4]


def test_bulletproof_gens_of_a_fresh_instance_equal_the_grown_cached_one(mcl):
    cached = bulletproof_gens(mcl)
    cached.G(128)
    fresh = BulletproofGens(mcl)
    assert [mcl.to_affine(p) for p in fresh.G(16)] == [mcl.to_affine(p) for p in cached.G(16)]
    assert bulletproof_gens(mcl) is cached


def test_g_and_h_vectors_differ(mcl):
    gens = BulletproofGens(mcl)
    gs = {mcl.to_affine(p) for p in gens.G(32)}
    hs = {mcl.to_affine(p) for p in gens.H(32)}
    assert not gs & hs
    assert BulletproofGens.U_AFFINE not in gs | hs
