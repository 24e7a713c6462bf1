"""A user's own check (``zkmeter-verify me``): its opening against the published bundle, its
receipts' signatures and hash chain, the committed value against the last running total,
and, where the user kept the text, the salted digests and a recount with the same tokenizer.

A user's own mistake is not provider fraud. Receipts of another user, epoch or provider, a
receipt file with a gap, a receipt not signed by the provider, an opening of another epoch,
or a committed value above the receipts' total (the file most likely lacks its last
receipts) are reported as what is wrong with the input (:class:`UserMistake`, exit 2). Only
contradictions between data the provider signed (a forked chain, a wrong running total, a
commitment below the signed total, an opening that does not match the signed bundle) fail
verification (exit 1).

The user need not know its leaf: :func:`find_opening` tries its key on every published
sealed opening (the ``/v1/epochs/{id}/openings`` list) and keeps the one that opens.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from circuits.errors import CircuitsError
from circuits.rangeproof import verify
from verifier.account import asset_name
from verifier.bundle import Bundle, Check, check_signature
from verifier.opening import Opening, OpeningError, check_opening, unseal
from verifier.receipts import (
    ChainSummary,
    Receipt,
    ReceiptError,
    check_text,
    receipt_from_json,
    verify_chain,
    verify_signature,
)
from verifier.tokens import Message, TokenCountError


class UserInputError(ValueError):
    """A user file is unreadable or in the wrong format (exit code 2)."""


class UserMistake(UserInputError):
    """The user's inputs do not belong together (another user's or epoch's receipts, a gap
    in the file, the wrong bundle): what is wrong, not evidence (exit code 2). ``checks`` and
    ``facts`` hold what was checked before the mistake showed."""

    def __init__(self, message: str, checks: Sequence[Check] = (),
                 facts: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.checks = list(checks)
        self.facts = dict(facts or {})


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


def find_opening(openings: Mapping[str, str], secret_key: bytes,
                 progress: Callable[[int], None] | None = None) -> tuple[str, bytes] | None:
    """The (tag, sealed bytes) of the one published opening that opens with ``secret_key``,
    trying each in turn (``progress(1)`` after each); None if none does."""
    for tag, sealed_hex in openings.items():
        if progress is not None:
            progress(1)
        try:
            sealed = bytes.fromhex(str(sealed_hex).removeprefix("0x"))
            unseal(sealed, secret_key)
        except (ValueError, OpeningError):
            continue
        return tag, sealed
    return None


def _ranges(seqs: Sequence[int]) -> str:
    out: list[str] = []
    start = prev = seqs[0]
    for seq in [*seqs[1:], None]:
        if seq is not None and seq == prev + 1:
            prev = seq
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if seq is not None:
            start = prev = seq
    return ", ".join(out)


def screen_receipts(receipts: Sequence[Receipt], bundle: Bundle,
                    user_id: str | None = None) -> str | None:
    """What is wrong with the user's receipt file for this bundle, if anything a user can
    get wrong (None: the file belongs with the bundle and has no gap)."""
    users = sorted({r.user_id for r in receipts})
    if len(users) > 1:
        return (f"the receipts file mixes the receipts of {len(users)} users "
                f"({', '.join(repr(u) for u in users[:3])}): keep only your own")
    if user_id is not None and users[0] != user_id:
        return f"these receipts are user {users[0]!r}'s, not {user_id!r}'s: use your own"
    epochs_ = sorted({r.epoch_id for r in receipts})
    if len(epochs_) > 1:
        return (f"the receipts file mixes epochs {', '.join(map(str, epochs_))}: check one "
                f"epoch at a time")
    if epochs_[0] != bundle.epoch_id:
        return (f"your receipts are for epoch {epochs_[0]}, the bundle is epoch "
                f"{bundle.epoch_id}: use the bundle of epoch {epochs_[0]} "
                f"(/v1/epochs/{epochs_[0]}/bundle)")
    providers = {r.provider_id for r in receipts}
    if providers != {bundle.provider_id}:
        return "these receipts name another provider than the bundle's"
    for receipt in sorted(receipts, key=lambda r: r.seq):
        try:
            verify_signature(receipt, provider_id=bundle.provider_id)
        except ReceiptError:
            return (f"receipt seq {receipt.seq} is not signed by the bundle's provider key: "
                    f"it is no receipt of this provider (altered or from elsewhere)")
    seqs = sorted(r.seq for r in receipts)
    if len(set(seqs)) != len(seqs):
        by_seq: dict[int, bytes] = {}
        for r in receipts:
            if by_seq.setdefault(r.seq, r.hash()) != r.hash():
                return None  # two different signed receipts with one seq: evidence
        return "the receipts file holds the same receipt twice: remove the copy"
    missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    if missing:
        return (f"your receipts file is missing seq {_ranges(missing)} (it holds "
                f"{_ranges(seqs)}): fetch them (MeterService.ListReceipts) and run again")
    return None


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
    user_id: str | None = None,
) -> tuple[list[Check], dict[str, Any]]:
    """Every check of ``me``, each on its own; returns (checks, facts for the report).

    Raises :class:`UserMistake` when the inputs do not belong together (module docstring);
    the checks done so far are in its ``checks`` attribute."""
    checks: list[Check] = [check_signature(bundle)]
    facts: dict[str, Any] = {"epoch_id": bundle.epoch_id}
    if bundle.account is not None:  # the billing account the usage was billed to
        facts["account"] = {"account_id": "0x" + bundle.subject.hex(),
                            "payer": "0x" + bundle.account.payer.hex(),
                            "asset": asset_name(bundle.account.asset)}

    def mistake(message: str) -> UserMistake:
        return UserMistake(message, checks, facts)

    problem = screen_receipts(receipts, bundle, user_id)
    if problem is not None:
        raise mistake(problem)
    facts["user_id"] = receipts[0].user_id
    try:
        opening = open_opening(opening_bytes, secret_key)
    except OpeningError as exc:
        raise mistake(f"{exc}: is this your opening and your key?") from None
    if opening.epoch_id != bundle.epoch_id:
        raise mistake(f"the opening is for epoch {opening.epoch_id}, the bundle is epoch "
                      f"{bundle.epoch_id}: use the matching bundle")
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
    if texts:
        checks.append(_texts(receipts, texts))
    if summary is not None:
        if opening.value > summary.total_units and all(c.ok for c in checks):
            checks.append(Check("total_matches", False, f"committed {opening.value}, your "
                                                        f"receipts total {summary.total_units}"))
            raise mistake(
                f"the provider committed {opening.value} units but your receipts end at seq "
                f"{summary.count} with total {summary.total_units}: your file most likely "
                f"lacks the last receipts (seq > {summary.count}); fetch them "
                f"(MeterService.ListReceipts) and run again. If the provider cannot show "
                f"receipts signed up to {opening.value}, it overcharged you")
        equal = summary.total_units == opening.value
        checks.append(Check("total_matches", equal,
                            f"committed {opening.value}, receipts total {summary.total_units}"
                            + ("" if equal else ": below the total the provider signed in "
                                                "your receipts; it signed both (evidence)")))
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
