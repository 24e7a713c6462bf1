"""The privacy audit of published epoch data (``zkmeter-verify audit``).

What the public may learn from a bundle is the epoch total, the padded number of leaves and
the time window (README.md, "What is guaranteed", point 5), and, per billing account, the
account (operator, payer and asset addresses: the account is public on-chain, where the
payer opened it). The audit checks that the
published JSON carries nothing else: only the bundle schema's fields, only integers and hex
strings (no free text that could hold a user id or a prompt), a power-of-two leaf count,
tags never repeated within the epoch or across the previous epochs given (pseudonyms must
be unlinkable), and, if the sealed openings are given, one per leaf and all of the same
length.
"""

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from verifier.bundle import Bundle, Check

_HEX = re.compile(r"^0x[0-9a-f]*$")
_SCHEMA: dict[str, Any] = {
    "version": int, "chain_id": int, "contract": str, "provider_id": str, "epoch_id": int,
    "window": {"start": int, "end": int}, "rate_card_hash": str, "bit_size": int,
    "leaves": [{"tag": str, "commitment": str, "proof": str}],
    "total": {"value": int, "blinding": str}, "merkle_root": str, "signature": str,
}
_ACCOUNT = {"operator": str, "payer": str, "asset": str, "provider_id": str,
            "account_id": str}
_SCHEMA_V2 = {**_SCHEMA, "account": _ACCOUNT}
DEFAULT_MIN_ANONYMITY = 16


def _schema_problems(value: Any, schema: Any, where: str) -> list[str]:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        problems = [f"{where}.{key}: field not in the bundle schema"
                    for key in value if key not in schema]
        problems += [f"{where}.{key}: missing" for key in schema if key not in value]
        for key in schema.keys() & value.keys():
            problems += _schema_problems(value[key], schema[key], f"{where}.{key}")
        return problems
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [p for i, item in enumerate(value)
                for p in _schema_problems(item, schema[0], f"{where}[{i}]")]
    if schema is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected an integer"]
    if not isinstance(value, str) or not _HEX.match(value):
        return [f"{where}: expected lowercase 0x-hex, found other text"]
    return []


def check_schema(raw: Mapping[str, Any]) -> Check:
    """Only the schema's fields, only integers and hex: no identifiers or text."""
    schema = _SCHEMA_V2 if raw.get("version") == 2 else _SCHEMA
    problems = _schema_problems(raw, schema, "bundle")
    if problems:
        shown = "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
        return Check("no_identifiers", False, shown)
    return Check("no_identifiers", True,
                 "only schema fields; integers and hex only (no ids, no text)")


def check_padding(bundle: Bundle) -> Check:
    """The leaf count is a power of two (padding hides the number of users)."""
    count = len(bundle.leaves)
    ok = count > 0 and count & (count - 1) == 0
    return Check("padding", ok, f"{count} leaves" + ("" if ok else ": not a power of two"))


def check_tags(bundle: Bundle, previous: Sequence[Bundle]) -> Check:
    """No tag repeats within the epoch or appears in any previous epoch given."""
    tags = [leaf.tag for leaf in bundle.leaves]
    first: dict[bytes, int] = {}
    repeated = tuple(i for i, tag in enumerate(tags) if first.setdefault(tag, i) != i)
    seen = {leaf.tag for old in previous for leaf in old.leaves}
    linked = tuple(i for i, tag in enumerate(tags) if tag in seen)
    if not previous and not repeated:
        return Check.not_checked("tags_unlinkable", "no tag repeats within the epoch, but "
                                 "unlinkability across epochs was not checked: give earlier "
                                 "bundles with --previous")
    if repeated or linked:
        detail = f"{len(repeated)} tags repeated in the epoch, {len(linked)} seen in " \
                 f"{len(previous)} previous epochs"
        return Check("tags_unlinkable", False, detail, tuple(sorted(set(repeated + linked))))
    return Check("tags_unlinkable", True,
                 f"all {len(tags)} tags fresh (compared with {len(previous)} previous epochs)")


def check_openings(bundle: Bundle, openings: Mapping[str, str] | None) -> Check:
    """One sealed opening per leaf, all of the same length."""
    if openings is None:
        return Check.not_checked("sealed_openings", "not checked: give the published openings "
                                                    "with --openings")
    tags = {"0x" + leaf.tag.hex() for leaf in bundle.leaves}
    lengths = {len(v) for v in openings.values() if isinstance(v, str)}
    problems = []
    if set(openings) != tags:
        problems.append("openings are not exactly one per leaf")
    if len(lengths) != 1:
        problems.append("sealed openings differ in length")
    if problems:
        return Check("sealed_openings", False, "; ".join(problems))
    return Check("sealed_openings", True,
                 f"{len(openings)} sealed openings, one per leaf, all the same length")


def audit(
    raw: Mapping[str, Any],
    bundle: Bundle,
    *,
    previous: Sequence[Bundle] = (),
    openings: Mapping[str, str] | None = None,
    min_anonymity: int = DEFAULT_MIN_ANONYMITY,
) -> tuple[list[Check], list[str], int]:
    """Run the privacy checks; returns (checks, warnings, anonymity-set size)."""
    checks = [
        check_schema(raw),
        check_padding(bundle),
        check_tags(bundle, previous),
        check_openings(bundle, openings),
    ]
    size = len(bundle.leaves)
    warnings = []
    if size < min_anonymity:
        warnings.append(f"anonymity set of {size} leaves is below the minimum of {min_anonymity}")
    return checks, warnings, size


def load_openings(text: bytes) -> dict[str, str]:
    """A JSON object mapping leaf tags to sealed openings (hex)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("openings must be a JSON object of tag -> sealed opening")
    return {str(k): v for k, v in data.items()}
