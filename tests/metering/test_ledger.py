"""The ledger and ingest core, on a SQLite file and on PostgreSQL: idempotency, chains,
epochs, overflow, concurrency across threads and processes, and no text anywhere."""

import logging
import multiprocessing
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from prover.errors import (
    ConfigError,
    EpochStateError,
    IdempotencyConflictError,
    InvalidRequestError,
    UnitsOverflowError,
    UnpricedModelError,
)
from prover.ledger import Ledger, make_engine
from prover.ledger.schema import TABLES, events, metadata, user_states
from prover.metering import Meter, UsageRequest
from prover.ratecard import loads_rate_card
from tests.accounts import enroll
from tests.metering import _workers
from tests.metering.conftest import PROVIDER_SEED, RATE_CARD_TOML, _truncate
from verifier.receipts import ZERO32, check_text, verify_chain, verify_signature
from verifier.tokens import Message

PRICE = {"input": 3, "cached_input": 1, "output": 10, "reasoning": 7}  # gpt-4o in the card


def units(inp, out, cached=0, reasoning=0):
    return ((inp - cached) * PRICE["input"] + cached * PRICE["cached_input"]
            + out * PRICE["output"] + reasoning * PRICE["reasoning"])


def reported(key, user="alice", inp=10, out=5, **kw):
    return UsageRequest(key, user, kw.pop("model", "gpt-4o"), input_tokens=inp,
                        output_tokens=out, **kw)


def texted(key, user="alice", content="hello world", completion="hi!", **kw):
    return UsageRequest(key, user, kw.pop("model", "gpt-4o"),
                        messages=[Message("user", content)], completion=completion, **kw)


def count_rows(meter, table):
    with meter.ledger.engine.begin() as conn:
        return len(conn.execute(select(table)).all())


# --- schema ----------------------------------------------------------------------------------

def test_migrations_match_the_schema(db_url):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        names = set(inspect(conn).get_table_names())
    engine.dispose()
    assert diffs == []
    assert {t.name for t in TABLES} | {"alembic_version"} <= names


def test_sqlite_pragmas(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'p.sqlite'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    engine.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://x/y",
                                 "postgresql+psycopg2://x/y"])
def test_unsupported_urls(url):
    from prover.errors import ConfigError
    with pytest.raises(ConfigError):
        make_engine(url)


# --- basic ingest ----------------------------------------------------------------------------

def test_text_event_receipt_and_recount(make_meter, signing_key):
    meter = make_meter()
    stored = meter.record(texted("k1", content="hello world", completion="tiktoken is great!",
                                 reasoning_tokens=4))
    r = stored.receipt
    assert not stored.replayed
    assert (r.seq, r.prev_hash, r.epoch_id) == (1, ZERO32, 1)
    assert (r.input_tokens, r.output_tokens, r.reasoning_tokens) == (3 + 1 + 2 + 3, 6, 4)
    assert r.units == r.total_units == units(9, 6, reasoning=4)
    assert r.encoding == "o200k_base" and r.counted_from_text
    assert r.rate_card_hash == meter.rate_card_hash
    verify_signature(r, provider_id=bytes(signing_key.verify_key))
    check_text(r, messages=[Message("user", "hello world")], completion="tiktoken is great!")


def test_reported_event(make_meter):
    r = make_meter().record(reported("k1", inp=100, out=20, cached_input_tokens=30,
                                     reasoning_tokens=9)).receipt
    assert not r.counted_from_text and r.encoding == ""
    assert (r.input_tokens, r.cached_input_tokens) == (100, 30)  # hidden counts kept apart
    assert r.units == units(100, 20, cached=30, reasoning=9)


def test_batch_salts_are_drawn_once_and_each_event_gets_its_own(make_meter, signing_key):
    draws = []

    def source(n):
        draws.append(n)
        return bytes(random.Random(len(draws)).randbytes(n))

    meter = make_meter(salt_source=source)
    requests = [texted(f"s{i}", content=f"text {i}") for i in range(5)] + [
        reported(f"r{i}", "bob") for i in range(3)]
    outcomes = meter.record_batch(requests)
    assert draws == [32 * len(requests)]  # one draw for the batch
    salts = [o.receipt.salt for o in outcomes]
    assert len(set(salts)) == len(salts) and all(len(s) == 32 for s in salts)
    for outcome, request in zip(outcomes[:5], requests[:5], strict=True):
        verify_signature(outcome.receipt, provider_id=bytes(signing_key.verify_key))
        check_text(outcome.receipt, messages=request.messages, completion=request.completion)


@pytest.mark.parametrize("wrong", [lambda n: bytes(n - 1), lambda n: bytearray(n)])
def test_a_salt_source_of_the_wrong_size_stores_nothing(make_meter, wrong):
    meter = make_meter(salt_source=wrong)
    with pytest.raises(ConfigError, match="salt source"):
        meter.record_batch([reported("w1"), reported("w2", "bob")])
    assert count_rows(meter, events) == 0


def test_stored_carries_the_receipts_wire_bytes_and_hash(make_meter):
    meter = make_meter()
    first = meter.record_batch([texted("w1"), reported("w2", "bob"), reported("w2", "bob")])
    again = meter.record_batch([reported("w2", "bob"), texted("w1")])  # replays, from rows
    for stored in (*first, *again):
        assert stored.wire == stored.receipt.to_bytes()
        assert stored.receipt_hash == stored.receipt.hash()
    assert [s.replayed for s in first + again] == [False, False, True, True, True]
    assert again[1].wire == first[0].wire


def test_chain_per_user_and_totals(make_meter):
    meter = make_meter()
    for i in range(5):
        meter.record(reported(f"a{i}", "alice", inp=i + 1))
        meter.record(reported(f"b{i}", "bob", inp=2 * i + 1))
    alice = verify_chain(meter.ledger.receipts(1, "alice"),
                         provider_id=meter.provider_id)
    assert alice.count == 5 and alice.total_units == sum(units(i + 1, 5) for i in range(5))
    assert meter.ledger.running_totals(1) == {
        "alice": alice.total_units, "bob": sum(units(2 * i + 1, 5) for i in range(5))}


# --- idempotency -----------------------------------------------------------------------------

@pytest.mark.parametrize("make", [reported, texted])
def test_retry_returns_the_original_and_counts_nothing(make_meter, make):
    meter = make_meter()
    first = meter.record(make("k1"))
    again = meter.record(make("k1"))
    assert again.replayed and again.receipt == first.receipt
    assert count_rows(meter, events) == 1
    assert meter.ledger.running_totals(1) == {"alice": first.receipt.units}


@pytest.mark.parametrize("change", [
    lambda: reported("k1", inp=11), lambda: reported("k1", out=6),
    lambda: reported("k1", user="bob"), lambda: reported("k1", model="gpt-4"),
    lambda: reported("k1", reasoning_tokens=1), lambda: reported("k1", cached_input_tokens=1),
    lambda: texted("k1"),
])
def test_same_key_other_payload_is_refused_and_stores_nothing(make_meter, change):
    meter = make_meter()
    original = meter.record(reported("k1"))
    before = meter.ledger.running_totals(1)
    with pytest.raises(IdempotencyConflictError):
        meter.record(change())
    assert count_rows(meter, events) == 1
    assert meter.ledger.running_totals(1) == before
    assert meter.record(reported("k1")).receipt == original.receipt


def test_text_conflict_by_one_character(make_meter):
    meter = make_meter()
    meter.record(texted("k1", content="hello world"))
    with pytest.raises(IdempotencyConflictError):
        meter.record(texted("k1", content="hello world."))
    with pytest.raises(IdempotencyConflictError):
        meter.record(texted("k1", completion="hi"))


def test_duplicates_inside_one_batch(make_meter):
    meter = make_meter()
    out = meter.record_batch([reported("k1"), reported("k2"), reported("k1"),
                              reported("k1", inp=99)])
    assert not out[0].replayed and not out[1].replayed
    assert out[2].replayed and out[2].receipt == out[0].receipt
    assert isinstance(out[3], IdempotencyConflictError)
    assert count_rows(meter, events) == 2


def test_keys_are_unique_per_provider_not_per_user(make_meter):
    meter = make_meter()
    meter.record(reported("shared", user="alice"))
    with pytest.raises(IdempotencyConflictError):
        meter.record(reported("shared", user="bob"))


# --- refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize(("request_", "error"), [
    (lambda: reported("k", model="llama-3"), UnpricedModelError),
    (lambda: texted("k", model="custom-llm"), InvalidRequestError),  # priced, no encoding
    (lambda: reported("k", inp=-1), InvalidRequestError),
    (lambda: reported("k", inp=True), InvalidRequestError),
    (lambda: reported("k", inp=1 << 32), InvalidRequestError),
    (lambda: reported("k", inp=5, cached_input_tokens=6), InvalidRequestError),
    (lambda: reported("k", reasoning_tokens=-2), InvalidRequestError),
    (lambda: reported("", inp=1), InvalidRequestError),
    (lambda: reported("k", user=""), InvalidRequestError),
    (lambda: reported("k", user="u" * 257), InvalidRequestError),
    (lambda: reported("k" * 257), InvalidRequestError),
    (lambda: UsageRequest("k", "alice", "gpt-4o"), InvalidRequestError),
    (lambda: UsageRequest("k", "alice", "gpt-4o", input_tokens=1), InvalidRequestError),
    (lambda: UsageRequest("k", "alice", "gpt-4o", messages=[Message("user", "x")]),
     InvalidRequestError),
    (lambda: UsageRequest("k", "alice", "gpt-4o", completion="x", input_tokens=1,
                          output_tokens=1), InvalidRequestError),
    (lambda: UsageRequest("k", "alice", "gpt-4o", messages=[Message("user", "x")],
                          completion="y", input_tokens=1), InvalidRequestError),
    (lambda: UsageRequest("k", "alice", "gpt-4o", messages=[], completion="y"),
     InvalidRequestError),
    (lambda: UsageRequest("k", "alice", "gpt-4o", messages=["x"], completion="y"),
     InvalidRequestError),
    (lambda: UsageRequest("k", "alice", "gpt-4o", messages=[Message("user", "\ud800")],
                          completion="y"), InvalidRequestError),
    (lambda: UsageRequest("k", "alice", "gpt-4o", messages=[Message("user", "x")],
                          completion="\udfff"), InvalidRequestError),
    (lambda: "not a request", InvalidRequestError),
])
def test_bad_requests_are_refused_and_store_nothing(make_meter, request_, error):
    meter = make_meter()
    with pytest.raises(error):
        meter.record(request_())
    assert count_rows(meter, events) == 0


def test_overflow_is_refused_at_ingest(make_meter):
    meter = make_meter(bit_size=16)  # 2^16 = 65536 units
    meter.record(reported("k1", inp=6000, out=0))  # 18000
    meter.record(reported("k2", inp=6000, out=0))  # 36000
    meter.record(reported("k3", inp=6000, out=0))  # 54000
    with pytest.raises(UnitsOverflowError):
        meter.record(reported("k4", inp=3846, out=0))  # 54000 + 11538 = 65538 >= 2^16
    last = meter.record(reported("k5", inp=3845, out=0))  # 65535 < 2^16
    assert last.receipt.total_units == 65535
    with pytest.raises(UnitsOverflowError):
        meter.record(reported("k6", inp=1, out=0))
    with pytest.raises(UnitsOverflowError):  # one event alone beyond the range
        meter.record(reported("k7", user="bob", inp=30000, out=0))
    assert count_rows(meter, events) == 4
    assert meter.ledger.running_totals(1) == {"alice": 65535}
    # the refused key was not consumed: it can be used once the payload fits
    assert meter.record(reported("k4", user="carol", inp=1, out=0)).receipt.seq == 1


def test_large_totals_with_bit_size_64(make_meter):
    meter = make_meter(bit_size=64)
    big = (1 << 32) - 1
    for key in ("k1", "k2"):
        meter.record(reported(key, inp=big, out=big, reasoning_tokens=big))  # ~8.6e10 units
    assert meter.ledger.running_totals(1)["alice"] == 2 * units(big, big, reasoning=big) > 2**32


# --- epochs ----------------------------------------------------------------------------------

def test_epoch_close_starts_the_next(make_meter):
    meter = make_meter()
    meter.record(reported("k1"))
    epoch = meter.ledger.current_epoch()
    with pytest.raises(EpochStateError):
        meter.ledger.totals(epoch.id)  # still open
    closing, nxt = meter.ledger.close_epoch(epoch.id, next_rate_card_hash=meter.rate_card_hash,
                                            next_bit_size=32, epoch_seconds=60)
    assert closing.state == "closing" and closing.window_end_ms >= closing.window_start_ms
    assert nxt.id == epoch.id + 1 and nxt.state == "open"
    assert nxt.window_start_ms == closing.window_end_ms
    second = meter.record(reported("k2"))
    assert (second.receipt.epoch_id, second.receipt.seq) == (nxt.id, 1)
    assert second.receipt.prev_hash == ZERO32
    assert meter.ledger.totals(epoch.id) == {"alice": units(10, 5)}
    assert meter.record(reported("k1")).receipt.epoch_id == epoch.id  # retry of an old event
    with pytest.raises(EpochStateError):
        meter.ledger.close_epoch(epoch.id, next_rate_card_hash=meter.rate_card_hash,
                                 next_bit_size=32, epoch_seconds=60)
    meter.ledger.mark_closed(epoch.id)
    assert meter.ledger.epoch(epoch.id).state == "closed"
    with pytest.raises(EpochStateError):
        meter.ledger.mark_closed(epoch.id)
    with pytest.raises(EpochStateError):
        meter.ledger.epoch(99)
    with pytest.raises(EpochStateError):
        meter.ledger.totals(99)


def test_rate_card_switch_needs_a_close(make_meter):
    meter = make_meter()
    meter.record(reported("k1"))
    card2 = loads_rate_card(RATE_CARD_TOML.replace("version = 7", "version = 8"))
    other = make_meter(rate_card=card2)
    with pytest.raises(EpochStateError):
        other.record(reported("k2"))
    assert count_rows(meter, events) == 1
    meter.ledger.close_epoch(1, next_rate_card_hash=card2.hash(), next_bit_size=32,
                             epoch_seconds=60)
    assert other.record(reported("k2")).receipt.rate_card_hash == card2.hash()
    with pytest.raises(EpochStateError):
        meter.record(reported("k3"))


# --- volume ----------------------------------------------------------------------------------

def test_ten_thousand_events_with_retries_shuffled(make_meter):
    meter = make_meter()
    rng = random.Random(20261128)
    originals = [reported(f"ev-{i}", f"user-{rng.randrange(97)}", inp=rng.randrange(1, 400),
                          out=rng.randrange(0, 200), cached_input_tokens=0,
                          reasoning_tokens=rng.randrange(0, 3)) for i in range(8_000)]
    stream = originals + [rng.choice(originals) for _ in range(2_000)]  # 20% retries
    rng.shuffle(stream)
    expected: dict[str, int] = {}
    for r in originals:
        expected[r.user_id] = expected.get(r.user_id, 0) + units(
            r.input_tokens, r.output_tokens, reasoning=r.reasoning_tokens)
    fresh = replayed = 0
    for i in range(0, len(stream), 250):
        for outcome in meter.record_batch(stream[i : i + 250]):
            assert not isinstance(outcome, Exception)
            replayed += outcome.replayed
            fresh += not outcome.replayed
    assert (fresh, replayed) == (8_000, 2_000)
    assert meter.ledger.running_totals(1) == expected
    assert count_rows(meter, events) == 8_000
    for user in ("user-0", "user-50", "user-96"):
        summary = verify_chain(meter.ledger.receipts(1, user), provider_id=meter.provider_id)
        assert summary.total_units == expected[user]
    with meter.ledger.engine.begin() as conn:
        states = {r.user_id: (r.seq, r.total_units, bytes(r.last_hash))
                  for r in conn.execute(select(user_states))}
    last = meter.ledger.receipts(1, "user-7")[-1]
    assert states["user-7"] == (last.seq, last.total_units, last.hash())


# --- concurrency -----------------------------------------------------------------------------

def _overlapping_rounds(a, b):
    """Rounds in which two senders' record_batch calls overlapped in time (one waited for the
    other's transaction): evidence that the duplicates really were concurrent."""
    return sum(1 for (s1, e1), (s2, e2) in zip(a, b, strict=True) if s1 < e2 and s2 < e1)


def test_concurrent_duplicates_from_threads_count_once(make_meter):
    meters = [make_meter() for _ in range(4)]
    keys = [reported(f"t-{i}", f"user-{i % 5}", inp=i % 13 + 1) for i in range(300)]
    barrier = threading.Barrier(len(meters))
    spans: list[list[tuple[float, float]]] = [[] for _ in meters]

    def run(index):
        rng = random.Random(index)
        fresh = []
        for i in range(0, len(keys), 10):  # every round, all threads send the same 10 keys
            chunk = keys[i : i + 10]
            rng.shuffle(chunk)
            barrier.wait()
            start = time.monotonic()
            outcomes = meters[index].record_batch(chunk)
            spans[index].append((start, time.monotonic()))
            for req, outcome in zip(chunk, outcomes, strict=True):
                assert not isinstance(outcome, Exception), outcome
                if not outcome.replayed:
                    fresh.append(req.idempotency_key)
        return fresh

    with ThreadPoolExecutor(len(meters)) as pool:
        results = list(pool.map(run, range(len(meters))))
    stored = [k for fresh in results for k in fresh]
    assert sorted(stored) == sorted(r.idempotency_key for r in keys)  # each exactly once
    assert _overlapping_rounds(spans[0], spans[1]) >= len(spans[0]) // 2, \
        "the threads must really send the same keys at the same time"
    expected: dict[str, int] = {}
    for r in keys:
        expected[r.user_id] = expected.get(r.user_id, 0) + units(r.input_tokens, 5)
    assert meters[0].ledger.running_totals(1) == expected
    for user in expected:
        verify_chain(meters[0].ledger.receipts(1, user), provider_id=meters[0].provider_id)


def test_concurrent_duplicates_from_two_processes_count_once(db_url, make_meter):
    make_meter().ledger.open_epoch(rate_card_hash=loads_rate_card(RATE_CARD_TOML).hash(),
                                   bit_size=32, epoch_seconds=86_400)
    keys = [f"p-{i}" for i in range(400)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            jobs = [pool.apply_async(_workers.ingest, (db_url, PROVIDER_SEED, RATE_CARD_TOML,
                                                       keys, barrier, 8, seed))
                    for seed in (1, 2)]
            results = [job.get(timeout=120) for job in jobs]
    stored = results[0][0] + results[1][0]
    assert sorted(stored) == sorted(keys)  # every key stored exactly once
    assert _overlapping_rounds(results[0][1], results[1][1]) >= len(results[0][1]) // 2, \
        "the processes must really send the same keys at the same time"
    meter = make_meter()
    expected: dict[str, int] = {}
    for k in keys:
        n = int(k.split("-")[1])
        expected[f"user-{n % 7}"] = expected.get(f"user-{n % 7}", 0) + units(n % 50 + 1, 3)
    assert meter.ledger.running_totals(1) == expected
    assert count_rows(meter, events) == 400


def test_close_racing_ingest_puts_each_event_in_one_epoch(make_meter):
    meter, closer = make_meter(), make_meter()
    meter.record(reported("warm-up"))
    stop = threading.Event()

    def close_loop():
        closed = 0
        while not stop.is_set() and closed < 5:
            epoch = closer.ledger.current_epoch()
            closer.ledger.close_epoch(epoch.id, next_rate_card_hash=closer.rate_card_hash,
                                      next_bit_size=32, epoch_seconds=60)
            closed += 1
        return closed

    with ThreadPoolExecutor(1) as pool:
        closing = pool.submit(close_loop)
        receipts = []
        for i in range(0, 400, 20):
            receipts += [o.receipt for o in meter.record_batch(
                [reported(f"r-{j}", f"user-{j % 3}") for j in range(i, i + 20)])]
        stop.set()
        closing.result()
    by_epoch: dict[tuple[int, str], list] = {}
    for r in receipts:
        by_epoch.setdefault((r.epoch_id, r.user_id), []).append(r)
    for chain in by_epoch.values():  # every epoch's chain starts at 1 and is unbroken
        verify_chain(chain, provider_id=meter.provider_id)
    with meter.ledger.engine.begin() as conn:
        rows = conn.execute(select(events.c.epoch_id, events.c.created_ms)).all()
    assert len(rows) == 401
    for epoch_id, created in rows:
        info = meter.ledger.epoch(epoch_id)
        assert info.window_start_ms <= created
        assert info.window_end_ms is None or created <= info.window_end_ms


# --- no text anywhere ------------------------------------------------------------------------

def test_no_text_in_any_row_log_or_error(make_meter, caplog, db_url):
    marker = "PURPLE-ELEPHANT-7f3a"
    prompt = f"my secret prompt {marker} about the merger"
    completion = f"the secret answer {marker}-reply"
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")  # every statement + params
    meter = make_meter()
    texts = []
    messages = [Message("system", f"system {marker}"), Message("user", prompt, name="ann")]
    req = UsageRequest("secret-1", "alice", "gpt-4o", messages=messages, completion=completion,
                       reasoning_tokens=3)
    texts.append(repr(req))
    meter.record(req)
    meter.record(req)  # replay
    for bad in (
        UsageRequest("secret-1", "alice", "gpt-4o", messages=messages,
                     completion=completion + "!"),  # conflict
        UsageRequest("secret-2", "alice", "llama-3", messages=messages, completion=completion),
        UsageRequest("secret-3", "alice", "custom-llm", messages=messages,
                     completion=completion),
        UsageRequest("secret-4", "alice", "gpt-4o", messages=messages, completion=completion,
                     cached_input_tokens=10**6),
        UsageRequest("secret-5", "alice", "gpt-4o", messages=messages, completion=completion,
                     input_tokens=1),
    ):
        texts.append(repr(bad))
        with pytest.raises(Exception) as info:
            meter.record(bad)
        texts += [str(info.value), repr(info.value)]
    small = make_meter(bit_size=8)
    with pytest.raises(UnitsOverflowError) as info:
        small.record(UsageRequest("secret-6", "bob", "gpt-4o", messages=messages,
                                  completion=completion * 20))
    texts += [str(info.value), repr(info.value)]
    assert any(r.name.startswith("sqlalchemy.engine") and "INSERT INTO events" in r.getMessage()
               for r in caplog.records), "the test must see the engine's statement log"
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    secret_bytes = marker.encode()
    dumped = []
    with meter.ledger.engine.begin() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                dumped.append(repr(tuple(row)))
                for value in row:
                    if isinstance(value, (bytes, memoryview)):
                        assert secret_bytes not in bytes(value)
    assert len(dumped) >= 3
    for blob in texts + dumped:
        assert marker not in blob and "merger" not in blob and "answer" not in blob
    if db_url.startswith("sqlite"):  # and not in the database files themselves
        path = Path(db_url.removeprefix("sqlite:///"))
        for f in path.parent.glob(path.name + "*"):
            assert secret_bytes not in f.read_bytes()


def test_migrations_downgrade_and_upgrade_again(tmp_path):
    from alembic import command
    from alembic.config import Config

    from prover.ledger.store import MIGRATIONS_DIR, migrate
    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    migrate(engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        uniques = {tuple(u["column_names"]) for u in inspect(conn).get_unique_constraints("events")}
    engine.dispose()
    assert ("key_digest", "provider_id") in uniques


def test_batches_beyond_the_transaction_limit_are_split(make_meter, monkeypatch):
    import prover.metering
    monkeypatch.setattr(prover.metering, "MAX_BATCH", 7)
    meter = make_meter()
    requests = [reported(f"s{i}", f"user-{i % 3}") for i in range(30)]
    requests.append(reported("s3", "user-0", inp=99))  # conflicts with an earlier chunk
    out = meter.record_batch(requests)
    assert len(out) == 31 and isinstance(out[-1], IdempotencyConflictError)
    assert all(not o.replayed for o in out[:30])
    assert count_rows(meter, events) == 30


@pytest.mark.parametrize("kwargs", [{"bit_size": 31}, {"bit_size": 0}, {"epoch_seconds": 0}])
def test_meter_refuses_bad_parameters(make_meter, kwargs):
    from prover.errors import ConfigError
    with pytest.raises(ConfigError):
        make_meter(**kwargs)


def test_meter_refuses_a_ledger_of_another_provider(db_url, signing_key, rate_card):
    from nacl.signing import SigningKey

    from prover.errors import ConfigError
    from prover.ledger import Ledger
    ledger = Ledger.from_url(db_url, provider_id=bytes(signing_key.verify_key),
                             run_migrations=False)
    try:
        with pytest.raises(ConfigError):
            Meter(ledger=ledger, signing_key=SigningKey(bytes(range(32))), rate_card=rate_card)
    finally:
        ledger.dispose()


def test_counting_in_worker_processes_gives_the_same_receipts(make_meter):
    pooled = make_meter(count_workers=1)
    local = make_meter()
    try:
        texts = [(f"message {i} " * (i % 40 + 1), f"answer {i} " * (i % 7)) for i in range(24)]
        batch = [texted(f"p{i}", f"user-{i % 4}", content=c, completion=a)
                 for i, (c, a) in enumerate(texts)]
        batch += [texted("bad-model", model="llama-3"),
                  UsageRequest("bad-text", "alice", "gpt-4o",
                               messages=[Message("user", "\ud800")], completion="x"),
                  texted("bad-cached", content="short", cached_input_tokens=999)]
        counted = pooled._count_in_pool(batch)  # the workers really count (all but llama)
        assert len(counted) == len(batch) - 1 and 24 not in counted
        out = pooled.record_batch(batch)
        assert isinstance(out[-3], InvalidRequestError)
        assert isinstance(out[-2], InvalidRequestError)
        assert isinstance(out[-1], InvalidRequestError)
        for (content, answer), stored in zip(texts, out, strict=False):
            check_text(stored.receipt, messages=[Message("user", content)], completion=answer)
        again = local.record_batch(batch[:24])  # same keys and payloads, counted in-process
        assert all(o.replayed for o in again)  # the fingerprints agree
    finally:
        pooled.close()


def test_count_workers_must_be_a_count(make_meter):
    from prover.errors import ConfigError
    with pytest.raises(ConfigError):
        make_meter(count_workers=-1)


def test_broken_counting_workers_fall_back_to_in_process(make_meter, monkeypatch, caplog):
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    meter = make_meter(count_workers=1)
    try:
        def broken(*args, **kwargs):
            future = Future()
            future.set_exception(BrokenProcessPool("a worker died"))
            return future
        monkeypatch.setattr(meter._pool, "submit", broken)
        batch = [texted(f"b{i}", content=f"hello {i} " * 5) for i in range(10)]
        with caplog.at_level(logging.WARNING, logger="prover.metering"):
            out = meter.record_batch(batch)
        assert "counting in-process" in caplog.text
        for i, stored in enumerate(out):
            check_text(stored.receipt, messages=[Message("user", f"hello {i} " * 5)],
                       completion="hi!")
    finally:
        meter.close()


@pytest.mark.postgres
def test_postgresql_plans_each_ingest_statement_for_the_table_as_it_is(pg_url, signing_key,
                                                                       rate_card):
    """psycopg prepares a statement on its sixth run, and PostgreSQL may then keep one
    generic plan made for the table as it was. Made while the events table was small, that
    plan scanned the whole table on every idempotency-key look-up (70-540 ms a batch at 40,000
    rows, on a server without autovacuum to re-plan): every execution is planned (custom)."""
    _truncate(pg_url)
    ledger = Ledger.from_url(pg_url, provider_id=bytes(signing_key.verify_key),
                             run_migrations=False)
    try:
        enroll(ledger.engine, ledger.provider_id, ["alice"])
        meter = Meter(ledger=ledger, signing_key=signing_key, rate_card=rate_card)
        for i in range(12):  # a small table; each ingest statement run (and prepared) 12 times
            meter.record(reported(f"plan-{i}"))
        with ledger.engine.connect() as conn:  # the one connection of this engine's pool
            rows = conn.exec_driver_sql("SELECT statement, generic_plans, custom_plans "
                                        "FROM pg_prepared_statements").all()
    finally:
        ledger.dispose()
    lookup = [r for r in rows if "key_digest = ANY" in r.statement]
    assert len(lookup) == 1, rows
    # (a statement without parameters has one plan, which PostgreSQL counts as generic)
    assert [r.statement for r in rows if r.generic_plans and "$1" in r.statement] == []
    assert lookup[0].custom_plans >= 6  # prepared (psycopg) and planned at each run
