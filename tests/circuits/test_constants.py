"""Constants: the curve parameters match py_ecc's, domain tags are fixed-width and versioned,
and keccak256 is the EVM's keccak (not NIST SHA3-256) in both implementations."""

import re

import pytest
from py_ecc import optimized_bn128 as bn

from circuits import constants
from circuits.hashing import _keccak_pycryptodome, keccak256

DOMAIN_TAGS = {
    "H2C_DOMAIN": constants.H2C_DOMAIN,
    "RANGE_PROOF_DOMAIN": constants.RANGE_PROOF_DOMAIN,
}


def test_field_modulus_is_py_ecc_bn128_field_modulus():
    assert bn.field_modulus == constants.FIELD_MODULUS


def test_curve_order_is_py_ecc_bn128_curve_order():
    assert bn.curve_order == constants.CURVE_ORDER


def test_generator_is_py_ecc_bn128_g1():
    x, y = bn.normalize(bn.G1)
    assert (int(x), int(y)) == constants.G1_GENERATOR


def test_curve_b_is_py_ecc_bn128_b():
    assert int(bn.b) == constants.CURVE_B


def test_generator_has_order_r():
    assert bn.is_inf(bn.multiply(bn.G1, constants.CURVE_ORDER))
    assert not bn.is_inf(bn.multiply(bn.G1, constants.CURVE_ORDER - 1))


def test_moduli_are_distinct_254_bit_values_and_p_is_3_mod_4():
    # p = 3 (mod 4) is what the hash-to-curve square root rests on.
    assert constants.FIELD_MODULUS != constants.CURVE_ORDER
    assert constants.FIELD_MODULUS.bit_length() == 254
    assert constants.CURVE_ORDER.bit_length() == 254
    assert constants.FIELD_MODULUS % 4 == 3


@pytest.mark.parametrize("name", sorted(DOMAIN_TAGS))
def test_domain_tag_is_16_bytes(name):
    tag = DOMAIN_TAGS[name]
    assert isinstance(tag, bytes)
    assert len(tag) == 16


@pytest.mark.parametrize("name", sorted(DOMAIN_TAGS))
def test_domain_tag_carries_a_version(name):
    assert re.search(rb"V\d+", DOMAIN_TAGS[name]), DOMAIN_TAGS[name]


def test_domain_tags_are_distinct_and_ascii():
    tags = list(DOMAIN_TAGS.values())
    assert len(set(tags)) == len(tags)
    for tag in tags:
        tag.decode("ascii")


def test_generator_labels_are_distinct():
    labels = [constants.PEDERSEN_H_LABEL, constants.BP_G_LABEL, constants.BP_H_LABEL,
              constants.BP_U_LABEL]
    assert len(set(labels)) == len(labels)


def test_encoding_sizes_and_parameters():
    assert constants.SCALAR_BYTES == 32
    assert constants.POINT_BYTES == 64
    assert constants.ALLOWED_BIT_SIZES == (8, 16, 32, 64)
    assert constants.DEFAULT_BIT_SIZE in constants.ALLOWED_BIT_SIZES
    assert constants.RANGE_PROOF_VERSION == 1
    # A power of two: aggregation sizes are powers of two up to it.
    assert constants.MAX_AGGREGATION & (constants.MAX_AGGREGATION - 1) == 0


# keccak256 known answers (the EVM's KECCAK256; NIST SHA3-256("") is a7ffc6f8...).
KECCAK_VECTORS = [
    (b"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
    (b"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
]


@pytest.mark.parametrize(("data", "digest"), KECCAK_VECTORS)
def test_keccak256_known_answers(data, digest):
    assert keccak256(data).hex() == digest


@pytest.mark.parametrize(("data", "digest"), KECCAK_VECTORS)
def test_keccak256_pycryptodome_fallback_known_answers(data, digest):
    assert _keccak_pycryptodome(data).hex() == digest


def test_keccak256_hashes_the_concatenation_of_parts():
    assert keccak256(b"ab", b"", b"c") == keccak256(b"abc")


@pytest.mark.parametrize("length", [0, 1, 135, 136, 137, 1000])
def test_keccak256_implementations_agree_across_block_boundaries(length):
    data = bytes(range(256)) * 4
    assert keccak256(data[:length]) == _keccak_pycryptodome(data[:length])
