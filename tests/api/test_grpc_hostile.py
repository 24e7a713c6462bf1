"""A black-box client built from the .proto files sends what protobuf cannot parse, ids the
databases handle differently, and poison among innocent requests (issue 12). Every bad item
gets INVALID_ARGUMENT (one log line, no traceback), a stream never hangs, and one item's
error never affects another's, on SQLite and on PostgreSQL."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from prover.api.grpc_server import IngestBatcher, hash_api_key, new_api_key
from prover.app import build_services
from prover.config import Settings
from prover.errors import LedgerError
from tests.accounts import STANDARD_USERS, enroll
from tests.api.grpc_harness import ServerThread
from tests.postgres import temporary_database
from zkmeter.client import usage_request
from zkmeter.v1 import meter_pb2

SEED = "b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfef"
UNARY = "/zkmeter.v1.MeterService/RecordUsage"
STREAM = "/zkmeter.v1.MeterService/RecordUsageStream"
TIMEOUT = 20


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'zk.sqlite'}"
    else:
        with temporary_database("zk_hostile") as url:
            yield url


@pytest.fixture()
def api_key():
    return new_api_key()


@pytest.fixture()
def server(database_url, api_key):
    settings = Settings(database_url=database_url, signing_key=SEED, proof_workers=1,
                        contract_address="0x" + "42" * 20)
    services = build_services(settings)
    enroll(services.meter.ledger.engine, services.meter.provider_id, STANDARD_USERS)
    running = ServerThread(services, api_key_hashes=[hash_api_key(api_key)])
    yield running
    running.stop()
    services.close()


@pytest.fixture()
def channel(server):
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def kind(response) -> str:
    return "error" if response.HasField("error") else "receipt"


def auth(key):
    return (("authorization", f"Bearer {key}"),)


def good(key: str, user: str = "alice") -> bytes:
    return usage_request(idempotency_key=key, user_id=user, model="gpt-4o", input_tokens=3,
                         output_tokens=4).SerializeToString()


def _string_field(number: int, raw: bytes) -> bytes:
    return bytes([number << 3 | 2, len(raw)]) + raw


UNDECODABLE = {
    "invalid utf-8 in user_id": _string_field(1, b"k-utf8") + _string_field(2, b"\xff\xfe"),
    "garbage": b"\xff\xff\xff\xff\xff\xff",
    "truncated": good("k-trunc")[:-3],
    "wire type 7": b"\x0f\x01\x02",
    "field 0": b"\x00\x01",
    "deeply nested groups": b"\x5b" * 200_000,  # field 11, start group, never closed
}


@pytest.mark.parametrize("name", sorted(UNDECODABLE))
def test_an_undecodable_unary_request_is_invalid_argument_in_one_log_line(
        channel, api_key, caplog, name):
    call = channel.unary_unary(UNARY, request_serializer=None,
                               response_deserializer=meter_pb2.RecordUsageResponse.FromString)
    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as info:
        call(UNDECODABLE[name], metadata=auth(api_key), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DecodeError" not in info.value.details() and "Error parsing" not in info.value.details()
    mine = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(mine) == 1
    assert not any(r.exc_info for r in caplog.records)
    assert "Traceback" not in caplog.text
    # the server is still fine
    ok = call(good("after-" + name.replace(" ", "-")), metadata=auth(api_key), timeout=TIMEOUT)
    assert ok.receipt.sequence >= 1


def test_an_unauthenticated_undecodable_request_is_unauthenticated(channel):
    call = channel.unary_unary(UNARY, request_serializer=None,
                               response_deserializer=meter_pb2.RecordUsageResponse.FromString)
    with pytest.raises(grpc.RpcError) as info:
        call(UNDECODABLE["garbage"], metadata=auth("zkm_wrong"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_stream_with_undecodable_items_answers_each_and_ends(channel, api_key):
    call = channel.stream_stream(STREAM, request_serializer=None,
                                 response_deserializer=meter_pb2.RecordUsageResponse.FromString)
    items = [good("s-0")]
    for i, name in enumerate(sorted(UNDECODABLE)):
        items += [UNDECODABLE[name], good(f"s-{i + 1}")]
    responses = list(call(iter(items), metadata=auth(api_key), timeout=TIMEOUT))
    assert len(responses) == len(items)
    for i, response in enumerate(responses):
        if i % 2 == 0:
            assert kind(response) == "receipt"
        else:
            assert kind(response) == "error"
            assert response.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_text_and_counts_together_are_refused(channel, api_key):
    """Protobuf keeps the last member of a oneof; zkmeter refuses a request carrying both."""
    text = usage_request(idempotency_key="both", user_id="alice", model="gpt-4o",
                         messages=[("user", "hi")], completion="yo")
    counts = meter_pb2.RecordUsageRequest(counts=meter_pb2.ReportedCounts(input_tokens=1,
                                                                          output_tokens=1))
    both = text.SerializeToString() + counts.SerializeToString()
    call = channel.unary_unary(UNARY, request_serializer=None,
                               response_deserializer=meter_pb2.RecordUsageResponse.FromString)
    with pytest.raises(grpc.RpcError) as info:
        call(both, metadata=auth(api_key), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not both" in info.value.details()


BAD_IDS = {"nul in user id": ("k-nul", "a\x00b"), "nul in key": ("k\x00", "bob"),
           "whitespace-only user id": ("k-ws", "  \t "), "control char": ("k-cc", "a\x1bb"),
           "whitespace-only key": (" ", "bob")}


@pytest.mark.parametrize("name", sorted(BAD_IDS))
def test_a_bad_id_is_invalid_argument_on_both_backends(channel, api_key, name):
    key, user = BAD_IDS[name]
    call = channel.unary_unary(UNARY, request_serializer=None,
                               response_deserializer=meter_pb2.RecordUsageResponse.FromString)
    with pytest.raises(grpc.RpcError) as info:
        call(good(key, user), metadata=auth(api_key), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_one_nul_id_in_a_stream_fails_only_itself(channel, api_key):
    call = channel.stream_stream(STREAM, request_serializer=None,
                                 response_deserializer=meter_pb2.RecordUsageResponse.FromString)
    items = [good(f"n-{i}", "a\x00b" if i == 17 else f"user-{i % 5}") for i in range(40)]
    responses = list(call(iter(items), metadata=auth(api_key), timeout=TIMEOUT))
    kinds = [kind(r) for r in responses]
    assert kinds.count("receipt") == 39 and kinds[17] == "error"
    assert responses[17].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_concurrent_unary_calls_with_one_poisoned_fail_only_it(channel, api_key):
    call = channel.unary_unary(UNARY, request_serializer=None,
                               response_deserializer=meter_pb2.RecordUsageResponse.FromString)

    def one(i):
        try:
            call(good(f"c-{i}", "a\x00b" if i == 30 else f"user-{i % 7}"),
                 metadata=auth(api_key), timeout=TIMEOUT)
            return "ok"
        except grpc.RpcError as exc:
            return exc.code()

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(one, range(60)))
    assert outcomes.count("ok") == 59
    assert outcomes[30] == grpc.StatusCode.INVALID_ARGUMENT


def test_the_batcher_isolates_a_batch_the_database_refuses_as_a_whole():
    """Whatever the database refuses for a whole transaction (here: any batch holding the
    poison), the other callers' requests in that batch are recorded on their own."""
    recorded: list[str] = []

    def record_batch(requests):
        if "poison" in requests and len(requests) > 1:
            raise LedgerError("the database refused the transaction")
        if requests == ["poison"]:
            raise LedgerError("the database refused the item")
        recorded.extend(requests)
        return [f"ok:{r}" for r in requests]

    async def run():
        batcher = IngestBatcher(record_batch)
        try:
            names = [f"r{i}" for i in range(30)] + ["poison"] + [f"r{i}" for i in range(30, 60)]
            results = await asyncio.gather(*(batcher.submit([n]) for n in names))
        finally:
            await batcher.aclose()
        return names, [r[0] for r in results]

    names, outcomes = asyncio.run(run())
    for name, outcome in zip(names, outcomes, strict=True):
        if name == "poison":
            assert isinstance(outcome, LedgerError)
        else:
            assert outcome == f"ok:{name}"
    assert sorted(recorded) == sorted(n for n in names if n != "poison")
