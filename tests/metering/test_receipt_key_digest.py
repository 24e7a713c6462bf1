"""The idempotency-key digest a receipt carries is keyed with a provider secret (issue 12):
a user holding its receipts cannot recover keys like ``req-42`` (and so the provider's global
request numbers between its own requests); idempotency stays exact."""

import pytest
from nacl.signing import SigningKey

from circuits.hashing import keccak256
from prover.epoch.service import master_secret
from prover.errors import IdempotencyConflictError
from prover.metering import RECEIPT_DIGEST_KEY_LABEL, UsageRequest
from verifier.receipts import idempotency_key_digest, receipt_key_digest

MODEL = "gpt-4o"


def request(key, user="alice", tokens=3):
    return UsageRequest(key, user, MODEL, input_tokens=tokens, output_tokens=1)


def test_a_user_cannot_recover_sequential_keys_from_its_receipts(make_meter):
    meter = make_meter()
    mine = {}
    for i in range(60):
        user = "alice" if i % 10 == 0 else f"user-{i % 7}"  # enrolled by the fixture
        stored = meter.record(request(f"req-{i}", user))
        if user == "alice":
            mine[i] = stored.receipt.idempotency_key_digest
    # the attack that worked before: digest every candidate key and look for matches
    guesses = {idempotency_key_digest(f"req-{n}"): n for n in range(10_000)}
    assert not any(digest in guesses for digest in mine.values())
    # without the provider's secret, even the right guess under another key misses
    other = receipt_key_digest(bytes(32), "req-0")
    assert mine[0] != other
    # the provider, who holds the secret, matches each key to its receipt
    assert all(meter.receipt_key_digest(f"req-{i}") == d for i, d in mine.items())


def test_idempotency_stays_exact_with_the_keyed_digest(make_meter):
    meter = make_meter()
    first = meter.record(request("k-1"))
    again = meter.record(request("k-1"))
    assert again.replayed and again.receipt == first.receipt
    with pytest.raises(IdempotencyConflictError):
        meter.record(request("k-1", tokens=4))
    assert meter.record(request("k-1 ")).receipt.idempotency_key_digest != (
        first.receipt.idempotency_key_digest)


def test_the_digest_key_is_the_providers_own(make_meter, signing_key):
    meter = make_meter()
    digest = meter.record(request("shared-key")).receipt.idempotency_key_digest
    key = keccak256(RECEIPT_DIGEST_KEY_LABEL, master_secret(signing_key))
    assert digest == receipt_key_digest(key, "shared-key")
    other = keccak256(RECEIPT_DIGEST_KEY_LABEL, master_secret(SigningKey(b"o" * 32)))
    assert digest != receipt_key_digest(other, "shared-key")
