"""The epoch's Merkle tree over its leaves, as the settlement contract recomputes it.

    leaf_hash = keccak256(tag ‖ C.x ‖ C.y ‖ keccak256(proof))      (32 + 64 + 32 = 128 bytes)
    node      = keccak256(left ‖ right)                             (64 bytes)

The number of leaves is a power of two (the epoch pads with zero-value leaves), so the tree
is complete. Leaf and node preimages differ in length (128 vs 64 bytes), so a node can never
be passed off as a leaf. A path lists the sibling hashes from the leaf up; the leaf index's
bits, lowest first, say whether the running hash is a right child (bit 1) or a left child.
"""

from collections.abc import Sequence

from circuits.constants import POINT_BYTES
from circuits.hashing import keccak256


def leaf_hash(tag: bytes, commitment: bytes, proof: bytes) -> bytes:
    """keccak256(tag ‖ C ‖ keccak256(proof)) for a 32-byte tag and a 64-byte commitment."""
    if len(tag) != 32:
        raise ValueError("leaf tag must be 32 bytes")
    if len(commitment) != POINT_BYTES:
        raise ValueError("commitment must be 64 bytes")
    return keccak256(tag, commitment, keccak256(proof))


def _check_width(count: int) -> None:
    if count < 1 or count & (count - 1):
        raise ValueError("the number of leaves must be a power of two")


def levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first, the root level (one hash) last."""
    _check_width(len(leaves))
    out = [list(leaves)]
    while len(out[-1]) > 1:
        below = out[-1]
        out.append([keccak256(below[i], below[i + 1]) for i in range(0, len(below), 2)])
    return out


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle root of leaf hashes (a power of two of them)."""
    return levels(leaves)[-1][0]


def path(tree: list[list[bytes]], index: int) -> list[bytes]:
    """The sibling hashes of leaf ``index``, from the leaf level up."""
    if not 0 <= index < len(tree[0]):
        raise ValueError("leaf index out of range")
    return [level[(index >> depth) ^ 1] for depth, level in enumerate(tree[:-1])]


def verify_path(leaf: bytes, index: int, siblings: Sequence[bytes], expected_root: bytes) -> bool:
    """True iff ``leaf`` at ``index`` with ``siblings`` hashes up to ``expected_root``."""
    if index < 0 or index >> len(siblings):
        return False
    node = leaf
    for depth, sibling in enumerate(siblings):
        node = keccak256(sibling, node) if (index >> depth) & 1 else keccak256(node, sibling)
    return node == expected_root


__all__ = ["leaf_hash", "levels", "path", "root", "verify_path"]
