"""Epoch close end to end on the real ledger (SQLite and PostgreSQL): receipts -> bundle ->
every proof verifies, the sum check holds, each user's opening opens its leaf and equals its
last receipt's running total."""

import pytest
from nacl.public import PrivateKey
from sqlalchemy import update

from prover.config import Settings
from prover.epoch.close import EpochCloseError
from prover.epoch.executor import InlineExecutor
from prover.epoch.service import EpochParams, EpochService
from prover.epoch.storage import EpochStore
from prover.errors import EpochStateError
from prover.ledger import Ledger
from prover.ledger.schema import epoch_leaves
from prover.metering import Meter, UsageRequest
from prover.ratecard import load_rate_card
from tests.accounts import OPERATOR, STANDARD_USERS, enroll
from verifier.bundle import parse_bundle, verify_bundle
from verifier.opening import Opening, check_opening, unseal
from verifier.tokens import Message

MODEL = "gpt-4o"


def build(url, signing_key, *, min_leaves=16):
    ledger = Ledger.from_url(url, provider_id=bytes(signing_key.verify_key))
    enroll(ledger.engine, ledger.provider_id, STANDARD_USERS)
    meter = Meter(ledger=ledger, signing_key=signing_key,
                  rate_card=load_rate_card(Settings().rate_card))
    store = EpochStore(ledger.engine)
    params = EpochParams(chain_id=31337, contract=b"\x42" * 20, bit_size=32,
                         min_leaves=min_leaves, rate_card_hash=meter.rate_card_hash,
                         epoch_seconds=3600,
                           operator=OPERATOR)
    service = EpochService(ledger=ledger, store=store, signing_key=signing_key, params=params,
                           executor_factory=InlineExecutor)
    return meter, store, service


def ingest(meter, users):
    for i in range(40):
        user = users[i % len(users)]
        if i % 4 == 0:
            request = UsageRequest(
                idempotency_key=f"req-{i}", user_id=user, model=MODEL,
                messages=[Message("user", f"question {i} about billing")],
                completion=f"answer {i}", reasoning_tokens=i)
        else:
            request = UsageRequest(idempotency_key=f"req-{i}", user_id=user, model=MODEL,
                                   input_tokens=50 + i, output_tokens=10 + i,
                                   cached_input_tokens=i % 7)
        meter.record(request)
        if i % 5 == 0:  # retries count nothing
            assert meter.record(request).replayed


def test_close_end_to_end(ledger_url, signing_key):
    meter, store, service = build(ledger_url, signing_key)
    users = [f"user-{i}" for i in range(9)]
    keys = {u: PrivateKey.generate() for u in users[:6]}  # three users have no key
    for user, key in keys.items():
        store.register_user_key(user, bytes(key.public_key))
    ingest(meter, users)
    epoch_id = meter.ledger.current_epoch().id

    closed = service.close()

    bundle = parse_bundle(store.bundle_json(epoch_id))
    assert bundle == closed.bundle
    assert all(c.ok for c in verify_bundle(bundle, provider_key=bytes(signing_key.verify_key)))
    assert len(bundle.leaves) == 16
    assert bundle.total == sum(meter.ledger.totals(epoch_id).values())
    sealed = store.sealed_openings(epoch_id)
    assert len(sealed) == 16 and len({len(s) for s in sealed.values()}) == 1
    for user in users:
        last = meter.ledger.receipts(epoch_id, user)[-1]
        if user in keys:
            tag = closed.openings[user].tag
            opening = unseal(sealed[tag], bytes(keys[user]))
            assert store.private_opening(epoch_id, user) is None
        else:
            opening = Opening.from_bytes(store.private_opening(epoch_id, user))
        assert opening.value == last.total_units
        assert all(ok for _, ok, _ in check_opening(opening, bundle))
    assert meter.ledger.epoch(epoch_id).state == "closed"
    assert meter.ledger.current_epoch().id == epoch_id + 1
    status = store.status(epoch_id)
    assert (status.leaves_done, status.leaves_total, status.finished) == (16, 16, True)
    meter.ledger.dispose()


def test_one_user_still_gets_a_padded_bundle(sqlite_url, signing_key):
    meter, _store, service = build(sqlite_url, signing_key)
    enroll(meter.ledger.engine, meter.provider_id, ["solo"])
    meter.record(UsageRequest(idempotency_key="only", user_id="solo", model=MODEL,
                              input_tokens=10, output_tokens=5))
    closed = service.close()
    assert len(closed.bundle.leaves) == 16
    assert list(closed.openings) == ["solo"]
    assert all(c.ok for c in verify_bundle(closed.bundle))


def test_nothing_to_close(sqlite_url, signing_key):
    _meter, _, service = build(sqlite_url, signing_key)
    with pytest.raises(EpochStateError):
        service.close()


def test_an_epoch_without_usage_is_refused_unless_allowed(sqlite_url, signing_key):
    meter, _, service = build(sqlite_url, signing_key)
    ingest(meter, ["a"])
    first = service.close()
    with pytest.raises(EpochStateError, match="no usage since the last close"):
        service.close()
    assert meter.ledger.current_epoch().id == first.bundle.epoch_id + 1  # still open
    empty = service.close(allow_empty=True)  # published, billing no account: no bundle
    assert empty.epoch_id == first.bundle.epoch_id + 1
    assert empty.accounts == {} and not empty.openings
    assert meter.ledger.epoch(empty.epoch_id).state == "closed"


def test_a_stored_leaf_that_does_not_match_the_snapshot_is_refused(sqlite_url, signing_key):
    meter, store, service = build(sqlite_url, signing_key)
    ingest(meter, ["a", "b", "c"])
    epoch = service.epoch_to_close()
    totals = meter.ledger.totals(epoch.id)
    # Prove the epoch once, then corrupt one stored commitment and close again.
    first = service.close()
    with meter.ledger.engine.begin() as conn:
        conn.execute(update(epoch_leaves).where(epoch_leaves.c.tag == first.bundle.leaves[0].tag)
                     .values(commitment=first.bundle.leaves[1].commitment))
    from prover.epoch.close import EpochInputs, close_epoch

    inputs = EpochInputs(ctx=service.context(epoch.id), window_start=0, window_end=1,
                         rate_card_hash=epoch.rate_card_hash, bit_size=32, totals=totals)
    with pytest.raises(EpochCloseError):
        close_epoch(inputs, secret=service._secret, signing_key=signing_key,
                    store=store.leaves(epoch.id))


def test_a_leaf_stored_twice_is_stored_once(ledger_url, signing_key):
    """Two closers racing on one epoch store the same deterministic leaves; the second
    save of a leaf is ignored, not an error."""
    meter, store, service = build(ledger_url, signing_key)
    ingest(meter, ["a", "b"])
    closed = service.close()
    epoch_id = closed.bundle.epoch_id
    leaves = store.leaves(epoch_id)
    before = leaves.finished()
    again = list(before.values())[:3]
    leaves.save(again)
    assert leaves.finished() == before
    meter.ledger.dispose()


def test_concurrent_closes_in_one_process_are_serialized(sqlite_url, signing_key):
    import threading

    meter, _, service = build(sqlite_url, signing_key)
    ingest(meter, ["a", "b", "c"])
    results, errors = [], []

    def close():
        try:
            results.append(service.close().bundle.epoch_id)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the second waited for the first, then found the next epoch empty: refused
    assert results == [1]
    assert len(errors) == 1 and isinstance(errors[0], EpochStateError)
    assert "no usage since the last close" in str(errors[0])
    assert meter.ledger.epoch(1).state == "closed" and meter.ledger.epoch(2).state == "open"
