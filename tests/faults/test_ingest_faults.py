"""Ingest under database faults, on a real PostgreSQL behind a fault proxy: a black-holed
(partitioned) database fails the call within the bound instead of hanging, a refused one
fails with one short message (over gRPC: ``UNAVAILABLE``, and the retry with the same key
records the event once), a short outage is ridden out by the retries, and backends
terminated every 50 ms (``pg_terminate_backend``) lose nothing and count nothing twice."""

import threading
import time

import grpc
import psycopg
import pytest
from sqlalchemy.engine import make_url

from prover.api.grpc_server import hash_api_key, new_api_key
from prover.errors import LedgerError
from prover.metering import UsageRequest
from tests.api.grpc_harness import ServerThread
from tests.postgres import admin_connection
from zkmeter.client import Client

pytestmark = pytest.mark.postgres

MODEL = "gpt-4o"
SQL_WORDS = ("SELECT", "INSERT", "UPDATE", "FROM", "%(", "::")


def usage(i: int, user: str | None = None) -> UsageRequest:
    return UsageRequest(idempotency_key=f"k-{i}", user_id=user or f"user-{i % 3}", model=MODEL,
                        input_tokens=10 + i, output_tokens=5)


def assert_short(message: str) -> None:
    assert "\n" not in message and len(message) < 300, message
    assert not any(word in message for word in SQL_WORDS), message


def ledger_state(services) -> tuple[dict[str, int], int]:
    """(per-user totals of the open epoch, number of events): the state to compare."""
    ledger = services.meter.ledger
    epoch = ledger.current_epoch()
    with ledger.engine.connect() as conn:
        count = conn.exec_driver_sql("SELECT count(*) FROM events").scalar()
    return ledger.running_totals(epoch.id), count


@pytest.mark.parametrize("fault", ["blackhole", "refuse"])
def test_ingest_fails_in_time_and_resumes(pg_url, proxy, services_factory, fault):
    services = services_factory(proxy.url(pg_url))
    for i in range(6):
        services.meter.record(usage(i))
    before = ledger_state(services)
    proxy.mode = fault
    started = time.monotonic()
    with pytest.raises(LedgerError) as caught:
        services.meter.record(usage(6))
    took = time.monotonic() - started
    # retries for 3 s, and one attempt is at most connect 2 s + statement 1 s + grace 2 s
    assert 1.5 < took < 10.0, took
    message = str(caught.value)
    print(f"{fault}: {took:.1f} s: {message}")
    assert message.startswith("the database is unavailable: ")
    # a black hole: the pooled connection's wait hits the deadline, new connects time out
    reasons = {"refuse": ("the connection was refused", "the connection failed or was lost"),
               "blackhole": ("no answer from the database within 3 s",
                             "the connection timed out")}[fault]
    assert any(reason in message for reason in reasons), message
    assert_short(message)
    proxy.mode = "pass"
    again = services.meter.record(usage(6))  # the gateway's retry, same key and payload
    assert not again.replayed
    totals, count = ledger_state(services)
    expected = dict(before[0])
    expected[usage(6).user_id] += again.receipt.units
    assert (totals, count) == (expected, before[1] + 1)


@pytest.mark.parametrize("fault", ["blackhole", "refuse"])
def test_grpc_record_usage_under_a_dead_database(pg_url, proxy, services_factory, fault):
    """RecordUsage over gRPC with the database black-holed or refused: UNAVAILABLE with a
    short message within the bound; the gateway's retry with the same key after recovery
    records the event once, and a further retry is replayed (docs/grpc.md)."""
    services = services_factory(proxy.url(pg_url))
    key = new_api_key()
    server = ServerThread(services, api_key_hashes={hash_api_key(key): "gateway"})
    fields = {"idempotency_key": "g-1", "user_id": "user-1", "model": MODEL,
              "input_tokens": 40, "output_tokens": 7}
    try:
        with Client(server.target, api_key=key, timeout=60) as zk:
            zk.record_usage(**{**fields, "idempotency_key": "g-0"})
            before = ledger_state(services)
            proxy.mode = fault
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                zk.record_usage(**fields)
            took = time.monotonic() - started
            print(f"gRPC RecordUsage, {fault}: {caught.value.code().name} after {took:.1f} s: "
                  f"{caught.value.details()}")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details().startswith("the database is unavailable: ")
            assert_short(caught.value.details())
            assert took < 10.0, took  # as test_ingest_fails_in_time_and_resumes
            proxy.mode = "pass"
            first = zk.record_usage(**fields)
            again = zk.record_usage(**fields)
    finally:
        server.stop()
    assert not first.replayed and again.replayed
    assert again.receipt.receipt_hash == first.receipt.receipt_hash
    totals, count = ledger_state(services)
    expected = dict(before[0])
    expected["user-1"] = expected.get("user-1", 0) + first.receipt.units
    assert (totals, count) == (expected, before[1] + 1)


def test_short_outage_is_ridden_out(pg_url, proxy, services_factory):
    services = services_factory(proxy.url(pg_url), db_retry_seconds=10.0)
    services.meter.record(usage(0))
    proxy.mode = "refuse"
    threading.Timer(1.0, lambda: setattr(proxy, "mode", "pass")).start()
    started = time.monotonic()
    stored = services.meter.record(usage(1))  # retried until the database is back
    assert 0.8 < time.monotonic() - started < 8.0
    assert not stored.replayed
    assert ledger_state(services)[1] == 2


def _terminator(url: str, stop: threading.Event, every: float) -> list[int]:
    """Terminate every backend of the database ``url`` names, every ``every`` seconds."""
    killed: list[int] = []
    name = make_url(url).database
    _, admin = admin_connection()
    assert isinstance(admin, psycopg.Connection)

    def run() -> None:
        while not stop.is_set():
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
            killed.extend(1 for ok, in rows if ok)
            stop.wait(every)
        admin.close()

    threading.Thread(target=run, daemon=True).start()
    return killed


def test_terminated_backends_lose_nothing(pg_url, services_factory):
    """Backends killed every 50 ms while 60 events are recorded in batches: every batch
    either succeeds or fails with one short UNAVAILABLE-class message; the gateway retries
    the failed ones with the same keys; in the end each event is stored exactly once."""
    services = services_factory(pg_url, db_retry_seconds=2.0)
    requests = [usage(i) for i in range(60)]
    stop = threading.Event()
    killed = _terminator(pg_url, stop, 0.05)
    failed: list[UsageRequest] = []
    try:
        for start in range(0, len(requests), 4):
            batch = requests[start:start + 4]
            try:
                outcomes = services.meter.record_batch(batch)
            except LedgerError as exc:
                assert_short(str(exc))
                failed.extend(batch)
                continue
            for request, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):  # this item's UNAVAILABLE
                    assert isinstance(outcome, LedgerError), repr(outcome)
                    assert_short(str(outcome))
                    failed.append(request)
            time.sleep(0.01)
    finally:
        stop.set()
    print(f"{sum(killed)} backends terminated")
    assert sum(killed) > 5  # the fault really happened
    for request in failed:
        services.meter.record(request)
    replay = services.meter.record_batch(requests)  # every key is now known
    assert all(o.replayed for o in replay)
    totals, count = ledger_state(services)
    assert count == len(requests)
    expected: dict[str, int] = {}
    for outcome, request in zip(replay, requests, strict=True):
        expected[request.user_id] = expected.get(request.user_id, 0) + outcome.receipt.units
    assert totals == expected
