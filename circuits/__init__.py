"""zkmeter circuits: Pedersen commitments and Bulletproofs range proofs on BN254 G1.

The math, the transcript order and the byte layouts are documented in ``PROTOCOL.md``
beside this file; every module opens with the relation it implements.
"""

from circuits.backend import GroupBackend, get_backend
from circuits.encoding import (
    G1Affine,
    bytes_to_point,
    bytes_to_scalar,
    point_to_bytes,
    scalar_to_bytes,
)
from circuits.errors import (
    BackendError,
    CircuitsError,
    DecodeError,
    ParameterError,
    ValueOutOfRangeError,
    VerificationError,
)
from circuits.pedersen import commit
from circuits.rangeproof import Statement, batch_verify, proof_size, prove, verify
from circuits.transcript import RangeProofContext, Transcript

__all__ = [
    "BackendError",
    "CircuitsError",
    "DecodeError",
    "G1Affine",
    "GroupBackend",
    "ParameterError",
    "RangeProofContext",
    "Statement",
    "Transcript",
    "ValueOutOfRangeError",
    "VerificationError",
    "batch_verify",
    "bytes_to_point",
    "bytes_to_scalar",
    "commit",
    "get_backend",
    "point_to_bytes",
    "proof_size",
    "prove",
    "scalar_to_bytes",
    "verify",
]
