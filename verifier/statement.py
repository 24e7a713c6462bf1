"""The payer's statement: every leaf of one billing account's epoch, opened, for its payer.

The public learns of an account's epoch only its total, padded leaf count and window; a user
checks only its own leaf. The payer, who pays for every leaf, receives from the provider one
signed statement per account and epoch, sealed to the payer's X25519 key (NaCl sealed box),
that opens every leaf of the account's bundle:

    entry = (tag, user id or padding, value v, blinding r, hash of the user's last receipt)

so the payer can check (verifier/payer.py) that every leaf opens (v*G + r*H = C), padding is
zero, no user appears twice, every user is one of its own, the values sum to the paid total,
and, with the users' forwarded receipts, each user's chain ends at the stated hash and total.

Canonical bytes (signed by the provider's Ed25519 key, the bundle's ``provider_id``):

    "ZKMETER_STMT_V1_" ‖ u8 version ‖ u256 chain_id ‖ contract(20) ‖ provider_id(32)
    ‖ account_id(32) ‖ u64 epoch_id ‖ bundle_hash(32) ‖ u32 count ‖ per entry:
        tag(32) ‖ u8 kind (0 padding, 1 user) ‖ u16 len(user id, UTF-8)
        ‖ user id zero-padded to 256 bytes ‖ u64 value ‖ r(32) ‖ last_receipt_hash(32)

``bundle_hash = keccak256(bundle canonical bytes)`` ties the statement to one bundle. The wire
form is the canonical bytes followed by the 64-byte signature. Entries are fixed-width, so the
sealed statement's size is a function of the public leaf count alone. Decoding is strict:
exact lengths, kind 0 or 1, a padding entry has no user id and a zero receipt hash, a user id
is non-empty valid UTF-8 followed by zero bytes only, v < 2^32, r < the group order.

Errors: :class:`StatementFormatError` (malformed bytes or fields),
:class:`StatementSignatureError` (the provider's signature does not verify),
:class:`StatementSealError` (the sealed box does not open with the key); all are
:class:`StatementError`. Only the payer holds the key that opens the sealed form; the plain
form (revealed by the payer, e.g. in an evidence file) is checkable by anyone against the
provider's key.
"""

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

from circuits.constants import CURVE_ORDER
from circuits.encoding import u32, u64, u256
from circuits.hashing import keccak256
from verifier.bundle import SETTLEMENT_BIT_SIZE, Bundle
from verifier.receipts import MAX_USER_ID_BYTES

STATEMENT_DOMAIN = b"ZKMETER_STMT_V1_"
STATEMENT_VERSION = 1
KIND_PADDING = 0
KIND_USER = 1
SIGNATURE_BYTES = 64
_HEAD = struct.Struct(">16sB32s20s32s32sQ32sI")  # domain .. count
_ENTRY = struct.Struct(f">32sBH{MAX_USER_ID_BYTES}sQ32s32s")
ENTRY_BYTES = _ENTRY.size


class StatementError(ValueError):
    """Base class: a payer statement is malformed, does not open with the key, or is not
    signed by the provider."""


class StatementFormatError(StatementError):
    """The bytes (or the fields given) are not a well-formed version-1 statement."""


class StatementSignatureError(StatementError):
    """The provider's Ed25519 signature over the canonical bytes does not verify."""


class StatementSealError(StatementError):
    """The sealed statement does not open with this X25519 secret key."""


@dataclass(frozen=True, slots=True)
class StatementEntry:
    """One leaf, opened: its tag, whose it is (None: padding), v, r and the user's last
    receipt hash of the epoch (zero bytes for padding)."""

    tag: bytes
    user_id: str | None
    value: int
    blinding: int
    last_receipt_hash: bytes

    def __post_init__(self) -> None:
        if type(self.tag) is not bytes or len(self.tag) != 32:
            raise StatementFormatError("an entry's tag is 32 bytes")
        if type(self.last_receipt_hash) is not bytes or len(self.last_receipt_hash) != 32:
            raise StatementFormatError("an entry's receipt hash is 32 bytes")
        if isinstance(self.value, bool) or not isinstance(self.value, int) or \
                not 0 <= self.value < 1 << SETTLEMENT_BIT_SIZE:
            raise StatementFormatError(
                f"an entry's value is an integer in [0, 2^{SETTLEMENT_BIT_SIZE})")
        if isinstance(self.blinding, bool) or not isinstance(self.blinding, int) or \
                not 0 <= self.blinding < CURVE_ORDER:
            raise StatementFormatError("an entry's blinding is a scalar below the group order")
        if self.user_id is None:
            if self.last_receipt_hash != bytes(32):
                raise StatementFormatError("a padding entry has no receipt hash")
        else:
            raw = self.user_id.encode() if isinstance(self.user_id, str) else b""
            if not raw or len(raw) > MAX_USER_ID_BYTES:
                raise StatementFormatError(f"a user id is 1 to {MAX_USER_ID_BYTES} bytes of UTF-8")

    def to_bytes(self) -> bytes:
        """The entry's fixed-width bytes (module docstring)."""
        user = b"" if self.user_id is None else self.user_id.encode()
        return _ENTRY.pack(self.tag, KIND_PADDING if self.user_id is None else KIND_USER,
                           len(user), user, self.value, self.blinding.to_bytes(32, "big"),
                           self.last_receipt_hash)


@dataclass(frozen=True, slots=True)
class PayerStatement:
    """A decoded payer statement (the signature is checked by
    :func:`verify_statement_signature`, not on construction)."""

    chain_id: int
    contract: bytes
    provider_id: bytes
    account_id: bytes
    epoch_id: int
    bundle_hash: bytes
    entries: tuple[StatementEntry, ...]
    signature: bytes = b""
    version: int = STATEMENT_VERSION

    def __post_init__(self) -> None:
        if self.version != STATEMENT_VERSION:
            raise StatementFormatError(f"unsupported statement version {self.version}")
        if isinstance(self.chain_id, bool) or not isinstance(self.chain_id, int) or \
                not 0 <= self.chain_id < 1 << 256:
            raise StatementFormatError("the chain id is a u256")
        if isinstance(self.epoch_id, bool) or not isinstance(self.epoch_id, int) or \
                not 0 <= self.epoch_id < 1 << 64:
            raise StatementFormatError("the epoch id is a u64")
        for name, length in (("contract", 20), ("provider_id", 32), ("account_id", 32),
                             ("bundle_hash", 32)):
            value = getattr(self, name)
            if type(value) is not bytes or len(value) != length:
                raise StatementFormatError(f"{name} is {length} bytes")
        if type(self.entries) is not tuple or \
                not all(isinstance(e, StatementEntry) for e in self.entries):
            raise StatementFormatError("entries is a tuple of StatementEntry")
        if len(self.entries) >= 1 << 32:
            raise StatementFormatError("too many entries")
        if type(self.signature) is not bytes or len(self.signature) not in (0, SIGNATURE_BYTES):
            raise StatementFormatError("the signature is 64 bytes (or empty before signing)")

    def signed_bytes(self) -> bytes:
        """The canonical bytes the provider signs (module docstring)."""
        head = [STATEMENT_DOMAIN, bytes([self.version]), u256(self.chain_id), self.contract,
                self.provider_id, self.account_id, u64(self.epoch_id), self.bundle_hash,
                u32(len(self.entries))]
        return b"".join(head + [entry.to_bytes() for entry in self.entries])

    def to_bytes(self) -> bytes:
        """The wire form: canonical bytes, then the signature."""
        if len(self.signature) != SIGNATURE_BYTES:
            raise StatementFormatError("the statement is not signed")
        return self.signed_bytes() + self.signature

    @property
    def total(self) -> int:
        """The sum of the stated values."""
        return sum(entry.value for entry in self.entries)


def bundle_hash(bundle: Bundle) -> bytes:
    """keccak256 of the bundle's canonical bytes: what a statement is tied to."""
    return keccak256(bundle.signed_bytes())


def decode_statement(data: bytes) -> PayerStatement:
    """Parse a statement's wire form strictly; raises StatementError."""
    if not isinstance(data, bytes) or len(data) < _HEAD.size + SIGNATURE_BYTES:
        raise StatementFormatError("a statement is shorter than its fixed header")
    (domain, version, chain_id, contract, provider_id, account_id, epoch_id, bound,
     count) = _HEAD.unpack_from(data)
    if domain != STATEMENT_DOMAIN or version != STATEMENT_VERSION:
        raise StatementFormatError("not a version-1 zkmeter payer statement")
    if len(data) != _HEAD.size + count * ENTRY_BYTES + SIGNATURE_BYTES:
        raise StatementFormatError(f"a statement of {count} entries has the wrong length")
    entries = []
    for i in range(count):
        tag, kind, length, user, value, blind, last = _ENTRY.unpack_from(
            data, _HEAD.size + i * ENTRY_BYTES)
        entries.append(_entry(i, tag, kind, length, user, value, blind, last))
    return PayerStatement(
        chain_id=int.from_bytes(chain_id, "big"), contract=contract, provider_id=provider_id,
        account_id=account_id, epoch_id=epoch_id, bundle_hash=bound, entries=tuple(entries),
        signature=data[-SIGNATURE_BYTES:])


def _entry(index: int, tag: bytes, kind: int, length: int, user: bytes, value: int,
           blind: bytes, last: bytes) -> StatementEntry:
    if kind not in (KIND_PADDING, KIND_USER):
        raise StatementFormatError(f"entry {index}: unknown kind {kind}")
    if length > MAX_USER_ID_BYTES or any(user[length:]):
        raise StatementFormatError(f"entry {index}: the user id field is malformed")
    if (kind == KIND_PADDING) != (length == 0):
        raise StatementFormatError(
            f"entry {index}: a padding entry has no user id, a user's has one")
    user_id = None
    if kind == KIND_USER:
        try:
            user_id = user[:length].decode()
        except UnicodeDecodeError:
            raise StatementFormatError(f"entry {index}: the user id is not UTF-8") from None
    try:
        return StatementEntry(tag, user_id, value, int.from_bytes(blind, "big"), last)
    except StatementError as exc:
        raise StatementFormatError(f"entry {index}: {exc}") from None


def make_statement(bundle: Bundle,
                   entries: Sequence[tuple[bytes, str | None, int, int, bytes]],
                   signing_key: SigningKey) -> PayerStatement:
    """The signed statement of ``bundle`` from (tag, user id or None, v, r, last receipt
    hash) per leaf, in the bundle's leaf order."""
    if bytes(signing_key.verify_key) != bundle.provider_id:
        raise ValueError("the signing key is not the bundle's provider key")
    if [e[0] for e in entries] != [leaf.tag for leaf in bundle.leaves]:
        raise ValueError("the entries' tags are not the bundle's leaves in order")
    statement = PayerStatement(
        chain_id=bundle.chain_id, contract=bundle.contract, provider_id=bundle.provider_id,
        account_id=bundle.subject, epoch_id=bundle.epoch_id, bundle_hash=bundle_hash(bundle),
        entries=tuple(StatementEntry(*e) for e in entries))
    return sign_statement(statement, signing_key)


def sign_statement(statement: PayerStatement, signing_key: SigningKey) -> PayerStatement:
    """A copy of ``statement`` signed by ``signing_key``."""
    signature = bytes(signing_key.sign(statement.signed_bytes()).signature)
    return PayerStatement(statement.chain_id, statement.contract, statement.provider_id,
                          statement.account_id, statement.epoch_id, statement.bundle_hash,
                          statement.entries, signature, statement.version)


def verify_statement_signature(statement: PayerStatement) -> None:
    """Raise StatementError unless the provider key in the statement signed it."""
    try:
        VerifyKey(statement.provider_id).verify(statement.signed_bytes(), statement.signature)
    except (BadSignatureError, ValueError):
        raise StatementSignatureError("the statement's Ed25519 signature does not verify") from None


def seal_statement(statement: PayerStatement, payer_x25519_public: bytes) -> bytes:
    """The statement sealed to the payer's X25519 public key."""
    if type(payer_x25519_public) is not bytes or len(payer_x25519_public) != 32:
        raise StatementError("the payer's X25519 public key is 32 bytes")
    return SealedBox(PublicKey(payer_x25519_public)).encrypt(statement.to_bytes())


def unseal_statement(sealed: bytes, payer_x25519_secret: bytes) -> PayerStatement:
    """Open a sealed statement with the payer's X25519 secret key and decode it."""
    if type(payer_x25519_secret) is not bytes or len(payer_x25519_secret) != 32:
        raise StatementSealError("the payer's X25519 secret key is 32 bytes")
    try:
        plain = SealedBox(PrivateKey(payer_x25519_secret)).decrypt(sealed)
    except (CryptoError, ValueError, TypeError):
        raise StatementSealError("the statement does not open with this key (sealed to another "
                             "payer, or damaged)") from None
    return decode_statement(plain)
