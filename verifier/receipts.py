"""Usage receipts: canonical bytes, Ed25519 signature, per-user hash chain, text check.

Every metered event yields one receipt, signed by the provider's Ed25519 key (whose 32-byte
public key is the provider id) and chained per user per epoch. docs/receipts.md has the byte
layout; in short (all integers big-endian, strings UTF-8 with a length prefix)::

    "ZKMETER_RCPT_V1_" ‖ u8 version(1) ‖ u8 flags ‖ provider_id(32) ‖ u64 epoch_id
    ‖ u16 len ‖ user_id ‖ u64 seq ‖ prev_hash(32) ‖ idempotency_key_digest(32)
    ‖ u16 len ‖ model ‖ u8 len ‖ encoding
    ‖ u64 input ‖ u64 output ‖ u64 cached_input ‖ u64 reasoning ‖ u64 units ‖ u64 total
    ‖ rate_card_hash(32) ‖ salt(32) ‖ prompt_digest(32) ‖ completion_digest(32)
    ‖ u64 timestamp_ms
    signed receipt = canonical ‖ Ed25519 signature(64)
    receipt hash   = keccak256(canonical ‖ signature)

flags bit 0 (``FLAG_COUNTED``): the visible counts were counted from text by the meter with
``encoding``; then both digests are ``keccak256(salt ‖ label ‖ text)`` and non-zero. Without
it the counts were reported by the gateway, ``encoding`` is empty and both digests are zero.
``seq`` starts at 1 per user per epoch, ``prev_hash`` is 32 zero bytes for seq 1, and
``total`` is the running sum of ``units`` over the chain. Cached input and reasoning tokens
are reported numbers on their own fields, never part of ``input`` or ``output``.
"""

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from circuits.hashing import keccak256
from verifier.hexfields import from_hex, to_hex
from verifier.tokens import (
    Message,
    MessageFormatError,
    TokenCountError,
    count_visible,
)

RECEIPT_DOMAIN = b"ZKMETER_RCPT_V1_"
RECEIPT_VERSION = 1
FLAG_COUNTED = 0x01
PROMPT_LABEL = b"ZKMETER_PROMPT_1"
COMPLETION_LABEL = b"ZKMETER_COMPLET1"
RECEIPT_KEY_LABEL = b"ZKMETER_IDEMRCPT"
IDEMPOTENCY_LABEL = b"ZKMETER_IDEMKEY1"
ZERO32 = bytes(32)
SIGNATURE_BYTES = 64
MAX_USER_ID_BYTES = 256
MAX_MODEL_BYTES = 256
MAX_ENCODING_BYTES = 64
U64_MAX = (1 << 64) - 1

_HEAD = struct.Struct(">16sBB32sQ")  # domain, version, flags, provider_id, epoch_id
_MID = struct.Struct(">Q32s32s")  # seq, prev_hash, idempotency_key_digest
_TAIL = struct.Struct(">QQQQQQ32s32s32s32sQ")  # counts, units, total, hashes, timestamp
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class ReceiptError(ValueError):
    """Base class of every receipt error of the verifier layer."""


class ReceiptFormatError(ReceiptError):
    """Bytes or JSON are not a well-formed v1 receipt, or field values are out of range."""


class ReceiptSignatureError(ReceiptError):
    """The signature does not verify under the (expected) provider key. Deliberately opaque."""

    def __init__(self) -> None:
        super().__init__("receipt signature does not verify")


class ReceiptChainError(ReceiptError):
    """A user's receipts do not form one unbroken chain (seq, prev hash, totals, identity)."""


class ReceiptTextError(ReceiptError):
    """The user's text does not match the receipt's digests or its recounted token counts.

    The message names the field that failed, never the text."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """One metered event. ``signature`` is empty until :func:`sign_receipt`."""

    provider_id: bytes
    epoch_id: int
    user_id: str
    seq: int
    prev_hash: bytes
    idempotency_key_digest: bytes
    model: str
    encoding: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    units: int
    total_units: int
    rate_card_hash: bytes
    salt: bytes
    prompt_digest: bytes
    completion_digest: bytes
    timestamp_ms: int
    flags: int = 0
    signature: bytes = field(default=b"")
    version: int = RECEIPT_VERSION

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def counted_from_text(self) -> bool:
        """True when the meter counted the visible tokens from text (digests are set)."""
        return bool(self.flags & FLAG_COUNTED)

    def signed_bytes(self) -> bytes:
        """The canonical bytes the provider signs (module docstring)."""
        user = self.user_id.encode("utf-8")
        model = self.model.encode("utf-8")
        enc = self.encoding.encode("ascii")
        return b"".join((
            _HEAD.pack(RECEIPT_DOMAIN, self.version, self.flags, self.provider_id,
                       self.epoch_id),
            _U16.pack(len(user)), user,
            _MID.pack(self.seq, self.prev_hash, self.idempotency_key_digest),
            _U16.pack(len(model)), model, bytes((len(enc),)), enc,
            _TAIL.pack(self.input_tokens, self.output_tokens, self.cached_input_tokens,
                       self.reasoning_tokens, self.units, self.total_units,
                       self.rate_card_hash, self.salt, self.prompt_digest,
                       self.completion_digest, self.timestamp_ms),
        ))

    def to_bytes(self) -> bytes:
        """The signed receipt: canonical bytes followed by the 64-byte signature."""
        if len(self.signature) != SIGNATURE_BYTES:
            raise ReceiptFormatError("receipt is not signed")
        return self.signed_bytes() + self.signature

    def hash(self) -> bytes:
        """keccak256(canonical ‖ signature): what the next receipt's prev_hash holds."""
        return keccak256(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> "Receipt":
        """Strictly decode a signed receipt (the signature is decoded, not verified)."""
        return decode_receipt(data)

    def to_json(self) -> dict[str, Any]:
        """The JSON form users store: integers as numbers, byte strings as 0x-hex."""
        return {
            "version": self.version,
            "counted_from_text": self.counted_from_text,
            "provider_id": to_hex(self.provider_id),
            "epoch_id": self.epoch_id,
            "user_id": self.user_id,
            "seq": self.seq,
            "prev_hash": to_hex(self.prev_hash),
            "idempotency_key_digest": to_hex(self.idempotency_key_digest),
            "model": self.model,
            "encoding": self.encoding,
            "tokens": {
                "input": self.input_tokens,
                "output": self.output_tokens,
                "cached_input": self.cached_input_tokens,
                "reasoning": self.reasoning_tokens,
            },
            "units": self.units,
            "total_units": self.total_units,
            "rate_card_hash": to_hex(self.rate_card_hash),
            "salt": to_hex(self.salt),
            "prompt_digest": to_hex(self.prompt_digest),
            "completion_digest": to_hex(self.completion_digest),
            "timestamp_ms": self.timestamp_ms,
            "signature": to_hex(self.signature),
            "hash": to_hex(self.hash()),
        }

    def dumps(self) -> str:
        """The JSON text of the receipt."""
        return json.dumps(self.to_json(), indent=1) + "\n"

    @classmethod
    def from_json(cls, obj: Any) -> "Receipt":
        """Strictly decode the JSON form (exact keys, exact types, the stated hash must match)."""
        return receipt_from_json(obj)


# --- validation and decoding (the trust boundary) ------------------------------------------

def _check_bytes(value: Any, name: str, length: int) -> None:
    if not isinstance(value, bytes) or len(value) != length:
        raise ReceiptFormatError(f"{name} must be {length} bytes")


def _check_u64(value: Any, name: str) -> None:
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise ReceiptFormatError(f"{name} must be an integer in [0, 2^64)")


def _check_str(value: Any, name: str, max_bytes: int, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise ReceiptFormatError(f"{name} must be a string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ReceiptFormatError(f"{name} is not valid UTF-8 text") from None
    if size > max_bytes or (size == 0 and not allow_empty):
        raise ReceiptFormatError(f"{name} must be {0 if allow_empty else 1}..{max_bytes} bytes")


def _plain(r: Receipt) -> bool:
    """True when every field has its plain type, size and range (the usual case, decided in
    one expression: bytes of 32, integers in [0, 2^64), ASCII names within their limits);
    when False, :func:`_check_fields` checks each field and names the first that fails. It
    never accepts what those checks refuse (tests/metering/test_receipts.py)."""
    return (type(r.provider_id) is bytes and len(r.provider_id) == 32
            and type(r.prev_hash) is bytes and len(r.prev_hash) == 32
            and type(r.idempotency_key_digest) is bytes and len(r.idempotency_key_digest) == 32
            and type(r.rate_card_hash) is bytes and len(r.rate_card_hash) == 32
            and type(r.salt) is bytes and len(r.salt) == 32
            and type(r.prompt_digest) is bytes and len(r.prompt_digest) == 32
            and type(r.completion_digest) is bytes and len(r.completion_digest) == 32
            and type(r.epoch_id) is int and 0 <= r.epoch_id <= U64_MAX
            and type(r.seq) is int and 0 <= r.seq <= U64_MAX
            and type(r.input_tokens) is int and 0 <= r.input_tokens <= U64_MAX
            and type(r.output_tokens) is int and 0 <= r.output_tokens <= U64_MAX
            and type(r.cached_input_tokens) is int and 0 <= r.cached_input_tokens <= U64_MAX
            and type(r.reasoning_tokens) is int and 0 <= r.reasoning_tokens <= U64_MAX
            and type(r.units) is int and 0 <= r.units <= U64_MAX
            and type(r.total_units) is int and 0 <= r.total_units <= U64_MAX
            and type(r.timestamp_ms) is int and 0 <= r.timestamp_ms <= U64_MAX
            and type(r.user_id) is str and r.user_id.isascii()
            and 0 < len(r.user_id) <= MAX_USER_ID_BYTES
            and type(r.model) is str and r.model.isascii() and 0 < len(r.model) <= MAX_MODEL_BYTES
            and type(r.encoding) is str and r.encoding.isascii()
            and len(r.encoding) <= MAX_ENCODING_BYTES)


def _check_fields(r: Receipt) -> None:
    """Each field's type, size and range, one by one; raises naming the first that fails."""
    _check_bytes(r.provider_id, "provider_id", 32)
    for name in ("prev_hash", "idempotency_key_digest", "rate_card_hash", "salt",
                 "prompt_digest", "completion_digest"):
        _check_bytes(getattr(r, name), name, 32)
    for name in ("epoch_id", "seq", "input_tokens", "output_tokens", "cached_input_tokens",
                 "reasoning_tokens", "units", "total_units", "timestamp_ms"):
        _check_u64(getattr(r, name), name)
    _check_str(r.user_id, "user_id", MAX_USER_ID_BYTES)
    _check_str(r.model, "model", MAX_MODEL_BYTES)
    _check_str(r.encoding, "encoding", MAX_ENCODING_BYTES, allow_empty=True)
    if not r.encoding.isascii():
        raise ReceiptFormatError("encoding must be an ASCII name")


def _validate(r: Receipt) -> None:
    if r.version != RECEIPT_VERSION:
        raise ReceiptFormatError(f"unsupported receipt version {r.version!r}")
    if type(r.flags) is not int or r.flags & ~FLAG_COUNTED:
        raise ReceiptFormatError("unknown receipt flags")
    if not _plain(r):
        _check_fields(r)
    if r.seq < 1:
        raise ReceiptFormatError("seq starts at 1")
    if r.total_units < r.units:
        raise ReceiptFormatError("total_units is below this event's units")
    if r.counted_from_text:
        if not r.encoding or r.prompt_digest == ZERO32 or r.completion_digest == ZERO32:
            raise ReceiptFormatError("a counted receipt needs an encoding and both digests")
    elif r.encoding or r.prompt_digest != ZERO32 or r.completion_digest != ZERO32:
        raise ReceiptFormatError("a reported-count receipt has no encoding and zero digests")
    if not isinstance(r.signature, bytes) or len(r.signature) not in (0, SIGNATURE_BYTES):
        raise ReceiptFormatError("signature must be empty or 64 bytes")


def _take_str(data: bytes, pos: int, width: int, name: str) -> tuple[str, int]:
    if pos + width > len(data):
        raise ReceiptFormatError("receipt is truncated")
    size = int.from_bytes(data[pos : pos + width], "big")
    pos += width
    if pos + size > len(data):
        raise ReceiptFormatError("receipt is truncated")
    try:
        text = data[pos : pos + size].decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ReceiptFormatError(f"{name} is not valid UTF-8") from None
    return text, pos + size


def decode_receipt(data: bytes) -> Receipt:
    """Strictly decode a signed receipt; every malformation is a ReceiptFormatError."""
    if not isinstance(data, (bytes, bytearray)):
        raise ReceiptFormatError("a receipt is bytes")
    data = bytes(data)
    if len(data) < _HEAD.size or data[:16] != RECEIPT_DOMAIN:
        raise ReceiptFormatError("not a zkmeter v1 receipt")
    _domain, version, flags, provider_id, epoch_id = _HEAD.unpack_from(data, 0)
    if version != RECEIPT_VERSION:
        raise ReceiptFormatError(f"unsupported receipt version {version}")
    user_id, pos = _take_str(data, _HEAD.size, 2, "user_id")
    if pos + _MID.size > len(data):
        raise ReceiptFormatError("receipt is truncated")
    seq, prev_hash, idem = _MID.unpack_from(data, pos)
    model, pos = _take_str(data, pos + _MID.size, 2, "model")
    encoding, pos = _take_str(data, pos, 1, "encoding")
    if len(data) != pos + _TAIL.size + SIGNATURE_BYTES:
        raise ReceiptFormatError("receipt length does not match its layout")
    (inp, out, cached, reasoning, units, total, rate_card_hash, salt, prompt, completion,
     timestamp_ms) = _TAIL.unpack_from(data, pos)
    signature = data[pos + _TAIL.size :]
    receipt = Receipt(
        provider_id=provider_id, epoch_id=epoch_id, user_id=user_id, seq=seq,
        prev_hash=prev_hash, idempotency_key_digest=idem, model=model, encoding=encoding,
        input_tokens=inp, output_tokens=out, cached_input_tokens=cached,
        reasoning_tokens=reasoning, units=units, total_units=total,
        rate_card_hash=rate_card_hash, salt=salt, prompt_digest=prompt,
        completion_digest=completion, timestamp_ms=timestamp_ms, flags=flags,
        signature=signature, version=version,
    )
    if receipt.to_bytes() != data:  # e.g. non-shortest forms cannot occur, but be exact
        raise ReceiptFormatError("receipt bytes are not canonical")
    return receipt


_JSON_KEYS = frozenset({
    "version", "counted_from_text", "provider_id", "epoch_id", "user_id", "seq", "prev_hash",
    "idempotency_key_digest", "model", "encoding", "tokens", "units", "total_units",
    "rate_card_hash", "salt", "prompt_digest", "completion_digest", "timestamp_ms",
    "signature", "hash",
})
_TOKEN_KEYS = frozenset({"input", "output", "cached_input", "reasoning"})


def _unhex(value: Any, name: str, length: int) -> bytes:
    return from_hex(value, name, length, ReceiptFormatError)


def _int(value: Any, name: str) -> int:
    if type(value) is not int:
        raise ReceiptFormatError(f"{name}: expected an integer")
    return value


def receipt_from_json(obj: Any) -> Receipt:
    """Strictly decode a receipt's JSON form (see :meth:`Receipt.to_json`)."""
    if isinstance(obj, (str, bytes)):
        try:
            obj = json.loads(obj)
        except ValueError:
            raise ReceiptFormatError("receipt JSON does not parse") from None
    if not isinstance(obj, dict) or set(obj) != _JSON_KEYS:
        raise ReceiptFormatError("receipt JSON must have exactly the v1 keys")
    tokens = obj["tokens"]
    if not isinstance(tokens, dict) or set(tokens) != _TOKEN_KEYS:
        raise ReceiptFormatError("tokens must have exactly input, output, cached_input, "
                                 "reasoning")
    counted = obj["counted_from_text"]
    if not isinstance(counted, bool):
        raise ReceiptFormatError("counted_from_text: expected true or false")
    for name in ("user_id", "model", "encoding"):
        if not isinstance(obj[name], str):
            raise ReceiptFormatError(f"{name}: expected a string")
    receipt = Receipt(
        provider_id=_unhex(obj["provider_id"], "provider_id", 32),
        epoch_id=_int(obj["epoch_id"], "epoch_id"),
        user_id=obj["user_id"],
        seq=_int(obj["seq"], "seq"),
        prev_hash=_unhex(obj["prev_hash"], "prev_hash", 32),
        idempotency_key_digest=_unhex(obj["idempotency_key_digest"],
                                      "idempotency_key_digest", 32),
        model=obj["model"],
        encoding=obj["encoding"],
        input_tokens=_int(tokens["input"], "tokens.input"),
        output_tokens=_int(tokens["output"], "tokens.output"),
        cached_input_tokens=_int(tokens["cached_input"], "tokens.cached_input"),
        reasoning_tokens=_int(tokens["reasoning"], "tokens.reasoning"),
        units=_int(obj["units"], "units"),
        total_units=_int(obj["total_units"], "total_units"),
        rate_card_hash=_unhex(obj["rate_card_hash"], "rate_card_hash", 32),
        salt=_unhex(obj["salt"], "salt", 32),
        prompt_digest=_unhex(obj["prompt_digest"], "prompt_digest", 32),
        completion_digest=_unhex(obj["completion_digest"], "completion_digest", 32),
        timestamp_ms=_int(obj["timestamp_ms"], "timestamp_ms"),
        flags=FLAG_COUNTED if counted else 0,
        signature=_unhex(obj["signature"], "signature", SIGNATURE_BYTES),
        version=_int(obj["version"], "version"),
    )
    if _unhex(obj["hash"], "hash", 32) != receipt.hash():
        raise ReceiptFormatError("hash does not match the receipt's fields")
    return receipt


# --- digests -------------------------------------------------------------------------------

def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise MessageFormatError(f"{what} is not valid UTF-8 text") from None


def prompt_bytes(messages: Sequence[Message]) -> bytes:
    """Canonical bytes of a chat prompt: u32 count, then per message u32-length-prefixed
    role and content, and u8 0, or u8 1 and a u32-length-prefixed name."""
    parts = [_U32.pack(len(messages))]
    for message in messages:
        if not isinstance(message, Message):
            raise MessageFormatError("chat messages must be verifier.tokens.Message values")
        role = _utf8(message.role, "message role")
        content = _utf8(message.content, "message content")
        parts += [_U32.pack(len(role)), role, _U32.pack(len(content)), content]
        if message.name is None:
            parts.append(b"\x00")
        else:
            name = _utf8(message.name, "message name")
            parts += [b"\x01", _U32.pack(len(name)), name]
    return b"".join(parts)


def prompt_digest(salt: bytes, messages: Sequence[Message]) -> bytes:
    """keccak256(salt ‖ "ZKMETER_PROMPT_1" ‖ prompt_bytes(messages))."""
    return keccak256(salt, PROMPT_LABEL, prompt_bytes(messages))


def completion_digest(salt: bytes, completion: str) -> bytes:
    """keccak256(salt ‖ "ZKMETER_COMPLET1" ‖ UTF-8 completion)."""
    if not isinstance(completion, str):
        raise MessageFormatError("completion must be a string")
    return keccak256(salt, COMPLETION_LABEL, _utf8(completion, "completion"))


def idempotency_key_digest(key: str) -> bytes:
    """keccak256("ZKMETER_IDEMKEY1" ‖ UTF-8 key): the ledger's (private) uniqueness key of an
    idempotency key. Receipts carry :func:`receipt_key_digest` instead."""
    return keccak256(IDEMPOTENCY_LABEL, _utf8(key, "idempotency key"))


def receipt_key_digest(digest_key: bytes, key: str) -> bytes:
    """keccak256("ZKMETER_IDEMRCPT" ‖ digest_key(32) ‖ u32 len ‖ UTF-8 key): what a receipt
    carries. Keyed with the provider's secret digest key, so a user holding its receipts
    learns nothing about idempotency keys it did not choose (guessing ``req-42`` is useless
    without the key); the provider recomputes it to match a key to a receipt."""
    if len(digest_key) != 32:
        raise ReceiptError("the receipt digest key is 32 bytes")
    raw = _utf8(key, "idempotency key")
    return keccak256(RECEIPT_KEY_LABEL, digest_key, len(raw).to_bytes(4, "big"), raw)


# --- signing and verification --------------------------------------------------------------

def sign_receipt(receipt: Receipt, signing_key: SigningKey) -> Receipt:
    """The receipt signed by the provider key; the key must be the receipt's provider id."""
    if bytes(signing_key.verify_key) != receipt.provider_id:
        raise ReceiptError("the signing key is not the receipt's provider id")
    signature = signing_key.sign(receipt.signed_bytes()).signature
    return with_signature(receipt, signature)


def new_signed_receipt(sign: Callable[[bytes], bytes], **fields: Any) -> tuple[Receipt, bytes]:
    """A new receipt of ``fields`` (validated as any), signed by ``sign`` over its canonical
    bytes: the receipt and its wire bytes (canonical ‖ signature), each built once. The
    signature is the last field set, before the receipt leaves this function (the ingest
    hot path: no copy of a receipt nobody else holds yet)."""
    if "signature" in fields:
        raise ReceiptError("a new receipt is signed here, not given a signature")
    receipt = Receipt(**fields)
    body = receipt.signed_bytes()
    signature = sign(body)
    if type(signature) is not bytes or len(signature) != SIGNATURE_BYTES:
        raise ReceiptFormatError("signature must be 64 bytes")
    object.__setattr__(receipt, "signature", signature)
    return receipt, body + signature


def with_signature(receipt: Receipt, signature: bytes) -> Receipt:
    """A copy of an already validated receipt with a 64-byte signature, without validating
    the fields again (the ingest hot path); the signature itself is not checked here."""
    if len(signature) != SIGNATURE_BYTES:
        raise ReceiptFormatError("signature must be 64 bytes")
    signed = object.__new__(Receipt)
    for name in RECEIPT_FIELDS:
        object.__setattr__(signed, name, getattr(receipt, name))
    object.__setattr__(signed, "signature", signature)
    return signed


def verify_signature(receipt: Receipt, *, provider_id: bytes | None = None) -> None:
    """Raise ReceiptSignatureError unless the receipt is signed by ``provider_id`` (or, when
    not given, by the key it names; the caller must then trust that key otherwise)."""
    if provider_id is not None and provider_id != receipt.provider_id:
        raise ReceiptSignatureError()
    if len(receipt.signature) != SIGNATURE_BYTES:
        raise ReceiptSignatureError()
    try:
        VerifyKey(receipt.provider_id).verify(receipt.signed_bytes(), receipt.signature)
    except (BadSignatureError, ValueError, TypeError):
        raise ReceiptSignatureError() from None


@dataclass(frozen=True, slots=True)
class ChainSummary:
    """What a verified chain establishes: the user's total in that epoch, signed."""

    provider_id: bytes
    epoch_id: int
    user_id: str
    rate_card_hash: bytes
    count: int
    total_units: int
    last_hash: bytes


def verify_chain(
    receipts: Sequence[Receipt], *, provider_id: bytes | None = None
) -> ChainSummary:
    """Verify one user's receipts of one epoch, in any order: every signature, seq 1..n with
    no gap or duplicate, each prev_hash = hash of the previous receipt (zero for seq 1),
    total = running sum of units, and one provider, epoch, user and rate card throughout."""
    if not receipts:
        raise ReceiptChainError("no receipts")
    ordered = sorted(receipts, key=lambda r: r.seq)
    first = ordered[0]
    expected_provider = first.provider_id if provider_id is None else provider_id
    prev_hash = ZERO32
    total = 0
    for position, receipt in enumerate(ordered, start=1):
        verify_signature(receipt, provider_id=expected_provider)
        if (receipt.epoch_id, receipt.user_id) != (first.epoch_id, first.user_id):
            raise ReceiptChainError(f"receipt seq {receipt.seq} is for another epoch or user")
        if receipt.rate_card_hash != first.rate_card_hash:
            raise ReceiptChainError(f"receipt seq {receipt.seq} uses another rate card")
        if receipt.seq != position:
            raise ReceiptChainError(f"expected seq {position}, found {receipt.seq} "
                                    "(a receipt is missing or duplicated)")
        if receipt.prev_hash != prev_hash:
            raise ReceiptChainError(f"receipt seq {receipt.seq} does not link to seq "
                                    f"{receipt.seq - 1}")
        total += receipt.units
        if receipt.total_units != total:
            raise ReceiptChainError(f"receipt seq {receipt.seq} states total "
                                    f"{receipt.total_units}, the chain sums to {total}")
        prev_hash = receipt.hash()
    return ChainSummary(expected_provider, first.epoch_id, first.user_id,
                        first.rate_card_hash, len(ordered), total, prev_hash)


def check_text(receipt: Receipt, *, messages: Sequence[Message], completion: str) -> None:
    """Check the user's own text against a receipt: both salted digests, then a recount of
    the visible tokens with the receipt's encoding. Raises ReceiptTextError naming the field."""
    if not receipt.counted_from_text:
        raise ReceiptTextError("this receipt's counts were reported, not counted from text")
    try:
        if prompt_digest(receipt.salt, messages) != receipt.prompt_digest:
            raise ReceiptTextError("prompt digest does not match the receipt")
        if completion_digest(receipt.salt, completion) != receipt.completion_digest:
            raise ReceiptTextError("completion digest does not match the receipt")
        counts = count_visible(messages, completion, encoding=receipt.encoding)
    except TokenCountError as exc:
        raise ReceiptTextError(f"cannot recount: {type(exc).__name__}") from None
    if counts.input_tokens != receipt.input_tokens:
        raise ReceiptTextError(f"input tokens: receipt says {receipt.input_tokens}, "
                               f"recount gives {counts.input_tokens}")
    if counts.output_tokens != receipt.output_tokens:
        raise ReceiptTextError(f"output tokens: receipt says {receipt.output_tokens}, "
                               f"recount gives {counts.output_tokens}")


RECEIPT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Receipt))
