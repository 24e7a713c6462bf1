"""Nothing-up-my-sleeve generators by a versioned keccak256 try-and-increment hash to G1.

``hash_to_g1(label, index)`` (PROTOCOL.md §3): for counter = 0, 1, ...

    h   = keccak256("ZKMETER_H2G1_V1_" || u8(len(label)) || label || u32(index) || u8(counter))
    x   = int(h) mod p
    rhs = x^3 + 3 mod p
    y   = rhs^((p + 1) / 4) mod p            (p = 3 mod 4, so this is a square root if any)
    if y^2 == rhs: return (x, y if y is even else p - y)

Nobody knows a discrete logarithm between any two of these points or the standard
generator G = (1, 2). Generators are types: :class:`PedersenGens` holds (G, H);
:class:`BulletproofGens` holds the vectors G_i, H_i and the inner-product base U, grows on
demand, and growing keeps the prefix.
"""

from collections.abc import Sequence
from functools import cache

from circuits.backend import GroupBackend, Point
from circuits.constants import (
    BP_G_LABEL,
    BP_H_LABEL,
    BP_U_LABEL,
    CURVE_B,
    FIELD_MODULUS,
    G1_GENERATOR,
    H2C_DOMAIN,
    PEDERSEN_H_LABEL,
)
from circuits.encoding import G1Affine, u32
from circuits.hashing import keccak256

_SQRT_EXP = (FIELD_MODULUS + 1) // 4


@cache
def hash_to_g1(label: bytes, index: int) -> G1Affine:
    """The generator number ``index`` of family ``label`` (see the module docstring)."""
    if not 0 < len(label) < 256:
        raise ValueError("label must be 1..255 bytes")
    prefix = H2C_DOMAIN + bytes([len(label)]) + label + u32(index)
    for counter in range(256):
        x = int.from_bytes(keccak256(prefix, bytes([counter])), "big") % FIELD_MODULUS
        rhs = (pow(x, 3, FIELD_MODULUS) + CURVE_B) % FIELD_MODULUS
        y = pow(rhs, _SQRT_EXP, FIELD_MODULUS)
        if y * y % FIELD_MODULUS == rhs:
            return G1Affine(x, y if y % 2 == 0 else FIELD_MODULUS - y)
    raise RuntimeError("hash_to_g1: no point in 256 tries")  # probability 2^-256


class PedersenGens:
    """The Pedersen bases: G (value, the EVM generator) and H (blinding, hashed)."""

    G_AFFINE = G1Affine(*G1_GENERATOR)
    H_AFFINE = hash_to_g1(PEDERSEN_H_LABEL, 0)

    def __init__(self, backend: GroupBackend) -> None:
        self.backend = backend
        self.G: Point = backend.from_affine(self.G_AFFINE)
        self.H: Point = backend.from_affine(self.H_AFFINE)

    def commit(self, value: int, blinding: int) -> Point:
        """C = value * G + blinding * H (both scalars already in [0, r))."""
        return self.backend.msm([self.G, self.H], [value, blinding])


class BulletproofGens:
    """The vectors G_0.., H_0.. and the inner-product base U of the range proofs."""

    U_AFFINE = hash_to_g1(BP_U_LABEL, 0)

    def __init__(self, backend: GroupBackend) -> None:
        self.backend = backend
        self.U: Point = backend.from_affine(self.U_AFFINE)
        self._g: list[Point] = []
        self._h: list[Point] = []

    def _grow(self, size: int) -> None:
        for i in range(len(self._g), size):
            self._g.append(self.backend.from_affine(hash_to_g1(BP_G_LABEL, i)))
            self._h.append(self.backend.from_affine(hash_to_g1(BP_H_LABEL, i)))

    def G(self, size: int) -> Sequence[Point]:
        """The first ``size`` of the G_i."""
        self._grow(size)
        return self._g[:size]

    def H(self, size: int) -> Sequence[Point]:
        """The first ``size`` of the H_i."""
        self._grow(size)
        return self._h[:size]


@cache
def pedersen_gens(backend: GroupBackend) -> PedersenGens:
    """The cached Pedersen bases of a backend."""
    return PedersenGens(backend)


@cache
def bulletproof_gens(backend: GroupBackend) -> BulletproofGens:
    """The cached Bulletproofs bases of a backend (grown on demand)."""
    return BulletproofGens(backend)
