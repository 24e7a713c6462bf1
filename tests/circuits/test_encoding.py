"""The trust boundary: scalars and points in bytes are decoded strictly or rejected."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.constants import CURVE_ORDER, FIELD_MODULUS
from circuits.encoding import (
    IDENTITY,
    G1Affine,
    bytes_to_point,
    bytes_to_scalar,
    is_on_curve,
    point_to_bytes,
    scalar_to_bytes,
    u32,
    u64,
    u256,
)
from circuits.errors import CircuitsError, DecodeError
from circuits.generators import hash_to_g1

R, P = CURVE_ORDER, FIELD_MODULUS
G_BYTES = (1).to_bytes(32, "big") + (2).to_bytes(32, "big")
SOME_POINT = hash_to_g1(b"tests.encoding", 0)


def be32(value: int) -> bytes:
    return value.to_bytes(32, "big")


# --- scalars -----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_bytes_to_scalar_rejects_wrong_length(length):
    with pytest.raises(DecodeError):
        bytes_to_scalar(b"\x01" * length)


@pytest.mark.parametrize("value", [R, R + 1, 2 * R, (1 << 256) - 1, (1 << 255)],
                         ids=["r", "r+1", "2r", "2^256-1", "2^255"])
def test_bytes_to_scalar_rejects_non_canonical(value):
    with pytest.raises(DecodeError):
        bytes_to_scalar(be32(value))


@pytest.mark.parametrize("value", [0, 1, 2**64, R - 2, R - 1])
def test_bytes_to_scalar_accepts_canonical(value):
    assert bytes_to_scalar(be32(value)) == value


def test_bytes_to_scalar_is_big_endian():
    assert bytes_to_scalar(b"\x00" * 31 + b"\x01") == 1
    assert bytes_to_scalar(b"\x01" + b"\x00" * 31) == 1 << 248


@pytest.mark.parametrize("bad", ["0" * 32, 5, None, [0] * 32, 1.5])
def test_bytes_to_scalar_rejects_non_bytes(bad):
    with pytest.raises(DecodeError):
        bytes_to_scalar(bad)


def test_bytes_to_scalar_accepts_bytearray_and_memoryview():
    assert bytes_to_scalar(bytearray(be32(7))) == 7
    assert bytes_to_scalar(memoryview(be32(7))) == 7


@pytest.mark.parametrize("value", [-1, R, 1 << 256])
def test_scalar_to_bytes_refuses_out_of_range(value):
    with pytest.raises(ValueError):
        scalar_to_bytes(value)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=R - 1))
def test_property_scalar_round_trip(value):
    data = scalar_to_bytes(value)
    assert len(data) == 32
    assert bytes_to_scalar(data) == value


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_property_scalar_decoding_accepts_exactly_the_canonical_encodings(data):
    value = int.from_bytes(data, "big")
    if value < R:
        assert bytes_to_scalar(data) == value
        assert scalar_to_bytes(value) == data
    else:
        with pytest.raises(DecodeError):
            bytes_to_scalar(data)


# --- points ------------------------------------------------------------------------------


def test_generator_decodes():
    assert bytes_to_point(G_BYTES) == G1Affine(1, 2)


@pytest.mark.parametrize("length", [0, 1, 32, 63, 65, 128])
def test_bytes_to_point_rejects_wrong_length(length):
    data = (G_BYTES * 3)[:length]
    with pytest.raises(DecodeError):
        bytes_to_point(data)
    with pytest.raises(DecodeError):
        bytes_to_point(data, allow_identity=True)


def test_bytes_to_point_rejects_x_not_below_p():
    # (x + p, y) would be the same point were coordinates reduced: it must be rejected.
    data = be32(SOME_POINT.x + P) + be32(SOME_POINT.y)
    assert SOME_POINT.x + P < 1 << 256
    with pytest.raises(DecodeError):
        bytes_to_point(data)


def test_bytes_to_point_rejects_y_not_below_p():
    data = be32(SOME_POINT.x) + be32(SOME_POINT.y + P)
    with pytest.raises(DecodeError):
        bytes_to_point(data)


@pytest.mark.parametrize("coord", ["x", "y"])
@pytest.mark.parametrize("value", [P, (1 << 256) - 1])
def test_bytes_to_point_rejects_coordinate_p_and_above(coord, value):
    data = be32(value) + be32(2) if coord == "x" else be32(1) + be32(value)
    with pytest.raises(DecodeError):
        bytes_to_point(data)


def test_bytes_to_point_rejects_generator_with_y_plus_p():
    assert 2 + P < 1 << 256
    with pytest.raises(DecodeError):
        bytes_to_point(be32(1) + be32(2 + P))


@pytest.mark.parametrize(("x", "y"), [(1, 3), (1, 1), (0, 1), (2, 2), (1, 0), (0, 3)])
def test_bytes_to_point_rejects_off_curve(x, y):
    assert not is_on_curve(x, y)
    with pytest.raises(DecodeError):
        bytes_to_point(be32(x) + be32(y))
    with pytest.raises(DecodeError):
        bytes_to_point(be32(x) + be32(y), allow_identity=True)


def test_bytes_to_point_rejects_a_flipped_bit_of_a_valid_point():
    data = bytearray(point_to_bytes(SOME_POINT))
    for position in (0, 31, 32, 63):
        tampered = bytearray(data)
        tampered[position] ^= 0x01
        with pytest.raises(DecodeError):
            bytes_to_point(bytes(tampered))


def test_bytes_to_point_accepts_the_negated_point():
    negated = G1Affine(SOME_POINT.x, P - SOME_POINT.y)
    assert bytes_to_point(point_to_bytes(negated)) == negated


def test_bytes_to_point_rejects_identity_by_default():
    with pytest.raises(DecodeError):
        bytes_to_point(bytes(64))


def test_bytes_to_point_accepts_identity_when_allowed():
    decoded = bytes_to_point(bytes(64), allow_identity=True)
    assert decoded == IDENTITY
    assert decoded.is_identity()


@pytest.mark.parametrize("bad", ["0" * 64, 0, None, list(range(64)), 3.0])
def test_bytes_to_point_rejects_non_bytes(bad):
    with pytest.raises(DecodeError):
        bytes_to_point(bad)


def test_bytes_to_point_accepts_bytearray_and_memoryview():
    assert bytes_to_point(bytearray(G_BYTES)) == G1Affine(1, 2)
    assert bytes_to_point(memoryview(G_BYTES)) == G1Affine(1, 2)


def test_decode_error_is_a_circuits_error_and_a_value_error():
    with pytest.raises(CircuitsError):
        bytes_to_point(b"")
    with pytest.raises(ValueError):
        bytes_to_scalar(b"")


def test_point_to_bytes_layout_is_x_then_y_big_endian():
    data = point_to_bytes(SOME_POINT)
    assert len(data) == 64
    assert data[:32] == be32(SOME_POINT.x)
    assert data[32:] == be32(SOME_POINT.y)
    assert point_to_bytes(IDENTITY) == bytes(64)
    assert point_to_bytes(G1Affine(1, 2)) == G_BYTES


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(min_value=0, max_value=2**32 - 1))
def test_property_point_round_trip(label, index):
    point = hash_to_g1(label, index)
    data = point_to_bytes(point)
    assert bytes_to_point(data) == point
    assert bytes_to_point(data, allow_identity=True) == point


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=64, max_size=64))
def test_property_point_decoding_accepts_exactly_canonical_curve_points(data):
    x, y = int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big")
    valid = x < P and y < P and (y * y - x**3 - 3) % P == 0
    if valid:
        assert bytes_to_point(data) == G1Affine(x, y)
    else:
        with pytest.raises(DecodeError):
            bytes_to_point(data, allow_identity=False)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=P - 1), st.integers(min_value=0, max_value=P - 1))
def test_property_random_coordinates_are_rejected_unless_on_curve(x, y):
    data = be32(x) + be32(y)
    if (x, y) == (0, 0):
        assert bytes_to_point(data, allow_identity=True) == IDENTITY
    elif (y * y - x**3 - 3) % P == 0:
        assert bytes_to_point(data) == G1Affine(x, y)
    else:
        with pytest.raises(DecodeError):
            bytes_to_point(data)


def test_fixed_width_integers():
    assert u32(1) == b"\x00\x00\x00\x01"
    assert u64(2**64 - 1) == b"\xff" * 8
    assert u256(31337) == be32(31337)
    with pytest.raises(OverflowError):
        u32(2**32)
    with pytest.raises(OverflowError):
        u64(-1)
