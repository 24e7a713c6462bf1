"""Fast backend: the mcl library from the ``mclbn256`` wheel, called through ctypes.

Pitfalls of mclbn256 1.3.5 handled here: the wheel initialises mcl to another 254-bit curve, so
we re-initialise it to alt_bn128 (``MCL_BN_SNARK1`` = 4) before any use, in every process that
imports this module; its ``base_point()`` and ``serialize()`` belong to that other curve, so
points cross the boundary only as affine coordinates, written and read with the ``...Mod``
little-endian setters (the plain setters mask to 253 bits). mcl's scalar multiplication is
not constant-time; see PROTOCOL.md §7.
"""

import ctypes
from collections.abc import Sequence
from typing import Any

from circuits.backend.base import GroupBackend, Point
from circuits.encoding import IDENTITY, G1Affine
from circuits.errors import BackendError

_MCL_BN_SNARK1 = 4  # mcl's curve id of alt_bn128 (BN254 as in the EVM)

try:  # the wheel writes its shared object to a temp dir and loads it at import
    from mclbn256 import mclbn256 as _mcl
except Exception as exc:  # pragma: no cover - depends on the platform's wheel
    raise BackendError(f"mclbn256 is not importable: {exc}") from exc

_lib: Any = _mcl.lib
if _lib.mclBn_init(_MCL_BN_SNARK1, _mcl.MCLBN_COMPILED_TIME_VAR) != 0:  # pragma: no cover
    raise BackendError("mclBn_init(MCL_BN_SNARK1) failed")

_G1: Any = _mcl.mclBnG1_bytes  # x, y, z: three Fp of 32 bytes, Jacobian, Montgomery form
_FR: Any = _mcl.mclBnFr_bytes
_FP_BYTES = 32


def _fr_array(scalars: Sequence[int]) -> Any:
    out = (_FR * len(scalars))()
    setter = _lib.mclBnFr_setLittleEndianMod
    for i, k in enumerate(scalars):
        setter(out[i], k.to_bytes(32, "little"), 32)
    return out


class MclBackend(GroupBackend):
    """G1 arithmetic with mcl (native Jacobian points, native ``mulVec`` MSM)."""

    name = "mcl"

    def from_affine(self, point: G1Affine) -> Point:
        out = _G1()
        if point.is_identity():
            return out  # all-zero is mcl's identity
        set_fp = _lib.mclBnFp_setLittleEndianMod
        set_fp(ctypes.byref(out, 0), point.x.to_bytes(32, "little"), 32)
        set_fp(ctypes.byref(out, _FP_BYTES), point.y.to_bytes(32, "little"), 32)
        _lib.mclBnFp_setInt(ctypes.byref(out, 2 * _FP_BYTES), ctypes.c_int64(1))
        return out

    def to_affine(self, point: Point) -> G1Affine:
        if _lib.mclBnG1_isZero(point):
            return IDENTITY
        norm = _G1()
        _lib.mclBnG1_normalize(norm, point)
        buf = ctypes.create_string_buffer(_FP_BYTES)
        get_fp = _lib.mclBnFp_getLittleEndian
        coords = []
        for offset in (0, _FP_BYTES):
            size = get_fp(buf, _FP_BYTES, ctypes.byref(norm, offset))
            if size <= 0:  # pragma: no cover - mcl contract
                raise BackendError("mclBnFp_getLittleEndian failed")
            coords.append(int.from_bytes(buf.raw[:size], "little"))
        return G1Affine(coords[0], coords[1])

    def identity(self) -> Point:
        return _G1()

    def add(self, a: Point, b: Point) -> Point:
        out = _G1()
        _lib.mclBnG1_add(out, a, b)
        return out

    def neg(self, a: Point) -> Point:
        out = _G1()
        _lib.mclBnG1_neg(out, a)
        return out

    def mul(self, a: Point, k: int) -> Point:
        out = _G1()
        scalar = _FR()
        _lib.mclBnFr_setLittleEndianMod(scalar, k.to_bytes(32, "little"), 32)
        _lib.mclBnG1_mul(out, a, scalar)
        return out

    def msm(self, points: Sequence[Point], scalars: Sequence[int]) -> Point:
        n = len(points)
        if n != len(scalars):
            raise ValueError("msm: points and scalars differ in length")
        out = _G1()
        if n == 0:
            return out
        _lib.mclBnG1_mulVec(out, (_G1 * n)(*points), _fr_array(scalars), n)
        return out

    def is_identity(self, a: Point) -> bool:
        return bool(_lib.mclBnG1_isZero(a))

    def eq(self, a: Point, b: Point) -> bool:
        return bool(_lib.mclBnG1_isEqual(a, b))
