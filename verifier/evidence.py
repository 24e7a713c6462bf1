"""Evidence files: a payer's finding that anyone can re-check without the payer's secret key.

An evidence file carries only provider-signed items, so a third party needs nothing from the
payer but the file: the account's bundle (JSON, signed by the provider's Ed25519 key), the
payer statement in plaintext (wire bytes as hex, signed by the same key; revealing it is the
payer's choice) and, for a user's claim, that user's provider-signed receipts. Each claim
names a contradiction; :func:`check_evidence` re-verifies every signature and re-derives each
claim from the signed items alone, never from the file's words::

    {"format": "zkmeter-evidence", "version": 1,
     "bundle": {...bundle JSON...}, "statement": "0x<statement wire bytes>",
     "claims": [{"kind": K, "entries": [i, ...], "user_id": U | null,
                 "receipts": [...receipt JSON...], "detail": "..."}]}

Claims and what supports them (``strength`` in the result):

- ``provider_signed`` (the provider's own signed data contradicts itself; nobody's word is
  needed): ``padding_with_value`` (a padding entry with a value > 0 that opens its billed
  leaf), ``duplicate_user`` (two entries of one user id), ``opening_mismatch`` (an entry
  does not open its leaf), ``total_mismatch`` (the entries do not sum to the bundle's V and
  R), ``statement_bundle_mismatch`` (a statement for the same chain, contract, provider,
  account and epoch as the bundle, but of other leaves), and ``overcharged_user`` when the
  stated receipt hash is one of the forwarded receipts (the statement itself says where the
  chain ends) and the stated value is not that receipt's running total, or the chain goes on
  past it.
- ``rebuttable``: ``overcharged_user`` when the stated hash is none of the forwarded
  receipts' and the stated value exceeds the last one's total: it holds unless the provider
  shows receipts it signed after the last forwarded one that end at the stated hash.
- ``payer_attested``: ``phantom_user``. The statement proves the provider billed that user
  id; that it is not one of the payer's users rests on the payer's word.

A claim is re-derived only when both signatures verify under the bundle's provider key and,
except for ``statement_bundle_mismatch``, the statement is bound to the bundle (its bundle
hash, header and tags); otherwise the file proves nothing. Unreadable files raise
:class:`EvidenceFormatError`.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from circuits.constants import CURVE_ORDER
from circuits.errors import CircuitsError
from circuits.pedersen import opens
from verifier.bundle import Bundle, BundleFormatError, Check, check_signature, parse_bundle
from verifier.hexfields import to_hex
from verifier.receipts import Receipt, ReceiptError, receipt_from_json, verify_chain
from verifier.statement import (
    PayerStatement,
    StatementEntry,
    StatementError,
    bundle_hash,
    decode_statement,
    verify_statement_signature,
)

EVIDENCE_FORMAT = "zkmeter-evidence"
EVIDENCE_VERSION = 1
CLAIM_KINDS = ("padding_with_value", "phantom_user", "duplicate_user", "overcharged_user",
               "statement_bundle_mismatch", "opening_mismatch", "total_mismatch")
PROVIDER_SIGNED, REBUTTABLE, PAYER_ATTESTED = "provider_signed", "rebuttable", "payer_attested"


class EvidenceFormatError(ValueError):
    """The evidence file cannot be read: not JSON, wrong format or version, malformed items."""


@dataclass(frozen=True)
class Claim:
    """One contradiction found in provider-signed data: its kind, the statement entries it
    is about, the user (if any), that user's receipts (``overcharged_user``), and a sentence."""

    kind: str
    detail: str
    entries: tuple[int, ...] = ()
    user_id: str | None = None
    receipts: tuple[Receipt, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The claim as the evidence file holds it."""
        return {"kind": self.kind, "entries": list(self.entries), "user_id": self.user_id,
                "receipts": [r.to_json() for r in self.receipts], "detail": self.detail}


@dataclass(frozen=True)
class ClaimResult:
    """A claim re-derived from the signed items: whether it holds, on what, and why."""

    kind: str
    holds: bool
    strength: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form."""
        return {"kind": self.kind, "holds": self.holds, "strength": self.strength,
                "detail": self.detail}


@dataclass(frozen=True)
class EvidenceResult:
    """The outcome of :func:`check_evidence`: the signature checks and each claim's result.
    ``holds`` is True when at least one claim holds."""

    checks: list[Check]
    claims: list[ClaimResult]
    epoch_id: int
    account_id: bytes
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        """Whether the file proves (or, for a payer-attested claim, supports) anything."""
        return any(c.holds for c in self.claims)


def make_evidence(bundle: Bundle, statement: PayerStatement, claims: Sequence[Claim]
                  ) -> dict[str, Any]:
    """The evidence file (JSON object) of ``claims`` about ``bundle`` and ``statement``."""
    return {"format": EVIDENCE_FORMAT, "version": EVIDENCE_VERSION,
            "epoch_id": bundle.epoch_id, "account_id": to_hex(bundle.subject),
            "bundle": bundle.to_json(), "statement": to_hex(statement.to_bytes()),
            "claims": [c.to_json() for c in claims]}


def dumps_evidence(bundle: Bundle, statement: PayerStatement, claims: Sequence[Claim]) -> str:
    """The evidence file's text."""
    return json.dumps(make_evidence(bundle, statement, claims), indent=1) + "\n"


# --- reading (the trust boundary) ---------------------------------------------------------

def _parse(data: bytes) -> tuple[Bundle, PayerStatement, list[Claim]]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise EvidenceFormatError("evidence: not JSON") from None
    if not isinstance(obj, dict) or obj.get("format") != EVIDENCE_FORMAT:
        raise EvidenceFormatError(f"evidence: not a {EVIDENCE_FORMAT} file")
    if obj.get("version") != EVIDENCE_VERSION:
        raise EvidenceFormatError(f"evidence: unsupported version {obj.get('version')!r}")
    if not isinstance(obj.get("bundle"), dict):
        raise EvidenceFormatError("evidence: bundle must be the bundle's JSON object")
    try:
        bundle = parse_bundle(json.dumps(obj["bundle"]))
    except BundleFormatError as exc:
        raise EvidenceFormatError(f"evidence: the bundle is malformed: {exc}") from None
    raw = obj.get("statement")
    try:
        if not isinstance(raw, str):
            raise ValueError
        statement = decode_statement(bytes.fromhex(raw.removeprefix("0x")))
    except ValueError as exc:  # StatementError is a ValueError
        why = f": {exc}" if isinstance(exc, StatementError) else ""
        raise EvidenceFormatError(f"evidence: the statement is not a statement's hex{why}"
                                  ) from None
    items = obj.get("claims")
    if not isinstance(items, list) or not items:
        raise EvidenceFormatError("evidence: claims must be a non-empty list")
    return bundle, statement, [_claim(i, item) for i, item in enumerate(items)]


def _claim(index: int, item: Any) -> Claim:
    where = f"evidence: claims[{index}]"
    if not isinstance(item, dict) or item.get("kind") not in CLAIM_KINDS:
        raise EvidenceFormatError(f"{where}: kind must be one of {', '.join(CLAIM_KINDS)}")
    entries = item.get("entries", [])
    if not isinstance(entries, list) or not all(type(e) is int and e >= 0 for e in entries):
        raise EvidenceFormatError(f"{where}: entries must be a list of entry indices")
    user_id = item.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise EvidenceFormatError(f"{where}: user_id must be a string or null")
    receipts_json = item.get("receipts", [])
    if not isinstance(receipts_json, list):
        raise EvidenceFormatError(f"{where}: receipts must be a list")
    try:
        receipts = tuple(receipt_from_json(r) for r in receipts_json)
    except ReceiptError as exc:
        raise EvidenceFormatError(f"{where}: a receipt is malformed: {exc}") from None
    detail = item.get("detail", "")
    return Claim(item["kind"], detail if isinstance(detail, str) else "", tuple(entries),
                 user_id, receipts)


# --- re-deriving ----------------------------------------------------------------------------

def header_differences(bundle: Bundle, statement: PayerStatement) -> list[str]:
    """Which of chain, contract, provider, account and epoch the statement names otherwise
    than the bundle."""
    pairs = (("chain", statement.chain_id, bundle.chain_id),
             ("contract", statement.contract, bundle.contract),
             ("provider", statement.provider_id, bundle.provider_id),
             ("account", statement.account_id, bundle.subject),
             ("epoch", statement.epoch_id, bundle.epoch_id))
    return [name for name, a, b in pairs if a != b]


def is_bound(bundle: Bundle, statement: PayerStatement) -> bool:
    """The statement is of this bundle: same header, bundle hash and tags in order."""
    return (not header_differences(bundle, statement)
            and statement.bundle_hash == bundle_hash(bundle)
            and [e.tag for e in statement.entries] == [leaf.tag for leaf in bundle.leaves])


def entry_opens(bundle: Bundle, index: int, entry: StatementEntry) -> bool:
    """v*G + r*H equals the commitment of leaf ``index`` (False for a malformed one)."""
    try:
        return opens(bundle.leaves[index].commitment, entry.value, entry.blinding)
    except CircuitsError:
        return False


def overcharge(entry: StatementEntry, receipts: Sequence[Receipt]) -> tuple[str, str] | None:
    """How the stated (value, last receipt hash) of a user contradicts the user's verified
    receipt chain ``receipts`` (sorted by seq from 1): (strength, sentence), or None if it
    agrees."""
    last = receipts[-1]
    if (entry.last_receipt_hash, entry.value) == (last.hash(), last.total_units):
        return None
    named = next((r for r in receipts if r.hash() == entry.last_receipt_hash), None)
    if named is not None:
        if entry.value != named.total_units:
            return PROVIDER_SIGNED, (
                f"the statement names receipt seq {named.seq} as the user's last, whose "
                f"running total is {named.total_units}, but states value {entry.value}")
        return PROVIDER_SIGNED, (
            f"the statement names receipt seq {named.seq} as the user's last, but the "
            f"provider signed receipts up to seq {last.seq} (total {last.total_units})")
    if entry.value > last.total_units:
        return REBUTTABLE, (
            f"stated value {entry.value} exceeds the user's signed receipts' total "
            f"{last.total_units} (seq 1..{last.seq}), and the stated last receipt is none of "
            f"them: it holds unless the provider shows signed receipts after seq {last.seq} "
            f"ending at the stated hash")
    return REBUTTABLE, (
        f"the stated last receipt hash is none of the user's receipts (seq 1..{last.seq}, "
        f"total {last.total_units}; stated value {entry.value})")


def _derive(claim: Claim, bundle: Bundle, statement: PayerStatement) -> ClaimResult:
    kind, entries = claim.kind, statement.entries

    def result(holds: bool, detail: str, strength: str = PROVIDER_SIGNED) -> ClaimResult:
        return ClaimResult(kind, holds, strength, detail)

    if kind == "statement_bundle_mismatch":
        differ = header_differences(bundle, statement)
        if differ:
            return result(False, f"the statement is for another {', '.join(differ)}: two "
                                 f"different epochs, no contradiction")
        if is_bound(bundle, statement):
            return result(False, "the statement is of this very bundle")
        return result(True, "the provider signed, for one account epoch, a statement of "
                            "other leaves than the bundle it signed")
    if not is_bound(bundle, statement):
        return result(False, "the statement is not of this bundle (bundle hash, header or "
                             "tags differ), so its entries say nothing about these leaves")
    want = {"duplicate_user": 2, "total_mismatch": 0}.get(kind, 1)
    if len(claim.entries) != want or any(i >= len(entries) for i in claim.entries):
        return result(False, f"a {kind} claim names {want} entries of the statement")
    if kind == "total_mismatch":
        values = sum(e.value for e in entries)
        blindings = sum(e.blinding for e in entries) % CURVE_ORDER
        if values != bundle.total or blindings != bundle.total_blinding:
            return result(True, f"the entries sum to {values} units (blindings "
                                f"{'match' if blindings == bundle.total_blinding else 'differ'})"
                                f"; the bundle bills V = {bundle.total}")
        return result(False, "the entries sum to the bundle's V and R")
    index = claim.entries[0]
    entry = entries[index]
    if kind == "opening_mismatch":
        if entry_opens(bundle, index, entry):
            return result(False, f"entry {index} opens its leaf")
        return result(True, f"entry {index} (value {entry.value}) does not open leaf {index}")
    if kind == "padding_with_value":
        if entry.user_id is not None or entry.value == 0:
            return result(False, f"entry {index} is not a padding entry with a value")
        if not entry_opens(bundle, index, entry):
            return result(False, f"entry {index} does not open its leaf (an opening_mismatch, "
                                 f"not billed padding)")
        return result(True, f"padding entry {index} opens its leaf with value {entry.value}: "
                            f"padding billed")
    if kind == "duplicate_user":
        i, j = claim.entries
        other = entries[j]
        if i == j or entry.user_id is None or entry.user_id != other.user_id:
            return result(False, f"entries {i} and {j} are not two entries of one user")
        return result(True, f"entries {i} and {j} both bill user {entry.user_id!r} (values "
                            f"{entry.value} and {other.value})")
    if kind == "phantom_user":
        if entry.user_id is None or entry.user_id != claim.user_id:
            return result(False, f"entry {index} is not user {claim.user_id!r}'s",
                          PAYER_ATTESTED)
        billed = "opens its leaf" if entry_opens(bundle, index, entry) else \
            "does not open its leaf"
        return result(True, f"the provider signed that entry {index} bills user "
                            f"{entry.user_id!r} with value {entry.value} ({billed}); that it "
                            f"is not the payer's user rests on the payer's word",
                      PAYER_ATTESTED)
    # overcharged_user
    return _overcharged(claim, bundle, index, entry, result)


def _overcharged(claim: Claim, bundle: Bundle, index: int, entry: StatementEntry,
                 result: Callable[..., ClaimResult]) -> ClaimResult:
    if entry.user_id is None or not claim.receipts:
        return result(False, f"entry {index} is padding or the claim carries no receipts")
    if any(r.user_id != entry.user_id or r.epoch_id != bundle.epoch_id
           for r in claim.receipts):
        return result(False, f"the receipts are not user {entry.user_id!r}'s of epoch "
                             f"{bundle.epoch_id}")
    try:
        verify_chain(claim.receipts, provider_id=bundle.provider_id)
    except ReceiptError as exc:
        return result(False, f"the receipts are not one chain signed by the provider: {exc}")
    found = overcharge(entry, sorted(claim.receipts, key=lambda r: r.seq))
    if found is None:
        return result(False, f"entry {index} states the user's last receipt and its total")
    strength, detail = found
    return result(True, f"user {entry.user_id!r} (entry {index}): {detail}", strength)


def check_evidence(data: bytes) -> EvidenceResult:
    """Re-verify an evidence file (module docstring); raises EvidenceFormatError when it
    cannot be read."""
    bundle, statement, claims = _parse(data)
    checks = [check_signature(bundle)]
    try:
        verify_statement_signature(statement)
        checks.append(Check("statement_signature", True, "the statement's Ed25519 signature "
                                                         "verifies"))
    except StatementError as exc:
        checks.append(Check("statement_signature", False, str(exc)))
    same = statement.provider_id == bundle.provider_id
    checks.append(Check("same_provider", same, "the statement and the bundle are signed by "
                        + ("one provider key" if same else "different keys")))
    facts = {"provider_id": to_hex(bundle.provider_id)}
    if not all(c.ok for c in checks):
        results = [ClaimResult(c.kind, False, PROVIDER_SIGNED, "the signed items do not "
                               "verify under one provider key: the file proves nothing")
                   for c in claims]
    else:
        results = [_derive(c, bundle, statement) for c in claims]
    return EvidenceResult(checks, results, bundle.epoch_id, bundle.subject, facts)


__all__ = [
    "CLAIM_KINDS",
    "EVIDENCE_FORMAT",
    "EVIDENCE_VERSION",
    "PAYER_ATTESTED",
    "PROVIDER_SIGNED",
    "REBUTTABLE",
    "Claim",
    "ClaimResult",
    "EvidenceFormatError",
    "EvidenceResult",
    "check_evidence",
    "dumps_evidence",
    "entry_opens",
    "header_differences",
    "is_bound",
    "make_evidence",
    "overcharge",
]
