"""Pure-Python backend: Jacobian coordinates over gmpy2 integers, Pippenger MSM.

The fallback wherever the mcl wheel is missing or fails its self-test. Curve
``y^2 = x^3 + 3`` (a = 0); a point (X, Y, Z) stands for (X/Z^2, Y/Z^3); Z = 0 is the identity.
Formulas: dbl-2009-l and add-2007-bl from the Explicit-Formulas Database.
"""

from collections.abc import Sequence

import gmpy2

from circuits.backend.base import GroupBackend, Point
from circuits.constants import FIELD_MODULUS
from circuits.encoding import IDENTITY, G1Affine

_P = gmpy2.mpz(FIELD_MODULUS)
_ZERO = gmpy2.mpz(0)
_ONE = gmpy2.mpz(1)
_INF = (_ONE, _ONE, _ZERO)

Jacobian = tuple[gmpy2.mpz, gmpy2.mpz, gmpy2.mpz]


def _dbl(pt: Jacobian) -> Jacobian:
    """2P (dbl-2009-l, a = 0)."""
    x, y, z = pt
    if not z or not y:
        return _INF
    a = x * x % _P
    b = y * y % _P
    c = b * b % _P
    d = 2 * ((x + b) * (x + b) - a - c) % _P
    e = 3 * a % _P
    x3 = (e * e - 2 * d) % _P
    y3 = (e * (d - x3) - 8 * c) % _P
    z3 = 2 * y * z % _P
    return (x3, y3, z3)


def _add(p1: Jacobian, p2: Jacobian) -> Jacobian:
    """P1 + P2 (add-2007-bl; mixed addition when Z2 = 1)."""
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    if not z1:
        return p2
    if not z2:
        return p1
    z1z1 = z1 * z1 % _P
    if z2 == 1:
        z2z2 = _ONE
        u1 = x1
        s1 = y1
    else:
        z2z2 = z2 * z2 % _P
        u1 = x1 * z2z2 % _P
        s1 = y1 * z2 * z2z2 % _P
    u2 = x2 * z1z1 % _P
    s2 = y2 * z1 * z1z1 % _P
    h = (u2 - u1) % _P
    rr = 2 * (s2 - s1) % _P
    if not h:
        return _dbl(p1) if not rr else _INF
    i = 4 * h * h % _P
    j = h * i % _P
    v = u1 * i % _P
    x3 = (rr * rr - j - 2 * v) % _P
    y3 = (rr * (v - x3) - 2 * s1 * j) % _P
    z3 = ((z1 + z2) * (z1 + z2) - z1z1 - z2z2) * h % _P
    return (x3, y3, z3)


def _neg(pt: Jacobian) -> Jacobian:
    return (pt[0], (-pt[1]) % _P, pt[2])


def _mul(pt: Jacobian, k: int) -> Jacobian:
    """k * P with a fixed 4-bit window."""
    if not k or not pt[2]:
        return _INF
    table = [_INF, pt]
    for _ in range(14):
        table.append(_add(table[-1], pt))
    acc = _INF
    for shift in range((k.bit_length() + 3) // 4 * 4 - 4, -4, -4):
        acc = _dbl(_dbl(_dbl(_dbl(acc))))
        digit = (k >> shift) & 0xF
        if digit:
            acc = _add(acc, table[digit])
    return acc


def _window_bits(n: int) -> int:
    """Pippenger window width for n terms (about log2(n) - 3, at least 3)."""
    return max(3, n.bit_length() - 3)


def _pippenger(points: Sequence[Jacobian], scalars: Sequence[int]) -> Jacobian:
    """sum k_i P_i by the bucket method."""
    c = _window_bits(len(points))
    mask = (1 << c) - 1
    top = max(scalars).bit_length()
    acc = _INF
    for shift in range((top + c - 1) // c * c - c, -c, -c):
        for _ in range(c):
            acc = _dbl(acc)
        buckets: list[Jacobian | None] = [None] * (mask + 1)
        for pt, k in zip(points, scalars, strict=True):
            digit = (k >> shift) & mask
            if digit:
                bucket = buckets[digit]
                buckets[digit] = pt if bucket is None else _add(bucket, pt)
        running = _INF
        window_sum = _INF
        for digit in range(mask, 0, -1):
            bucket = buckets[digit]
            if bucket is not None:
                running = _add(running, bucket)
            if running[2]:
                window_sum = _add(window_sum, running)
        acc = _add(acc, window_sum)
    return acc


class PureBackend(GroupBackend):
    """G1 arithmetic in Python with gmpy2 integers."""

    name = "python"

    def from_affine(self, point: G1Affine) -> Point:
        if point.is_identity():
            return _INF
        return (gmpy2.mpz(point.x), gmpy2.mpz(point.y), _ONE)

    def to_affine(self, point: Point) -> G1Affine:
        x, y, z = point
        if not z:
            return IDENTITY
        zinv = gmpy2.invert(z, _P)
        zinv2 = zinv * zinv % _P
        return G1Affine(int(x * zinv2 % _P), int(y * zinv2 * zinv % _P))

    def identity(self) -> Point:
        return _INF

    def add(self, a: Point, b: Point) -> Point:
        return _add(a, b)

    def neg(self, a: Point) -> Point:
        return _neg(a)

    def mul(self, a: Point, k: int) -> Point:
        return _mul(a, k)

    def msm(self, points: Sequence[Point], scalars: Sequence[int]) -> Point:
        pairs = [(pt, k) for pt, k in zip(points, scalars, strict=True) if k and pt[2]]
        if not pairs:
            return _INF
        if len(pairs) < 8:
            acc = _INF
            for pt, k in pairs:
                acc = _add(acc, _mul(pt, k))
            return acc
        return _pippenger([pt for pt, _ in pairs], [k for _, k in pairs])

    def is_identity(self, a: Point) -> bool:
        return not a[2]
