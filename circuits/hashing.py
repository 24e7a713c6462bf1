"""keccak256, the one hash of the protocol (the EVM's KECCAK256, not NIST SHA3-256).

``safe-pysha3`` (a C extension, about 0.6 us a call) is preferred: the verifier hashes about
30 times per proof. pycryptodome's keccak (about 5-15 us a call) is the fallback where that
wheel cannot be installed; the tests check that both give the same digests.
"""

from collections.abc import Callable

from Crypto.Hash import keccak as _pycryptodome_keccak


def _keccak_pycryptodome(data: bytes) -> bytes:
    return _pycryptodome_keccak.new(digest_bits=256, data=data).digest()


_impl: Callable[[bytes], bytes]
try:
    import sha3 as _pysha3

    def _keccak_pysha3(data: bytes) -> bytes:
        digest: bytes = _pysha3.keccak_256(data).digest()
        return digest

    _impl = _keccak_pysha3
    IMPLEMENTATION = "safe-pysha3"
except ImportError:  # pragma: no cover - depends on the platform's wheels
    _impl = _keccak_pycryptodome
    IMPLEMENTATION = "pycryptodome"


def keccak256(*parts: bytes) -> bytes:
    """keccak256 over the concatenation of ``parts``."""
    return _impl(b"".join(parts))
