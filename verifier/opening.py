"""A user's opening of its leaf, and the sealed box it travels in.

Plaintext (fixed length for a given epoch, since every path has the tree's depth):

    "ZKMETER_OPEN_V1_" ‖ u64 epoch_id ‖ tag(32) ‖ u64 value ‖ blinding(32)
    ‖ u32 leaf_index ‖ u8 depth ‖ depth × sibling hash(32)

Sealed with a NaCl sealed box (X25519 + XSalsa20-Poly1305, ephemeral sender key) to the
user's registered X25519 public key: anyone may fetch it, only the user can open it. Padding
leaves get sealed openings to throwaway keys, so every published opening has the same length.
"""

from dataclasses import dataclass, field

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from circuits import merkle
from circuits.encoding import u32, u64
from circuits.errors import CircuitsError
from circuits.pedersen import opens
from verifier.bundle import Bundle

OPENING_DOMAIN = b"ZKMETER_OPEN_V1_"
_FIXED = len(OPENING_DOMAIN) + 8 + 32 + 8 + 32 + 4 + 1
SEAL_OVERHEAD = 48  # ephemeral public key (32) + Poly1305 tag (16)


class OpeningError(ValueError):
    """An opening or sealed box is malformed or cannot be opened with the given key."""


@dataclass(frozen=True, slots=True)
class Opening:
    """What only the user learns: its value, blinding, tag and place in the tree. The repr
    leaves out the value and the blinding."""

    epoch_id: int
    tag: bytes
    value: int = field(repr=False)
    blinding: int = field(repr=False)
    leaf_index: int
    path: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        """The plaintext layout of the module docstring."""
        return b"".join([
            OPENING_DOMAIN, u64(self.epoch_id), self.tag, u64(self.value),
            self.blinding.to_bytes(32, "big"), u32(self.leaf_index), bytes([len(self.path)]),
            *self.path,
        ])

    @classmethod
    def from_bytes(cls, data: bytes) -> "Opening":
        """Strictly decode a plaintext opening."""
        if len(data) < _FIXED or data[:16] != OPENING_DOMAIN:
            raise OpeningError("not a zkmeter v1 opening")
        pos = 16
        epoch_id = int.from_bytes(data[pos : pos + 8], "big")
        tag = data[pos + 8 : pos + 40]
        value = int.from_bytes(data[pos + 40 : pos + 48], "big")
        blinding = int.from_bytes(data[pos + 48 : pos + 80], "big")
        index = int.from_bytes(data[pos + 80 : pos + 84], "big")
        depth = data[pos + 84]
        rest = data[_FIXED:]
        if len(rest) != 32 * depth:
            raise OpeningError("opening path length does not match its depth")
        path = tuple(rest[i : i + 32] for i in range(0, len(rest), 32))
        return cls(epoch_id, tag, value, blinding, index, path)


def sealed_size(depth: int) -> int:
    """Length of every sealed opening of a tree of this depth."""
    return _FIXED + 32 * depth + SEAL_OVERHEAD


def seal(opening: Opening, recipient: bytes) -> bytes:
    """Seal an opening to a 32-byte X25519 public key."""
    return bytes(SealedBox(PublicKey(recipient)).encrypt(opening.to_bytes()))


def unseal(sealed: bytes, secret_key: bytes) -> Opening:
    """Open a sealed opening with the user's 32-byte X25519 secret key."""
    try:
        plaintext = SealedBox(PrivateKey(secret_key)).decrypt(sealed)
    except (CryptoError, ValueError, TypeError):
        raise OpeningError("the sealed opening cannot be opened with this key") from None
    return Opening.from_bytes(plaintext)


def check_opening(opening: Opening, bundle: Bundle) -> list[tuple[str, bool, str]]:
    """Check an opening against the published bundle: epoch, leaf, Merkle path, commitment."""
    results: list[tuple[str, bool, str]] = []
    results.append(("epoch", opening.epoch_id == bundle.epoch_id,
                    f"opening is for epoch {opening.epoch_id}, bundle is {bundle.epoch_id}"))
    if not 0 <= opening.leaf_index < len(bundle.leaves):
        results.append(("leaf", False, "leaf index outside the bundle"))
        return results
    leaf = bundle.leaves[opening.leaf_index]
    results.append(("leaf", leaf.tag == opening.tag,
                    "the bundle's leaf at this index has this tag" if leaf.tag == opening.tag
                    else "the bundle's leaf at this index has another tag"))
    in_tree = merkle.verify_path(leaf.hash(), opening.leaf_index, opening.path,
                                 bundle.merkle_root)
    results.append(("merkle_path", in_tree, "Merkle path leads to the published root"
                    if in_tree else "Merkle path does not lead to the published root"))
    try:
        opened = opens(leaf.commitment, opening.value, opening.blinding)
    except CircuitsError as exc:
        opened = False
        detail = f"commitment cannot be checked: {exc}"
    else:
        detail = ("commitment opens to the value" if opened
                  else "commitment does not open to this value and blinding")
    results.append(("commitment", opened, detail))
    in_range = opening.value < 1 << bundle.bit_size
    results.append(("value_range", in_range, f"value {opening.value} < 2^{bundle.bit_size}"
                    if in_range else "value outside the proven range"))
    return results
