"""The payer statement's bytes: round trip, strict decoding, signature, sealing, fixed size."""

import dataclasses
import struct

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from circuits.constants import CURVE_ORDER
from circuits.hashing import keccak256
from tests.verifier.payer_world import account_epoch, restate
from verifier.receipts import MAX_USER_ID_BYTES
from verifier.statement import (
    ENTRY_BYTES,
    STATEMENT_DOMAIN,
    PayerStatement,
    StatementEntry,
    StatementError,
    StatementFormatError,
    StatementSealError,
    StatementSignatureError,
    decode_statement,
    make_statement,
    seal_statement,
    sign_statement,
    unseal_statement,
    verify_statement_signature,
)

HEAD_BYTES = 16 + 1 + 32 + 20 + 32 + 32 + 8 + 32 + 4


@pytest.fixture(scope="module")
def world():
    return account_epoch({"alice": 120, "bob": 7, "carol": 0})


def test_make_statement_fills_the_bundle_and_signs(world):
    stmt, bundle = world.statement, world.bundle
    assert stmt.chain_id == bundle.chain_id and stmt.contract == bundle.contract
    assert stmt.provider_id == bundle.provider_id
    assert stmt.account_id == bundle.account_id == bundle.subject
    assert stmt.epoch_id == bundle.epoch_id
    assert stmt.bundle_hash == keccak256(bundle.signed_bytes())
    assert [e.tag for e in stmt.entries] == [leaf.tag for leaf in bundle.leaves]
    assert stmt.total == bundle.total == 127
    assert {e.user_id for e in stmt.entries} == {"alice", "bob", "carol", None}
    verify_statement_signature(stmt)


def test_round_trip_and_layout(world):
    stmt = world.statement
    wire = stmt.to_bytes()
    assert wire.startswith(STATEMENT_DOMAIN + b"\x01")
    assert len(wire) == HEAD_BYTES + len(stmt.entries) * ENTRY_BYTES + 64
    assert ENTRY_BYTES == 32 + 1 + 2 + MAX_USER_ID_BYTES + 8 + 32 + 32
    assert wire[:-64] == stmt.signed_bytes()
    again = decode_statement(wire)
    assert again == stmt
    verify_statement_signature(again)


def test_sealed_round_trip_and_wrong_key(world):
    opened = unseal_statement(world.sealed, bytes(world.payer_key))
    assert opened == world.statement
    with pytest.raises(StatementSealError, match="does not open"):
        unseal_statement(world.sealed, bytes(PrivateKey.generate()))
    with pytest.raises(StatementSealError, match="does not open"):
        unseal_statement(world.sealed[:-1], bytes(world.payer_key))
    with pytest.raises(StatementSealError, match="32 bytes"):
        unseal_statement(world.sealed, b"short")


def test_size_depends_only_on_the_leaf_count():
    short = account_epoch({"a": 5})
    long = account_epoch({"u" * MAX_USER_ID_BYTES: 5, "ü" * 100: 9})
    assert len(short.bundle.leaves) == len(long.bundle.leaves) == 4
    assert len(short.statement.to_bytes()) == len(long.statement.to_bytes())
    assert len(short.sealed) == len(long.sealed)


def test_tampered_signature_and_content_fail(world):
    stmt = world.statement
    bad_sig = dataclasses.replace(stmt, signature=bytes([stmt.signature[0] ^ 1])
                                  + stmt.signature[1:])
    with pytest.raises(StatementSignatureError):
        verify_statement_signature(bad_sig)
    entries = list(stmt.entries)
    entries[0] = dataclasses.replace(entries[0], value=entries[0].value + 1)
    with pytest.raises(StatementSignatureError):
        verify_statement_signature(dataclasses.replace(stmt, entries=tuple(entries)))
    other = sign_statement(stmt, SigningKey.generate())  # signed, but not by provider_id
    with pytest.raises(StatementSignatureError):
        verify_statement_signature(other)
    assert issubclass(StatementSignatureError, StatementError)


def test_make_statement_refuses_entries_that_are_not_the_bundles(world):
    entries, bundle, key = world.entries, world.bundle, world.signing_key
    with pytest.raises(ValueError, match="tags"):
        make_statement(bundle, entries[:-1], key)
    with pytest.raises(ValueError, match="tags"):
        make_statement(bundle, list(reversed(entries)), key)
    with pytest.raises(ValueError, match="tags"):
        make_statement(bundle, [*entries, entries[-1]], key)
    with pytest.raises(ValueError, match="provider key"):
        make_statement(bundle, entries, SigningKey.generate())
    with pytest.raises(StatementFormatError):
        make_statement(bundle, restate(entries, 0, value=1 << 32), key)
    with pytest.raises(StatementFormatError):
        make_statement(bundle, restate(entries, 0, blinding=CURVE_ORDER), key)


def _entry_at(wire: bytes, index: int) -> int:
    return HEAD_BYTES + index * ENTRY_BYTES


def _patch(wire: bytes, offset: int, data: bytes) -> bytes:
    return wire[:offset] + data + wire[offset + len(data):]


def _padding_index(stmt: PayerStatement) -> int:
    return next(i for i, e in enumerate(stmt.entries) if e.user_id is None)


def _user_index(stmt: PayerStatement) -> int:
    return next(i for i, e in enumerate(stmt.entries) if e.user_id is not None)


def test_strict_decoding_rejects_malformed_bytes(world):
    stmt = world.statement
    wire = stmt.to_bytes()
    pad, user = _entry_at(wire, _padding_index(stmt)), _entry_at(wire, _user_index(stmt))
    user_len = len(stmt.entries[_user_index(stmt)].user_id.encode())
    cases = {
        "empty": b"",
        "truncated": wire[:-1],
        "extended": wire + b"\x00",
        "domain": _patch(wire, 0, b"ZKMETER_STMT_V2_"),
        "version": _patch(wire, 16, b"\x02"),
        "count": _patch(wire, HEAD_BYTES - 4, struct.pack(">I", len(stmt.entries) + 1)),
        "kind": _patch(wire, user + 32, b"\x02"),
        "padding with a user id": _patch(wire, pad + 33, struct.pack(">H", 1) + b"x"),
        "user without an id": _patch(wire, user + 33, struct.pack(">H", 0)),
        "id longer than its field": _patch(wire, user + 33,
                                           struct.pack(">H", MAX_USER_ID_BYTES + 1)),
        "bytes after the id": _patch(wire, user + 35 + user_len, b"x"),
        "id not UTF-8": _patch(wire, user + 35, b"\xff"),
        "padding with a receipt hash": _patch(wire, pad + ENTRY_BYTES - 32, b"\x01"),
        "value of 2^32": _patch(wire, pad + 35 + MAX_USER_ID_BYTES,
                                struct.pack(">Q", 1 << 32)),
        "blinding of r": _patch(wire, pad + 35 + MAX_USER_ID_BYTES + 8,
                                CURVE_ORDER.to_bytes(32, "big")),
    }
    for name, data in cases.items():
        with pytest.raises(StatementFormatError):
            decode_statement(data)
            pytest.fail(name)
    with pytest.raises(StatementFormatError):
        decode_statement(bytearray(wire))  # type: ignore[arg-type]


def test_unseal_of_a_sealed_non_statement_is_a_format_error(world):
    from nacl.public import SealedBox

    sealed = SealedBox(world.payer_key.public_key).encrypt(b"not a statement")
    with pytest.raises(StatementFormatError):
        unseal_statement(sealed, bytes(world.payer_key))


def test_fields_are_validated_on_construction(world):
    stmt = world.statement
    for change in ({"contract": bytes(19)}, {"account_id": bytes(31)}, {"epoch_id": -1},
                   {"chain_id": True}, {"entries": list(stmt.entries)},
                   {"signature": bytes(63)}, {"version": 2}):
        with pytest.raises(StatementFormatError):
            dataclasses.replace(stmt, **change)
    with pytest.raises(StatementFormatError, match="not signed"):
        dataclasses.replace(stmt, signature=b"").to_bytes()
    entry = stmt.entries[_padding_index(stmt)]
    for change in ({"tag": bytes(31)}, {"user_id": ""}, {"user_id": "x" * 257},
                   {"last_receipt_hash": b"\x01" * 32}, {"value": -1}, {"value": True}):
        with pytest.raises(StatementFormatError):
            dataclasses.replace(entry, **change)
    with pytest.raises(StatementError, match="32 bytes"):
        seal_statement(stmt, b"short")
    assert StatementEntry(bytes(32), "u", 0, 0, bytes(32)).user_id == "u"
