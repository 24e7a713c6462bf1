"""Pedersen commitments ``C = v*G + r*H`` on BN254 G1 (G the EVM generator, H hashed).

Perfectly hiding (r uniform) and computationally binding (nobody knows log_G H). Homomorphic:
``sum C_u = (sum v_u)*G + (sum r_u)*H``, which the settlement contract checks on-chain.
"""

from collections.abc import Sequence

from circuits.backend import GroupBackend, get_backend
from circuits.constants import CURVE_ORDER
from circuits.encoding import bytes_to_point, point_to_bytes
from circuits.errors import ValueOutOfRangeError
from circuits.generators import pedersen_gens


def commit(value: int, blinding: int, *, backend: GroupBackend | None = None) -> bytes:
    """Encode v*G + r*H for integers v in [0, r) and r in [1, r)."""
    if type(value) is not int or not 0 <= value < CURVE_ORDER:
        raise ValueOutOfRangeError("committed value must be an integer in [0, r)")
    if type(blinding) is not int or not 0 < blinding < CURVE_ORDER:
        raise ValueOutOfRangeError("blinding must be an integer in [1, r)")
    be = backend or get_backend()
    return point_to_bytes(be.to_affine(pedersen_gens(be).commit(value, blinding)))


def opens(commitment: bytes, value: int, blinding: int, *, backend: GroupBackend | None = None
          ) -> bool:
    """True iff ``commitment`` (64 bytes) equals value*G + blinding*H."""
    bytes_to_point(commitment)  # strict decoding first: malformed input is an error, not False
    try:
        return commit(value, blinding, backend=backend) == bytes(commitment)
    except ValueOutOfRangeError:
        return False


def sum_commitments(commitments: Sequence[bytes], *, backend: GroupBackend | None = None
                    ) -> bytes:
    """Encode the group sum of the commitments (64 zero bytes if it is the identity)."""
    be = backend or get_backend()
    acc = be.identity()
    for c in commitments:
        acc = be.add(acc, be.from_affine(bytes_to_point(c)))
    return point_to_bytes(be.to_affine(acc))


__all__ = ["commit", "opens", "sum_commitments"]
