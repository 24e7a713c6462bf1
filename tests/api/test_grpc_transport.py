"""The transport's per-call machinery (issue 16): the interceptor builds each method's wrapped
handler and each denial once and reuses them, which must never let a call through on an
earlier call's key; the cheap test for a request holding both ``text`` and ``counts`` agrees
with a full scan of the wire format."""

import asyncio
import random
import threading
import types

import grpc
import pytest

from prover.api.grpc_server import (
    Undecodable,
    _safe_deserializer,
    hash_api_key,
    new_api_key,
    top_level_fields,
)
from prover.app import build_services
from prover.config import Settings
from tests.accounts import STANDARD_USERS, enroll
from tests.api.grpc_harness import ServerThread
from zkmeter.client import usage_request
from zkmeter.v1 import epoch_pb2, meter_pb2

SEED = "b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfef"
UNARY = "/zkmeter.v1.MeterService/RecordUsage"
STREAM = "/zkmeter.v1.MeterService/RecordUsageStream"
CLOSE = "/zkmeter.v1.EpochService/CloseEpoch"
CURRENT = "/zkmeter.v1.EpochService/GetCurrentEpoch"
TIMEOUT = 20


@pytest.fixture()
def keys():
    return {"gateway": new_api_key(), "operator": new_api_key()}


@pytest.fixture()
def channel(tmp_path, keys):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'zk.sqlite'}", signing_key=SEED,
                        proof_workers=1, contract_address="0x" + "42" * 20)
    services = build_services(settings)
    enroll(services.meter.ledger.engine, services.meter.provider_id, STANDARD_USERS)
    running = ServerThread(services, api_key_hashes={hash_api_key(keys["gateway"]): "gateway",
                                                     hash_api_key(keys["operator"]): "operator"})
    with grpc.insecure_channel(running.target) as ch:
        yield ch
    running.stop()
    services.close()


def good(key: str) -> bytes:
    return usage_request(idempotency_key=key, user_id="alice", model="gpt-4o", input_tokens=3,
                         output_tokens=4).SerializeToString()


def code(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_every_call_is_checked_again_after_the_handlers_are_cached(channel, keys):
    """Good, wrong, missing and malformed keys alternate on the same methods: each call gets
    its own verdict, whichever handler (wrapped or denial) an earlier call built."""
    unary = channel.unary_unary(UNARY, request_serializer=None,
                                response_deserializer=meter_pb2.RecordUsageResponse.FromString)
    stream = channel.stream_stream(STREAM, request_serializer=None,
                                   response_deserializer=meter_pb2.RecordUsageResponse.FromString)
    close = channel.unary_unary(CLOSE, request_serializer=None,
                                response_deserializer=epoch_pb2.Epoch.FromString)
    current = channel.unary_unary(CURRENT, request_serializer=None,
                                  response_deserializer=epoch_pb2.Epoch.FromString)
    gateway = (("authorization", f"Bearer {keys['gateway']}"),)
    operator = (("authorization", f"Bearer {keys['operator']}"),)
    wrong = (("authorization", f"Bearer {new_api_key()}"),)
    basic = (("authorization", f"Basic {keys['gateway']}"),)
    twice = gateway + gateway
    ok, unauthenticated = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED
    for round_ in range(3):
        for metadata, expected in ((gateway, ok), (wrong, unauthenticated), ((), unauthenticated),
                                   (operator, ok), (basic, unauthenticated),
                                   (twice, unauthenticated), (gateway, ok)):
            key = f"k-{round_}-{len(metadata)}-{expected.name}-{metadata[:1]!r}"
            assert code(unary, good(key), metadata=metadata, timeout=TIMEOUT) == expected
            responses = []
            status = code(lambda m=metadata, k=key: responses.extend(
                stream(iter([good(k + "-s")]), metadata=m, timeout=TIMEOUT)))
            assert status == expected
            assert len(responses) == (1 if expected == ok else 0)
        # an operator-only method: the gateway key is refused before and after an operator's
        assert code(close, b"", metadata=gateway, timeout=TIMEOUT) == \
            grpc.StatusCode.PERMISSION_DENIED
        assert code(current, b"", metadata=operator, timeout=TIMEOUT) == ok
        assert code(close, b"", metadata=wrong, timeout=TIMEOUT) == unauthenticated
        assert code(current, b"", metadata=gateway, timeout=TIMEOUT) == ok
        assert code(close, b"", metadata=gateway, timeout=TIMEOUT) == \
            grpc.StatusCode.PERMISSION_DENIED


def _key(number: int, wire: int, *, overlong: bool) -> bytes:
    value = number << 3 | wire
    return bytes([value | 0x80, 0x00]) if overlong else bytes([value])


def _field(number: int, payload: bytes, *, overlong: bool = False) -> bytes:
    return _key(number, 2, overlong=overlong) + bytes([len(payload)]) + payload


TEXT = meter_pb2.TextUsage(messages=[meter_pb2.ChatMessage(role="user", content="hi")],
                           completion="yo").SerializeToString()
COUNTS = meter_pb2.ReportedCounts(input_tokens=40, output_tokens=41).SerializeToString()


@pytest.mark.parametrize("overlong", [False, True])
@pytest.mark.parametrize("order", ["text first", "counts first"])
def test_both_usages_are_refused_in_either_order_and_any_key_encoding(order, overlong):
    parts = [_field(4, TEXT, overlong=overlong), _field(5, COUNTS, overlong=overlong)]
    if order == "counts first":
        parts.reverse()
    data = _field(1, b"k") + _field(2, b"alice") + b"".join(parts)
    meter_pb2.RecordUsageRequest.FromString(data)  # protobuf itself takes it
    for method in (UNARY, STREAM):
        safe = _safe_deserializer(method, meter_pb2.RecordUsageRequest.FromString)
        assert safe is not None
        refused = safe(data)
        assert isinstance(refused, Undecodable) and "not both" in refused.reason


def test_the_cheap_test_for_both_usages_agrees_with_a_full_scan():
    """Random well-formed requests (ids of random bytes, keys of every wire type for fields 4
    and 5, in any order): refused exactly when the naive scan finds both field numbers."""
    safe = _safe_deserializer(UNARY, meter_pb2.RecordUsageRequest.FromString)
    assert safe is not None
    rng = random.Random(16)
    refused = kept = 0
    for _ in range(3000):
        parts = [_field(1, bytes(rng.choice(b"abcdef-0123456789 !\"$%&'()*+,./")
                                 for _ in range(rng.randrange(40)))),
                 _field(3, b"gpt-4o")]
        for number, payload in ((4, TEXT), (5, COUNTS)):
            if rng.random() < 0.6:
                overlong = rng.random() < 0.3
                if rng.random() < 0.8:
                    parts.append(_field(number, payload, overlong=overlong))
                else:  # the wrong wire type: protobuf keeps it as an unknown field
                    parts.append(_key(number, 0, overlong=overlong) + bytes([rng.randrange(128)]))
        rng.shuffle(parts)
        data = b"".join(parts)
        try:
            meter_pb2.RecordUsageRequest.FromString(data)
        except Exception:
            continue
        both = {4, 5} <= top_level_fields(data)
        outcome = safe(data)
        assert isinstance(outcome, Undecodable) == both, data
        refused += both
        kept += not both
    assert refused > 100 and kept > 100


def test_the_batcher_takes_whole_submissions_in_order_up_to_its_cap():
    """Concurrent submissions share transactions of at most ``max_batch`` requests, each one
    whole (a larger one split first), every outcome returned to its own caller in order."""
    from prover.api.grpc_server import IngestBatcher

    transactions: list[list[str]] = []

    def record_batch(requests):
        transactions.append(list(requests))
        return [f"ok:{r}" for r in requests]

    async def run():
        batcher = IngestBatcher(record_batch, max_batch=8)
        try:
            submissions = [[f"{s}.{i}" for i in range(size)]
                           for s, size in enumerate([1, 3, 5, 2, 20, 1, 8, 4])]
            results = await asyncio.gather(*(batcher.submit(s) for s in submissions))
            return submissions, results
        finally:
            await batcher.aclose()

    submissions, results = asyncio.run(run())
    for submitted, outcome in zip(submissions, results, strict=True):
        assert outcome == [f"ok:{r}" for r in submitted]
    assert all(len(t) <= 8 for t in transactions)
    recorded = [r for t in transactions for r in t]
    assert sorted(recorded) == sorted(r for s in submissions for r in s)
    for submitted in submissions:  # each submission's requests keep their order
        positions = [recorded.index(r) for r in submitted]
        assert positions == sorted(positions)
    for t in transactions:  # no submission of at most 8 is cut in two
        for submitted in submissions:
            if len(submitted) <= 8 and any(r in t for r in submitted):
                assert all(r in t for r in submitted)


class _Stored:
    def __init__(self, key: str) -> None:
        self.key, self.replayed = key, False


class _Ledger:
    """A stand-in for Meter.record_batch (run on the batcher's thread): it records what was
    committed, and can hold a transaction until the test lets it go."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self.transactions: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()

    def record_batch(self, requests):
        keys = [r.idempotency_key for r in requests]
        self.transactions.append(keys)
        self.hold.wait(30)
        self.committed.extend(keys)
        return [_Stored(k) for k in keys]


def _servicer(monkeypatch, ledger):
    from prover.api import grpc_server

    monkeypatch.setattr(grpc_server, "_response", lambda stored: stored)  # no real receipts
    services = types.SimpleNamespace(meter=types.SimpleNamespace(record_batch=ledger.record_batch))
    return grpc_server.MeterServicer(services)


async def _until(condition) -> None:
    """Let the loop run until ``condition()`` holds (a hang fails after 10 s)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def _request(key: str) -> meter_pb2.RecordUsageRequest:
    return meter_pb2.RecordUsageRequest.FromString(good(key))


def test_a_pipelined_stream_records_the_next_batch_while_answering_in_order(monkeypatch):
    """While the first batch's responses are being written, the next batch is recorded;
    responses come in request order, each only once its request is committed."""
    ledger = _Ledger()
    servicer = _servicer(monkeypatch, ledger)

    async def run():
        feed: asyncio.Queue = asyncio.Queue()

        async def requests():
            while (item := await feed.get()) is not None:
                yield item

        stream = servicer.RecordUsageStream(requests(), None)
        ledger.hold.clear()  # the first transaction waits
        for i in range(3):
            feed.put_nowait(_request(f"a{i}"))
        first = asyncio.ensure_future(stream.__anext__())
        await _until(lambda: ledger.transactions)
        for i in range(3):  # arrive while the first batch is recorded
            feed.put_nowait(_request(f"b{i}"))
        await asyncio.sleep(0.05)
        ledger.hold.set()
        received = [await first]
        assert received[0].key in ledger.committed
        # the consumer has read one response only: the next batch is being recorded already
        await _until(lambda: len(ledger.transactions) >= 2)
        feed.put_nowait(_request("c0"))
        feed.put_nowait(None)
        async for response in stream:
            assert response.key in ledger.committed
            received.append(response)
        await servicer.batcher.aclose()
        return [r.key for r in received]

    keys = asyncio.run(run())
    assert keys == ["a0", "a1", "a2", "b0", "b1", "b2", "c0"]
    assert [k for t in ledger.transactions for k in t] == keys
    assert ledger.transactions[0] == ["a0", "a1", "a2"]


def test_a_stream_whose_client_does_not_read_holds_a_bounded_number_of_requests(monkeypatch):
    """A client that sends without end and reads nothing: the server stops pulling requests
    after the bounded queue and the two batches are full."""
    from prover.api.grpc_server import STREAM_BATCH

    ledger = _Ledger()
    servicer = _servicer(monkeypatch, ledger)
    pulled = 0

    async def run():
        async def requests():
            nonlocal pulled
            while True:
                pulled += 1
                yield _request(f"k{pulled}")
                await asyncio.sleep(0)

        stream = servicer.RecordUsageStream(requests(), None)
        await stream.__anext__()  # one response read, then none
        for _ in range(200):
            await asyncio.sleep(0.005)
        held = pulled
        await stream.aclose()
        await servicer.batcher.aclose()
        return held

    held = asyncio.run(run())
    assert held <= 4 * STREAM_BATCH + 2 * STREAM_BATCH + 2
    assert len(ledger.committed) <= 2 * STREAM_BATCH
