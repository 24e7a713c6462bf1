"""check_identifier: the regex scan for control characters refuses exactly what the former
per-character loop refused (same errors, same accepted values)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prover.errors import InvalidRequestError
from prover.metering import check_identifier


def reference(value: str, name: str, max_bytes: int) -> bytes:
    """The rule as it was written before (one Python comparison per character)."""
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(f"{name} is not valid UTF-8 text") from None
    if not 1 <= len(raw) <= max_bytes:
        raise InvalidRequestError(f"{name} must be 1..{max_bytes} bytes")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in value):
        raise InvalidRequestError(f"{name} must not contain control characters (such as NUL)")
    if not value.strip():
        raise InvalidRequestError(f"{name} must not be whitespace only")
    return raw


def outcome(fn, value):
    try:
        return fn(value, "user_id", 64)
    except InvalidRequestError as exc:
        return str(exc)


# characters around both control ranges, whitespace, surrogates and ordinary text
EDGES = st.sampled_from(["\x00", "\x1f", "\x20", "\x7e", "\x7f", "\x80", "\x9f", "\xa0",
                         "\u2028", "\ud800", " ", "\t", "\n", "a", "é", "数"])


@settings(max_examples=600, deadline=None)
@given(st.lists(st.one_of(EDGES, st.characters()), max_size=40).map("".join))
def test_same_outcome_as_the_per_character_rule(value):
    assert outcome(check_identifier, value) == outcome(reference, value)


@pytest.mark.parametrize("ch", [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))])
def test_every_control_character_is_refused(ch):
    with pytest.raises(InvalidRequestError, match="control characters"):
        check_identifier(f"user{ch}x", "user_id", 64)


@pytest.mark.parametrize("value", ["user-1", "\xa0x", "a b", "数据", "~"])
def test_ordinary_identifiers_pass(value):
    assert check_identifier(value, "user_id", 64) == value.encode()
