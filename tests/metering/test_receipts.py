"""Receipts: canonical bytes, signatures under tampering, strict decoding, chains, text checks."""

import json
from dataclasses import replace

import pytest
from nacl.signing import SigningKey

from verifier.receipts import (
    FLAG_COUNTED,
    RECEIPT_DOMAIN,
    RECEIPT_FIELDS,
    U64_MAX,
    ZERO32,
    Receipt,
    ReceiptChainError,
    ReceiptError,
    ReceiptFormatError,
    ReceiptSignatureError,
    ReceiptTextError,
    _check_fields,
    _plain,
    check_text,
    completion_digest,
    decode_receipt,
    idempotency_key_digest,
    new_signed_receipt,
    prompt_bytes,
    prompt_digest,
    receipt_from_json,
    sign_receipt,
    verify_chain,
    verify_signature,
)
from verifier.tokens import Message, count_visible

KEY = SigningKey(bytes(range(32)))
OTHER = SigningKey(bytes(range(1, 33)))
PID = bytes(KEY.verify_key)
MESSAGES = [Message("system", "be brief"), Message("user", "hello world", name="ann")]
COMPLETION = "Hello! How can I help?"


def make(seq=1, prev=ZERO32, total_before=0, *, text=True, key=KEY, messages=MESSAGES,
         completion=COMPLETION, **over):
    salt = bytes([seq]) * 32
    if text:
        counts = count_visible(messages, completion, encoding="o200k_base")
        fields = dict(encoding="o200k_base", input_tokens=counts.input_tokens,
                      output_tokens=counts.output_tokens,
                      prompt_digest=prompt_digest(salt, messages),
                      completion_digest=completion_digest(salt, completion), flags=FLAG_COUNTED)
    else:
        fields = dict(encoding="", input_tokens=100, output_tokens=20, prompt_digest=ZERO32,
                      completion_digest=ZERO32, flags=0)
    units = 3 * fields["input_tokens"] + 10 * fields["output_tokens"] + 7 * 5
    base = dict(provider_id=bytes(key.verify_key), epoch_id=4, user_id="user-ä", seq=seq,
                prev_hash=prev, idempotency_key_digest=idempotency_key_digest(f"k{seq}"),
                model="gpt-4o", cached_input_tokens=2, reasoning_tokens=5, units=units,
                total_units=total_before + units, rate_card_hash=b"\x07" * 32, salt=salt,
                timestamp_ms=1_764_000_000_000 + seq)
    base.update(fields)
    base.update(over)
    return sign_receipt(Receipt(**base), key)


def chain(n, **kw):
    out, prev, total = [], ZERO32, 0
    for seq in range(1, n + 1):
        r = make(seq, prev, total, text=seq % 2 == 1, **kw)
        out.append(r)
        prev, total = r.hash(), r.total_units
    return out


# --- encoding --------------------------------------------------------------------------------

def test_round_trip_bytes_and_json():
    for r in (make(), make(text=False)):
        data = r.to_bytes()
        assert data.startswith(RECEIPT_DOMAIN)
        assert decode_receipt(data) == r
        assert receipt_from_json(r.dumps()) == r
        assert receipt_from_json(r.to_json()) == r
        verify_signature(decode_receipt(data), provider_id=PID)


def test_layout_is_fixed_width_big_endian():
    r = make(text=False)
    data = r.signed_bytes()
    assert data[16] == 1 and data[17] == 0  # version, flags
    assert data[18:50] == PID
    assert data[50:58] == (4).to_bytes(8, "big")
    user = "user-ä".encode()
    assert data[58:60] == len(user).to_bytes(2, "big") and data[60 : 60 + len(user)] == user
    assert data[-8:] == r.timestamp_ms.to_bytes(8, "big")
    assert len(r.to_bytes()) == len(data) + 64


def test_hash_covers_signature():
    from circuits.hashing import keccak256
    r = make()
    assert r.hash() == keccak256(r.signed_bytes() + r.signature)


def test_unsigned_receipt_has_no_wire_form():
    r = replace(make(), signature=b"")
    with pytest.raises(ReceiptFormatError):
        r.to_bytes()
    with pytest.raises(ReceiptSignatureError):
        verify_signature(r)


# --- tampering -------------------------------------------------------------------------------

def _changed(r, name):
    value = getattr(r, name)
    if name == "flags":
        return None  # flipping flags alone is a format error (tested below)
    if isinstance(value, bytes):
        return bytes([value[0] ^ 1]) + value[1:]
    if isinstance(value, int):
        return value + 1
    return value + "x"


@pytest.mark.parametrize("name", [f for f in RECEIPT_FIELDS if f not in ("signature", "version",
                                                                        "flags")])
def test_every_field_change_breaks_the_signature(name):
    r = make()
    try:
        forged = replace(r, **{name: _changed(r, name)})
    except ReceiptFormatError:
        return  # the change cannot even be expressed as a valid receipt
    with pytest.raises(ReceiptSignatureError):
        verify_signature(forged, provider_id=PID)


def test_every_flipped_byte_is_caught():
    data = make().to_bytes()
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises(ReceiptError):
            verify_signature(decode_receipt(bytes(tampered)), provider_id=PID)


def test_flag_flip_is_a_format_error():
    with pytest.raises(ReceiptFormatError):
        replace(make(), flags=0)
    with pytest.raises(ReceiptFormatError):
        replace(make(text=False), flags=FLAG_COUNTED)


def test_signature_of_another_key_or_provider():
    r = make()
    with pytest.raises(ReceiptSignatureError):
        verify_signature(replace(r, signature=OTHER.sign(r.signed_bytes()).signature))
    with pytest.raises(ReceiptSignatureError):
        verify_signature(make(key=OTHER), provider_id=PID)
    with pytest.raises(ReceiptError):
        sign_receipt(replace(r, signature=b""), OTHER)


# --- strict decoding -------------------------------------------------------------------------

def _patched(data, offset, new):
    return data[:offset] + new + data[offset + len(new):]


@pytest.mark.parametrize("mutate", [
    lambda d: d[:-1],  # truncated signature
    lambda d: d + b"\x00",  # trailing byte
    lambda d: d[:40],  # truncated header
    lambda d: b"",  # empty
    lambda d: b"ZKMETER_RCPT_V2_" + d[16:],  # other domain
    lambda d: _patched(d, 16, b"\x02"),  # version 2
    lambda d: _patched(d, 17, b"\x03"),  # unknown flag
    lambda d: _patched(d, 17, b"\x00"),  # reported flag with digests set
    lambda d: _patched(d, 58, b"\xff\xff"),  # user length beyond the data
    lambda d: _patched(d, 58, b"\x00\x00"),  # empty user id
    lambda d: _patched(d, 60, b"\xc3\x28"),  # invalid UTF-8 in the user id
])
def test_malformed_bytes_are_refused(mutate):
    with pytest.raises(ReceiptFormatError):
        decode_receipt(mutate(make().to_bytes()))


def test_non_bytes_input_is_refused():
    with pytest.raises(ReceiptFormatError):
        decode_receipt("not bytes")


@pytest.mark.parametrize("over", [
    {"seq": 0}, {"units": 10, "total_units": 9}, {"epoch_id": -1}, {"epoch_id": 1 << 64},
    {"input_tokens": True}, {"user_id": ""}, {"user_id": "u" * 257}, {"model": ""},
    {"provider_id": b"\x00" * 31}, {"salt": "00" * 32}, {"encoding": "ö200k"},
    {"signature": b"\x00" * 63}, {"user_id": "\ud800"}, {"version": 2},
])
def test_out_of_range_fields_are_refused(over):
    with pytest.raises(ReceiptFormatError):
        replace(make(), **over)


class _Bytes(bytes):
    pass


class _Int(int):
    pass


class _Str(str):
    pass


_BYTES32 = [bytes(32), b"\x01" * 31, b"\x01" * 33, bytearray(32), "00" * 32, _Bytes(32),
            memoryview(bytes(32)), None]
_U64 = [0, 7, U64_MAX, U64_MAX + 1, -1, True, 1.0, "1", _Int(5)]
_NAMES = ["u", "u" * 256, "u" * 257, "", "ä", "ä" * 128, "ä" * 129, "\ud800", b"u", _Str("u")]
_CANDIDATES = {
    **{name: _BYTES32 for name in ("provider_id", "prev_hash", "idempotency_key_digest",
                                   "rate_card_hash", "salt", "prompt_digest",
                                   "completion_digest")},
    **{name: _U64 for name in ("epoch_id", "seq", "input_tokens", "output_tokens",
                               "cached_input_tokens", "reasoning_tokens", "units",
                               "total_units", "timestamp_ms")},
    "user_id": _NAMES, "model": _NAMES,
    "encoding": ["", "o200k_base", "x" * 64, "x" * 65, "ö", None, _Str("")],
}


def _unchecked(**fields):
    """A Receipt whose fields are set without any validation (to test the checks alone)."""
    receipt = object.__new__(Receipt)
    for name in RECEIPT_FIELDS:
        object.__setattr__(receipt, name, fields[name])
    return receipt


@pytest.mark.parametrize("name", sorted(_CANDIDATES))
def test_the_plain_field_fast_path_never_accepts_what_the_field_checks_refuse(name):
    """verifier.receipts._plain decides the usual receipt in one expression; for every field
    and every candidate value (wrong types, subclasses, sizes and ranges at the edges, non-ASCII
    text), it is True only when the field-by-field checks pass, and it is True for the plain
    values of a metered receipt (so the fast path is the one taken)."""
    plain = {f: getattr(make(text=False, user_id="user-1"), f) for f in RECEIPT_FIELDS}
    assert _plain(_unchecked(**plain))
    taken = 0
    for value in _CANDIDATES[name]:
        receipt = _unchecked(**{**plain, name: value})
        try:
            _check_fields(receipt)
            accepted = True
        except ReceiptFormatError:
            accepted = False
        fast = _plain(receipt)
        assert not fast or accepted, (name, value)
        taken += fast
        if accepted and type(value) in (bytes, int, str) and (
                not isinstance(value, str) or value.isascii()):
            assert fast, (name, value)  # a plain value never falls to the slow path
    assert taken >= 1


def test_a_new_signed_receipt_is_built_validated_and_signed_once():
    base = {name: getattr(make(), name) for name in RECEIPT_FIELDS if name != "signature"}
    receipt, wire = new_signed_receipt(lambda body: KEY.sign(body).signature, **base)
    verify_signature(receipt, provider_id=PID)
    assert wire == receipt.to_bytes() and decode_receipt(wire) == receipt
    assert receipt == make()  # the same receipt as signing a built one
    with pytest.raises(ReceiptFormatError):  # the fields are validated as any receipt's
        new_signed_receipt(lambda body: KEY.sign(body).signature, **{**base, "seq": 0})
    for bad in (b"\x00" * 63, bytearray(64), "00" * 64):
        with pytest.raises(ReceiptFormatError, match="signature"):
            new_signed_receipt(lambda body, bad=bad: bad, **base)
    with pytest.raises(ReceiptError, match="signed here"):
        new_signed_receipt(lambda body: KEY.sign(body).signature, signature=b"", **base)


def test_counted_receipt_needs_digests():
    with pytest.raises(ReceiptFormatError):
        replace(make(), prompt_digest=ZERO32)
    with pytest.raises(ReceiptFormatError):
        replace(make(), encoding="")
    with pytest.raises(ReceiptFormatError):
        replace(make(text=False), encoding="o200k_base")


@pytest.mark.parametrize("mutate", [
    lambda j: j.pop("salt"),
    lambda j: j.update(extra=1),
    lambda j: j.update(seq=True),
    lambda j: j.update(seq="1"),
    lambda j: j.update(prev_hash=j["prev_hash"].upper().replace("0X", "0x")
                       if any(c in "abcdef" for c in j["prev_hash"][2:]) else "0x" + "AB" * 32),
    lambda j: j.update(salt=j["salt"][2:]),
    lambda j: j.update(salt=j["salt"] + "00"),
    lambda j: j.update(salt="0xzz" + j["salt"][4:]),
    lambda j: j.update(counted_from_text=1),
    lambda j: j["tokens"].pop("reasoning"),
    lambda j: j.update(tokens=[1, 2, 3, 4]),
    lambda j: j.update(hash="0x" + "00" * 32),
    lambda j: j.update(units=j["units"] + 1),  # hash (and signature) no longer match
    lambda j: j.update(user_id=5),
])
def test_malformed_json_is_refused(mutate):
    obj = make().to_json()
    mutate(obj)
    with pytest.raises(ReceiptFormatError):
        receipt_from_json(obj)


def test_json_text_and_garbage():
    assert receipt_from_json(json.dumps(make().to_json())) == make()
    for garbage in ("{", "[]", "null", b"\xff"):
        with pytest.raises(ReceiptFormatError):
            receipt_from_json(garbage)


# --- chains ----------------------------------------------------------------------------------

def test_good_chain_in_any_order():
    receipts = chain(6)
    summary = verify_chain(list(reversed(receipts)), provider_id=PID)
    assert summary.count == 6
    assert summary.total_units == sum(r.units for r in receipts) == receipts[-1].total_units
    assert summary.last_hash == receipts[-1].hash()
    assert (summary.epoch_id, summary.user_id) == (4, "user-ä")


def test_empty_chain():
    with pytest.raises(ReceiptChainError):
        verify_chain([])


@pytest.mark.parametrize("drop", [0, 2, 4])
def test_missing_receipt_is_detected(drop):
    receipts = chain(6)
    del receipts[drop]
    with pytest.raises(ReceiptChainError):
        verify_chain(receipts, provider_id=PID)


def test_dropped_tail_is_a_shorter_valid_chain():
    # Without its last receipts a chain is still a chain: the user's opening (value = last
    # total) is what exposes a truncation, so the summary carries count and total to compare.
    receipts = chain(6)
    summary = verify_chain(receipts[:5], provider_id=PID)
    assert (summary.count, summary.total_units) == (5, receipts[4].total_units)
    assert summary.total_units != receipts[5].total_units


def test_duplicate_receipt_is_detected():
    receipts = chain(4)
    with pytest.raises(ReceiptChainError):
        verify_chain([*receipts, receipts[2]], provider_id=PID)


def test_forked_chain_signed_by_the_provider_is_detected():
    receipts = chain(4)
    # the provider re-signs receipt 3 pointing at a different predecessor
    receipts[2] = sign_receipt(replace(receipts[2], prev_hash=b"\x01" * 32, signature=b""), KEY)
    with pytest.raises(ReceiptChainError, match="does not link"):
        verify_chain(receipts, provider_id=PID)


def test_wrong_running_total_signed_by_the_provider_is_detected():
    receipts = chain(3)
    bad = sign_receipt(replace(receipts[2], total_units=receipts[2].total_units - 1,
                               signature=b""), KEY)
    with pytest.raises(ReceiptChainError, match="total"):
        verify_chain([*receipts[:2], bad], provider_id=PID)


@pytest.mark.parametrize("over", [{"user_id": "mallory"}, {"epoch_id": 5},
                                  {"rate_card_hash": b"\x08" * 32}])
def test_mixed_identity_is_detected(over):
    receipts = chain(3)
    bad = sign_receipt(replace(receipts[2], signature=b"", **over), KEY)
    with pytest.raises(ReceiptChainError):
        verify_chain([*receipts[:2], bad], provider_id=PID)


def test_chain_from_another_provider_is_refused():
    with pytest.raises(ReceiptSignatureError):
        verify_chain(chain(2, key=OTHER), provider_id=PID)
    receipts = chain(2)
    with pytest.raises(ReceiptSignatureError):
        verify_chain([receipts[0], make(2, receipts[0].hash(), receipts[0].total_units,
                                        key=OTHER)])


def test_tampered_receipt_in_chain():
    receipts = chain(3)
    receipts[1] = replace(receipts[1], reasoning_tokens=0)
    with pytest.raises(ReceiptSignatureError):
        verify_chain(receipts, provider_id=PID)


# --- text checks -----------------------------------------------------------------------------

def test_text_check_passes_for_the_users_text():
    check_text(make(), messages=MESSAGES, completion=COMPLETION)


@pytest.mark.parametrize(("messages", "completion", "field"), [
    ([Message("system", "be brief"), Message("user", "hello world!", name="ann")], COMPLETION,
     "prompt"),
    ([Message("system", "be brief"), Message("user", "hello world", name="bob")], COMPLETION,
     "prompt"),
    ([Message("system", "be brief"), Message("user", "hello world")], COMPLETION, "prompt"),
    (MESSAGES, COMPLETION + " ", "completion"),
])
def test_changed_text_fails_the_digest(messages, completion, field):
    with pytest.raises(ReceiptTextError, match=field) as info:
        check_text(make(), messages=messages, completion=completion)
    assert "hello" not in str(info.value) and "Hello" not in str(info.value)


def test_overcount_signed_by_the_provider_is_detected():
    r = make()
    inflated = sign_receipt(replace(r, input_tokens=r.input_tokens + 1, signature=b""), KEY)
    with pytest.raises(ReceiptTextError, match="input tokens"):
        check_text(inflated, messages=MESSAGES, completion=COMPLETION)
    inflated = sign_receipt(replace(r, output_tokens=r.output_tokens + 3, signature=b""), KEY)
    with pytest.raises(ReceiptTextError, match="output tokens"):
        check_text(inflated, messages=MESSAGES, completion=COMPLETION)


def test_wrong_encoding_claim_is_detected():
    messages = [Message("user", "数十年後、彼女はその夏のことを思い出した。")]
    cl = count_visible(messages, "", encoding="cl100k_base")
    o2 = count_visible(messages, "", encoding="o200k_base")
    assert cl.input_tokens != o2.input_tokens
    r = sign_receipt(replace(make(messages=messages, completion=""), encoding="cl100k_base",
                             signature=b""), KEY)
    with pytest.raises(ReceiptTextError, match="input tokens"):
        check_text(r, messages=messages, completion="")


def test_text_check_of_a_reported_receipt_or_unknown_encoding():
    with pytest.raises(ReceiptTextError, match="reported"):
        check_text(make(text=False), messages=MESSAGES, completion=COMPLETION)
    r = sign_receipt(replace(make(), encoding="r50k_base", signature=b""), KEY)
    with pytest.raises(ReceiptTextError, match="recount"):
        check_text(r, messages=MESSAGES, completion=COMPLETION)


def test_prompt_bytes_bind_roles_names_and_boundaries():
    a = prompt_bytes([Message("user", "ab"), Message("user", "c")])
    b = prompt_bytes([Message("user", "a"), Message("user", "bc")])
    c = prompt_bytes([Message("user", "ab", name="c")])
    assert len({a, b, c}) == 3
    assert idempotency_key_digest("k") != idempotency_key_digest("k ")
