"""Reference backend: py_ecc's ``optimized_bn128``. Slow (about 10 ms per scalar
multiplication); used by the tests as the yardstick the fast backends must match."""

from collections.abc import Sequence
from typing import Any

from py_ecc import optimized_bn128

from circuits.backend.base import GroupBackend, Point
from circuits.encoding import IDENTITY, G1Affine

# py_ecc re-exports its curve functions without __all__; typed loosely here.
bn: Any = optimized_bn128


class PyEccBackend(GroupBackend):
    """G1 arithmetic with py_ecc (projective coordinates over py_ecc's FQ)."""

    name = "pyecc"

    def from_affine(self, point: G1Affine) -> Point:
        if point.is_identity():
            return bn.Z1
        return (bn.FQ(point.x), bn.FQ(point.y), bn.FQ.one())

    def to_affine(self, point: Point) -> G1Affine:
        if bn.is_inf(point):
            return IDENTITY
        x, y = bn.normalize(point)
        return G1Affine(int(x), int(y))

    def identity(self) -> Point:
        return bn.Z1

    def add(self, a: Point, b: Point) -> Point:
        return bn.add(a, b)

    def neg(self, a: Point) -> Point:
        return bn.neg(a)

    def mul(self, a: Point, k: int) -> Point:
        return bn.multiply(a, k)

    def msm(self, points: Sequence[Point], scalars: Sequence[int]) -> Point:
        acc = bn.Z1
        for point, k in zip(points, scalars, strict=True):
            acc = bn.add(acc, bn.multiply(point, k))
        return acc

    def is_identity(self, a: Point) -> bool:
        return bool(bn.is_inf(a))

    def eq(self, a: Point, b: Point) -> bool:
        return bool(bn.eq(a, b))
