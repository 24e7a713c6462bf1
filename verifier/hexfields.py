"""The one hex encoding of published JSON: ``0x`` + lowercase hex, decoded strictly."""

from typing import Any


def to_hex(data: bytes) -> str:
    """``0x`` + lowercase hex."""
    return "0x" + data.hex()


def from_hex(value: Any, name: str, length: int | None, error: type[ValueError]) -> bytes:
    """Decode canonical ``0x`` + lowercase hex of ``length`` bytes (any length if None);
    anything else raises ``error`` naming the field."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise error(f"{name}: expected a 0x-prefixed hex string")
    try:
        out = bytes.fromhex(value[2:])
    except ValueError:
        raise error(f"{name}: not valid hex") from None
    if value[2:] != out.hex():
        raise error(f"{name}: expected lowercase hex without spaces")
    if length is not None and len(out) != length:
        raise error(f"{name}: expected {length} bytes, got {len(out)}")
    return out
