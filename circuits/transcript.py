"""The Fiat-Shamir transcript: one running keccak256 state, reproducible in Solidity.

Operations (PROTOCOL.md §4), ``state`` a 32-byte value:

    start:     state = keccak256(domain)           domain: a 16-byte versioned tag
    append:    state = keccak256(state || 0x01 || u8(len(label)) || label
                                 || u32(len(data)) || data)
    challenge: state = keccak256(state || 0x02 || u8(len(label)) || label)
               c = int(state) mod r, repeated while c == 0

A proof is bound to its application: :meth:`RangeProofContext.transcript` absorbs the chain
id, contract address, provider id and epoch id before the range proof absorbs n, m and every
commitment, all before the first challenge (the "Frozen Heart" lesson).
"""

from dataclasses import dataclass

from circuits.constants import CURVE_ORDER, RANGE_PROOF_DOMAIN
from circuits.encoding import G1Affine, point_to_bytes, scalar_to_bytes, u32, u64, u256
from circuits.errors import DecodeError
from circuits.hashing import keccak256

_APPEND = b"\x01"
_CHALLENGE = b"\x02"


def _label(label: bytes) -> bytes:
    if not 0 < len(label) < 256:
        raise ValueError("transcript label must be 1..255 bytes")
    return bytes([len(label)]) + label


class Transcript:
    """A running keccak256 Fiat-Shamir transcript."""

    __slots__ = ("_state",)

    def __init__(self, domain: bytes) -> None:
        if len(domain) != 16:
            raise ValueError("transcript domain tag must be exactly 16 bytes")
        self._state = keccak256(domain)

    @property
    def state(self) -> bytes:
        """The current 32-byte state (for test vectors)."""
        return self._state

    def append_message(self, label: bytes, data: bytes) -> None:
        """Absorb labelled bytes."""
        self._state = keccak256(self._state, _APPEND, _label(label), u32(len(data)), data)

    def append_u32(self, label: bytes, value: int) -> None:
        """Absorb a 4-byte big-endian integer."""
        self.append_message(label, u32(value))

    def append_u64(self, label: bytes, value: int) -> None:
        """Absorb an 8-byte big-endian integer."""
        self.append_message(label, u64(value))

    def append_scalar(self, label: bytes, value: int) -> None:
        """Absorb a scalar as 32 bytes big-endian."""
        self.append_message(label, scalar_to_bytes(value))

    def append_point(self, label: bytes, point: G1Affine) -> None:
        """Absorb a point as 64 bytes ``x || y``; refuses the identity, like the verifier."""
        if point.is_identity():
            raise DecodeError(f"identity point in transcript ({label.decode(errors='replace')})")
        self.append_message(label, point_to_bytes(point))

    def challenge_scalar(self, label: bytes) -> int:
        """Squeeze a nonzero challenge in [1, r)."""
        while True:
            self._state = keccak256(self._state, _CHALLENGE, _label(label))
            c = int.from_bytes(self._state, "big") % CURVE_ORDER
            if c:
                return c

    def clone(self) -> "Transcript":
        """An independent copy (same state)."""
        other = Transcript.__new__(Transcript)
        other._state = self._state
        return other


@dataclass(frozen=True, slots=True)
class RangeProofContext:
    """Where a range proof belongs: one provider's epoch on one settlement contract."""

    chain_id: int
    contract: bytes  # 20-byte EVM address
    provider_id: bytes  # 32 bytes: the provider's Ed25519 public key
    epoch_id: int

    def __post_init__(self) -> None:
        if type(self.chain_id) is not int or not 0 <= self.chain_id < 2**256:
            raise ValueError("chain_id must be an integer that fits in uint256")
        if type(self.contract) is not bytes or len(self.contract) != 20:
            raise ValueError("contract address must be 20 bytes")
        if type(self.provider_id) is not bytes or len(self.provider_id) != 32:
            raise ValueError("provider_id must be 32 bytes")
        if type(self.epoch_id) is not int or not 0 <= self.epoch_id < 2**64:
            raise ValueError("epoch_id must be an integer that fits in uint64")

    def transcript(self) -> Transcript:
        """A fresh range-proof transcript with this context absorbed."""
        t = Transcript(RANGE_PROOF_DOMAIN)
        t.append_message(b"chain-id", u256(self.chain_id))
        t.append_message(b"contract", self.contract)
        t.append_message(b"provider", self.provider_id)
        t.append_u64(b"epoch", self.epoch_id)
        return t
