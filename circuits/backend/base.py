"""The group interface: BN254 G1 points and scalars mod r.

Implementations keep points in their own native form (``Point`` is opaque to callers) and
must agree bit for bit on every result once converted with :meth:`GroupBackend.to_affine`.
Inputs are trusted: points come from :mod:`circuits.encoding` or from the backend itself, and
scalars are already reduced into [0, r).
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from circuits.encoding import G1Affine

# A backend's native point. Opaque outside the backend that made it.
Point = Any


class GroupBackend(ABC):
    """BN254 G1 arithmetic in one implementation."""

    name: str

    @abstractmethod
    def from_affine(self, point: G1Affine) -> Point:
        """Native point from a validated affine point ((0, 0) is the identity)."""

    @abstractmethod
    def to_affine(self, point: Point) -> G1Affine:
        """Validated affine form of a native point ((0, 0) for the identity)."""

    @abstractmethod
    def identity(self) -> Point:
        """The point at infinity."""

    @abstractmethod
    def add(self, a: Point, b: Point) -> Point:
        """a + b."""

    @abstractmethod
    def neg(self, a: Point) -> Point:
        """-a."""

    @abstractmethod
    def mul(self, a: Point, k: int) -> Point:
        """k * a for k in [0, r)."""

    @abstractmethod
    def msm(self, points: Sequence[Point], scalars: Sequence[int]) -> Point:
        """sum_i scalars[i] * points[i] (multi-scalar multiplication), scalars in [0, r)."""

    @abstractmethod
    def is_identity(self, a: Point) -> bool:
        """True for the point at infinity."""

    def eq(self, a: Point, b: Point) -> bool:
        """a == b as group elements."""
        return self.is_identity(self.add(a, self.neg(b)))

    def sub(self, a: Point, b: Point) -> Point:
        """a - b."""
        return self.add(a, self.neg(b))
