"""keccak256, the one hash of the protocol (the EVM's KECCAK256, not NIST SHA3-256)."""

from Crypto.Hash import keccak


def keccak256(*parts: bytes) -> bytes:
    """keccak256 over the concatenation of ``parts``."""
    return keccak.new(digest_bits=256, data=b"".join(parts)).digest()
