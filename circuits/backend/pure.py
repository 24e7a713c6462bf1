"""Pure-Python backend: Jacobian coordinates over gmpy2 integers, Pippenger MSM.

The fallback wherever the mcl wheel is missing or fails its self-test. Curve
``y^2 = x^3 + 3`` (a = 0); a point (X, Y, Z) stands for (X/Z^2, Y/Z^3); Z = 0 is the identity.
Formulas: dbl-2009-l and add-2007-bl from the Explicit-Formulas Database.

Scalar multiplications use the GLV endomorphism of BN254: phi(x, y) = (beta*x, y) equals
lambda*P, so k*P = k1*P + k2*phi(P) with |k1|, |k2| about sqrt(r) (Gallant-Lambert-Vanstone,
CRYPTO 2001), which halves the doublings.
"""

from collections.abc import Sequence

import gmpy2

from circuits.backend.base import GroupBackend, Point
from circuits.constants import CURVE_ORDER, FIELD_MODULUS
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


# GLV: beta^3 = 1 in F_p and lambda^2 + lambda + 1 = 0 in Z_r, paired so that
# (beta*x, y) = lambda*(x, y) on BN254 G1 (checked by the tests).
GLV_BETA = 0x59E26BCEA0D48BACD4F263F1ACDB5C4F5763473177FFFFFE
GLV_LAMBDA = 0xB3C4D79D41A917585BFC41088D8DAAA78B17EA66B99C90DD
_BETA = gmpy2.mpz(GLV_BETA)


def _glv_basis() -> tuple[tuple[int, int], tuple[int, int]]:
    """A short basis (a1, b1), (a2, b2) of {(a, b) : a + b*lambda = 0 mod r}, by the extended
    Euclidean algorithm on (r, lambda), stopped at sqrt(r) (GLV paper, section 4)."""
    bound = gmpy2.isqrt(CURVE_ORDER)
    r0, r1, t0, t1 = CURVE_ORDER, GLV_LAMBDA, 0, 1
    while r1 >= bound:
        q = r0 // r1
        r0, r1, t0, t1 = r1, r0 - q * r1, t1, t0 - q * t1
    # r1 < sqrt(r) <= r0: v1 = (r1, -t1); v2 is the shorter of (r0, -t0) and the next one.
    q = r0 // r1
    r2, t2 = r0 - q * r1, t0 - q * t1
    v1 = (r1, -t1)
    v2 = min((r0, -t0), (r2, -t2), key=lambda v: v[0] ** 2 + v[1] ** 2)
    return v1, v2


(_A1, _B1), (_A2, _B2) = _glv_basis()
_DET = _A1 * _B2 - _A2 * _B1


def glv_split(k: int) -> tuple[int, int]:
    """k1, k2 with k = k1 + k2*lambda (mod r) and |k1|, |k2| about sqrt(r)."""
    c1 = (2 * _B2 * k + _DET) // (2 * _DET)  # round(b2*k / det)
    c2 = (-2 * _B1 * k + _DET) // (2 * _DET)  # round(-b1*k / det)
    return k - c1 * _A1 - c2 * _A2, -c1 * _B1 - c2 * _B2


def _endo(pt: Jacobian) -> Jacobian:
    """phi(P) = (beta*x, y): in Jacobian coordinates (beta*X, Y, Z)."""
    return (pt[0] * _BETA % _P, pt[1], pt[2])


def _signed(pt: Jacobian, k: int) -> tuple[Jacobian, int]:
    return (_neg(pt), -k) if k < 0 else (pt, k)


def _glv_terms(pt: Jacobian, k: int) -> list[tuple[Jacobian, int]]:
    """k*P as two half-length terms k1*P + k2*phi(P), with non-negative scalars."""
    k1, k2 = glv_split(k)
    return [_signed(pt, k1), _signed(_endo(pt), k2)]


def _mul(pt: Jacobian, k: int) -> Jacobian:
    """k * P: GLV split, then a joint 4-bit window over both halves (Straus)."""
    if not k or not pt[2]:
        return _INF
    k1, k2 = glv_split(k)
    multiples = [_INF, pt]  # d*P for d = 0..15
    for _ in range(14):
        multiples.append(_add(multiples[-1], pt))
    # phi commutes with scalar multiplication, so d*phi(P) = phi(d*P): no second chain.
    table1 = [_neg(q) for q in multiples] if k1 < 0 else multiples
    table2 = [_endo(_neg(q) if k2 < 0 else q) for q in multiples]
    k1, k2 = abs(k1), abs(k2)
    acc = _INF
    top = max(k1.bit_length(), k2.bit_length())
    for shift in range((top + 3) // 4 * 4 - 4, -4, -4):
        acc = _dbl(_dbl(_dbl(_dbl(acc))))
        d1 = (k1 >> shift) & 0xF
        d2 = (k2 >> shift) & 0xF
        if d1:
            acc = _add(acc, table1[d1])
        if d2:
            acc = _add(acc, table2[d2])
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
        split = [term for pt, k in pairs for term in _glv_terms(pt, k)]
        return _pippenger([pt for pt, _ in split], [k for _, k in split])

    def is_identity(self, a: Point) -> bool:
        return not a[2]
