"""Shared fixtures of the circuits tests: backends, a deterministic scalar source, contexts.

The helpers keep the prover's scope and the verifier's scope apart: ``make_proof`` returns
only bytes (the proof and the commitments), and ``check_proof`` builds its own transcript
from the context, so nothing but bytes crosses from prover to verifier.
"""

import dataclasses
from collections.abc import Sequence

import pytest

from circuits.backend import get_backend
from circuits.constants import CURVE_ORDER
from circuits.hashing import keccak256
from circuits.rangeproof import prove, verify
from circuits.transcript import RangeProofContext

R = CURVE_ORDER

CONTEXT = RangeProofContext(
    chain_id=31337,
    contract=bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3"),
    provider_id=keccak256(b"zkmeter circuits tests provider"),
    epoch_id=7,
)


class KeccakRng:
    """Deterministic scalars in [1, r): keccak256(seed || u64(counter)) mod r, zero skipped.

    For reproducible tests only; it is a callable, the ``ScalarSource`` the prover takes.
    """

    def __init__(self, seed: bytes | str) -> None:
        self.seed = seed.encode() if isinstance(seed, str) else seed
        self.counter = 0

    def __call__(self) -> int:
        while True:
            digest = keccak256(self.seed, self.counter.to_bytes(8, "big"))
            self.counter += 1
            value = int.from_bytes(digest, "big") % R
            if value:
                return value

    def below(self, bound: int) -> int:
        """A deterministic integer in [0, bound)."""
        digest = keccak256(self.seed, b"below", self.counter.to_bytes(8, "big"))
        self.counter += 1
        return int.from_bytes(digest, "big") % bound


def other_context(**changes) -> RangeProofContext:
    """CONTEXT with some fields changed."""
    return dataclasses.replace(CONTEXT, **changes)


def make_proof(
    values: Sequence[int],
    n: int,
    *,
    backend,
    seed: bytes | str = b"proof",
    ctx: RangeProofContext = CONTEXT,
) -> tuple[bytes, list[bytes]]:
    """The prover's scope: prove with fresh deterministic blindings; return only bytes."""
    rng = KeccakRng(seed if isinstance(seed, bytes) else seed.encode())
    blindings = [rng() for _ in values]
    proof, commitments = prove(
        ctx.transcript(), values=list(values), blindings=blindings, n=n, backend=backend,
        rng=rng,
    )
    assert isinstance(proof, bytes)
    assert all(isinstance(c, bytes) for c in commitments)
    return bytes(proof), [bytes(c) for c in commitments]


def check_proof(
    proof: bytes,
    commitments: Sequence[bytes],
    n: int,
    *,
    backend,
    ctx: RangeProofContext = CONTEXT,
) -> None:
    """The verifier's scope: a transcript built independently from the context."""
    verify(ctx.transcript(), proof, list(commitments), n=n, backend=backend)


@pytest.fixture(scope="session")
def mcl():
    return get_backend("mcl")


@pytest.fixture(scope="session")
def pure():
    return get_backend("python")


@pytest.fixture(scope="session")
def pyecc():
    return get_backend("pyecc")


@pytest.fixture(scope="session")
def proof32(mcl):
    """One honest 32-bit proof (mcl) of a mid-range value, as bytes."""
    return make_proof([1_234_567_891], 32, backend=mcl, seed=b"proof32")


@pytest.fixture(scope="session")
def proof8x2(mcl):
    """One honest aggregated proof of two 8-bit values (mcl), as bytes."""
    return make_proof([17, 200], 8, backend=mcl, seed=b"proof8x2")
