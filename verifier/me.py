"""A user's own check (``zkmeter-verify me``): its opening against the published bundle, its
receipts' signatures and hash chain, the committed value against the last running total,
and, where the user kept the text, the salted digests and a recount with the same tokenizer.
"""

import json
from collections.abc import Sequence
from typing import Any

from circuits.errors import CircuitsError
from circuits.rangeproof import verify
from verifier.bundle import Bundle, Check, check_signature
from verifier.opening import Opening, OpeningError, check_opening, unseal
from verifier.receipts import (
    ChainSummary,
    Receipt,
    ReceiptError,
    check_text,
    receipt_from_json,
    verify_chain,
)
from verifier.tokens import Message, TokenCountError


class UserInputError(ValueError):
    """A user file is unreadable or in the wrong format (exit code 2)."""


def parse_blob(data: bytes) -> bytes:
    """Raw bytes, or hex text (``0x`` optional, whitespace ignored)."""
    text = data.strip()
    try:
        return bytes.fromhex(text.decode("ascii").removeprefix("0x"))
    except (UnicodeDecodeError, ValueError):
        return data


def parse_secret_key(data: bytes) -> bytes:
    """A 32-byte X25519 secret key, raw or hex."""
    key = parse_blob(data)
    if len(key) != 32:
        raise UserInputError("the secret key must be 32 bytes (raw or 64 hex characters)")
    return key


def parse_receipts(data: bytes) -> list[Receipt]:
    """A JSON list of receipts in their JSON form."""
    try:
        items = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise UserInputError("receipts: not JSON") from None
    if not isinstance(items, list) or not items:
        raise UserInputError("receipts: expected a non-empty JSON list of receipts")
    try:
        return [receipt_from_json(item) for item in items]
    except ReceiptError as exc:
        raise UserInputError(f"receipts: {exc}") from None


def parse_texts(data: bytes) -> dict[int, tuple[list[Message], str]]:
    """A JSON list of ``{"seq", "messages": [{"role", "content", "name"?}], "completion"}``."""
    try:
        items = json.loads(data)
        out: dict[int, tuple[list[Message], str]] = {}
        for item in items:
            messages = [Message(m["role"], m["content"], m.get("name"))
                        for m in item["messages"]]
            if not isinstance(item["completion"], str) or type(item["seq"]) is not int:
                raise TypeError("completion must be a string and seq an integer")
            out[item["seq"]] = (messages, item["completion"])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, TokenCountError) as exc:
        raise UserInputError(f"texts: malformed ({type(exc).__name__})") from None
    return out


def open_opening(sealed_or_plain: bytes, secret_key: bytes | None) -> Opening:
    """Unseal with the secret key, or read a plaintext opening (users without a key)."""
    if secret_key is None:
        return Opening.from_bytes(sealed_or_plain)
    return unseal(sealed_or_plain, secret_key)


def check_me(
    bundle: Bundle,
    *,
    opening_bytes: bytes,
    secret_key: bytes | None,
    receipts: Sequence[Receipt],
    texts: dict[int, tuple[list[Message], str]] | None = None,
) -> tuple[list[Check], dict[str, Any]]:
    """Every check of ``me``, each on its own; returns (checks, facts for the report)."""
    checks: list[Check] = [check_signature(bundle)]
    facts: dict[str, Any] = {"epoch_id": bundle.epoch_id}
    opening: Opening | None = None
    try:
        opening = open_opening(opening_bytes, secret_key)
    except OpeningError as exc:
        checks.append(Check("opening", False, str(exc)))
    if opening is not None:
        checks.append(Check("opening", True, f"opened: leaf {opening.leaf_index}, "
                                              f"value {opening.value}"))
        facts["committed_units"] = opening.value
        for name, ok, detail in check_opening(opening, bundle):
            checks.append(Check(name, ok, detail))
        checks.append(_own_proof(bundle, opening))
    summary: ChainSummary | None = None
    try:
        summary = verify_chain(receipts, provider_id=bundle.provider_id)
    except ReceiptError as exc:
        checks.append(Check("receipt_chain", False, str(exc) or type(exc).__name__))
    if summary is not None:
        checks.append(Check("receipt_chain", True, f"{summary.count} receipts signed by the "
                                                   f"provider and chained, total "
                                                   f"{summary.total_units}"))
        facts["receipted_units"] = summary.total_units
    if summary is not None:
        same_epoch = summary.epoch_id == bundle.epoch_id
        checks.append(Check("receipt_epoch", same_epoch, f"receipts are for epoch "
                                                         f"{summary.epoch_id}"))
        if summary.rate_card_hash != bundle.rate_card_hash:
            checks.append(Check("rate_card", False, "receipts and bundle name different rate "
                                                    "cards"))
        else:
            checks.append(Check("rate_card", True, "receipts and bundle use the same rate card"))
    if summary is not None and opening is not None:
        equal = summary.total_units == opening.value
        checks.append(Check("total_matches", equal,
                            f"committed {opening.value}, receipts total {summary.total_units}"
                            + ("" if equal else ": the provider signed both (evidence)")))
    if texts:
        checks.append(_texts(receipts, texts))
    return checks, facts


def _own_proof(bundle: Bundle, opening: Opening) -> Check:
    if not 0 <= opening.leaf_index < len(bundle.leaves):
        return Check("own_range_proof", False, "leaf index outside the bundle")
    leaf = bundle.leaves[opening.leaf_index]
    try:
        verify(bundle.context.transcript(), leaf.proof, [leaf.commitment], n=bundle.bit_size)
    except CircuitsError:
        return Check("own_range_proof", False, "the range proof of my leaf does not verify")
    return Check("own_range_proof", True, "the range proof of my leaf verifies")


def _texts(receipts: Sequence[Receipt], texts: dict[int, tuple[list[Message], str]]) -> Check:
    by_seq = {r.seq: r for r in receipts}
    bad = []
    for seq, (messages, completion) in sorted(texts.items()):
        receipt = by_seq.get(seq)
        try:
            if receipt is None:
                raise ReceiptError(f"no receipt with seq {seq}")
            check_text(receipt, messages=messages, completion=completion)
        except ReceiptError as exc:
            bad.append(f"seq {seq}: {exc}")
    if bad:
        return Check("texts", False, "; ".join(bad[:5]))
    return Check("texts", True, f"{len(texts)} texts match their digests and recount")
