"""The trust boundary: bytes in, validated values out.

Layouts (the EVM precompiles' own, PROTOCOL.md §5):

* scalar: 32 bytes, big-endian, canonical (value < r);
* point:  64 bytes, ``x || y``, each coordinate 32 bytes big-endian and < p, with
  ``y^2 = x^3 + 3``; the identity is ``(0, 0)``, accepted only where the caller allows it.

Every function here either returns a value that is valid by construction or raises
:class:`~circuits.errors.DecodeError`. Code past this module takes only such values.
"""

from typing import NamedTuple

from circuits.constants import (
    CURVE_B,
    CURVE_ORDER,
    FIELD_MODULUS,
    POINT_BYTES,
    SCALAR_BYTES,
)
from circuits.errors import DecodeError


class G1Affine(NamedTuple):
    """An affine BN254 G1 point with coordinates in [0, p); ``(0, 0)`` is the identity."""

    x: int
    y: int

    def is_identity(self) -> bool:
        """True for the point at infinity, encoded as (0, 0) as on the EVM."""
        return self.x == 0 and self.y == 0


IDENTITY = G1Affine(0, 0)


def is_on_curve(x: int, y: int) -> bool:
    """``y^2 == x^3 + 3 (mod p)`` for coordinates already reduced mod p."""
    return (y * y - x * x * x - CURVE_B) % FIELD_MODULUS == 0


def bytes_to_scalar(data: bytes) -> int:
    """Decode a canonical 32-byte big-endian scalar; rejects wrong length and values >= r."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"scalar must be bytes, got {type(data).__name__}")
    if len(data) != SCALAR_BYTES:
        raise DecodeError(f"scalar must be {SCALAR_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= CURVE_ORDER:
        raise DecodeError("scalar is not canonical: value >= group order r")
    return value


def scalar_to_bytes(value: int) -> bytes:
    """Encode a scalar in [0, r) as 32 bytes big-endian."""
    if not 0 <= value < CURVE_ORDER:
        raise ValueError("scalar out of range [0, r)")
    return value.to_bytes(SCALAR_BYTES, "big")


def bytes_to_point(data: bytes, *, allow_identity: bool = False) -> G1Affine:
    """Decode a 64-byte ``x || y`` point; rejects wrong length, coordinates >= p, points off the
    curve, and the identity unless ``allow_identity``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"point must be bytes, got {type(data).__name__}")
    if len(data) != POINT_BYTES:
        raise DecodeError(f"point must be {POINT_BYTES} bytes, got {len(data)}")
    x = int.from_bytes(data[:32], "big")
    y = int.from_bytes(data[32:], "big")
    if x >= FIELD_MODULUS or y >= FIELD_MODULUS:
        raise DecodeError("point coordinate is not canonical: value >= field modulus p")
    if x == 0 and y == 0:
        if not allow_identity:
            raise DecodeError("point is the identity, which is not allowed here")
        return IDENTITY
    if not is_on_curve(x, y):
        raise DecodeError("point is not on the curve y^2 = x^3 + 3")
    # BN254 G1 has cofactor 1: every curve point is in the prime-order group.
    return G1Affine(x, y)


def point_to_bytes(point: G1Affine) -> bytes:
    """Encode an affine point as 64 bytes ``x || y`` big-endian (identity: 64 zero bytes)."""
    return point.x.to_bytes(32, "big") + point.y.to_bytes(32, "big")


def u32(value: int) -> bytes:
    """4-byte big-endian unsigned integer."""
    return value.to_bytes(4, "big")


def u64(value: int) -> bytes:
    """8-byte big-endian unsigned integer."""
    return value.to_bytes(8, "big")


def u256(value: int) -> bytes:
    """32-byte big-endian unsigned integer (a Solidity ``uint256``)."""
    return value.to_bytes(32, "big")
