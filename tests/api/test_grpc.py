"""The gRPC API over a real loopback socket: ingest (unary and streaming), retries, auth,
malformed and oversized input, health, reflection, epochs and openings."""

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from nacl.public import PrivateKey
from sqlalchemy import MetaData, select

from prover.api.grpc_server import hash_api_key, new_api_key
from prover.app import build_services
from prover.config import Settings
from prover.epoch.derive import user_tag
from prover.epoch.service import master_secret
from tests.api.grpc_harness import ServerThread
from verifier.account import ETH
from verifier.bundle import parse_bundle, verify_bundle
from verifier.opening import Opening, check_opening, unseal
from verifier.receipts import check_text, decode_receipt, verify_chain, verify_signature
from verifier.tokens import Message, count_chat, count_text, get_encoding
from zkmeter.client import Client, usage_request
from zkmeter.v1 import meter_pb2, meter_pb2_grpc

SEED = "b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfef"
MARKER = "zq-secret-prompt-marker-7731"
PAYER = bytes.fromhex("a1" * 20)
GRPC_USERS = ("alice", "bob", "carol", "dave", "erin", "f", "g", "h", "x", "ivy", "k1", "k2",
              "nokey", *(f"u{i}" for i in range(9)))


@pytest.fixture()
def services(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'zk.sqlite'}", signing_key=SEED,
                        proof_workers=1, contract_address="0x" + "42" * 20)
    services = build_services(settings)
    account = services.accounts.register_account(payer=PAYER, asset=ETH,
                                                 payer_x25519_public_key=bytes(32 * [9]))
    for user in GRPC_USERS:
        services.accounts.register_user(user, account.account_id)
    yield services
    services.close()


@pytest.fixture()
def api_key():
    return new_api_key()


@pytest.fixture()
def server(services, api_key):
    running = ServerThread(services, api_key_hashes={hash_api_key(api_key): "operator"},
                           max_message_bytes=256 * 1024)
    yield running
    running.stop()


@pytest.fixture()
def client(server, api_key):
    with Client(server.target, api_key=api_key) as zk:
        yield zk


def count_rows(services, table: str) -> int:
    meta = MetaData()
    meta.reflect(services.meter.ledger.engine)
    with services.meter.ledger.engine.begin() as conn:
        return len(conn.execute(select(meta.tables[table])).all())


def test_unary_counts_receipt_is_signed_and_chained(client, services):
    first = client.record_usage(idempotency_key="a1", user_id="alice", model="gpt-4o",
                                input_tokens=100, output_tokens=20).receipt
    second = client.record_usage(idempotency_key="a2", user_id="alice", model="gpt-4o",
                                 input_tokens=10, output_tokens=2, reasoning_tokens=5).receipt
    receipts = [decode_receipt(r.encoded + r.signature) for r in (first, second)]
    provider = bytes(services.meter.provider_id)
    for r in receipts:
        verify_signature(r, provider_id=provider)
    summary = verify_chain(receipts, provider_id=provider)
    assert summary.total_units == second.running_total == first.units + second.units
    assert (second.sequence, second.reasoning_tokens, second.input_tokens) == (2, 5, 10)
    assert second.receipt_hash == receipts[1].hash()


def test_unary_text_is_counted_with_the_models_tokenizer(client):
    messages = [("system", "You are terse."), ("user", "hello world", "alice")]
    response = client.record_usage(idempotency_key="t1", user_id="bob", model="gpt-4o",
                                   messages=messages, completion="tiktoken is great!")
    receipt = response.receipt
    enc = get_encoding("o200k_base")
    domain_messages = [Message(*m) for m in messages]
    assert receipt.encoding == "o200k_base"
    assert receipt.input_tokens == count_chat(domain_messages, enc)
    assert receipt.output_tokens == count_text("tiktoken is great!", enc) == 6
    check_text(decode_receipt(receipt.encoded + receipt.signature), messages=domain_messages,
               completion="tiktoken is great!")


def test_retry_returns_the_original_receipt(client, services):
    fields = dict(idempotency_key="r1", user_id="carol", model="gpt-4o", input_tokens=7,
                  output_tokens=3)
    first = client.record_usage(**fields)
    again = client.record_usage(**fields)
    assert not first.replayed and again.replayed
    assert again.receipt.receipt_hash == first.receipt.receipt_hash
    assert len(client.list_receipts("carol")) == 1


def test_same_key_other_payload_is_already_exists_and_stores_nothing(client):
    client.record_usage(idempotency_key="k", user_id="dave", model="gpt-4o", input_tokens=1,
                        output_tokens=1)
    with pytest.raises(grpc.RpcError) as err:
        client.record_usage(idempotency_key="k", user_id="dave", model="gpt-4o",
                            input_tokens=2, output_tokens=1)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert len(client.list_receipts("dave")) == 1


def _field_violations(err) -> list[str]:
    status = rpc_status.from_call(err)
    fields = []
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields


@pytest.mark.parametrize("fields,field", [
    (dict(idempotency_key="m1", user_id="erin", model="gpt-4o"), ""),  # no usage at all
    (dict(idempotency_key="m2", user_id="", model="gpt-4o", input_tokens=1,
          output_tokens=1), "user_id"),
    (dict(idempotency_key="", user_id="erin", model="gpt-4o", input_tokens=1,
          output_tokens=1), "idempotency_key"),
    (dict(idempotency_key="m3", user_id="erin", model="no-such-model", input_tokens=1,
          output_tokens=1), ""),
    (dict(idempotency_key="m4", user_id="erin", model="gpt-4o", input_tokens=1,
          output_tokens=1, cached_input_tokens=5), ""),
    (dict(idempotency_key="m5", user_id="erin", model="gpt-4o", messages=[],
          completion="x"), ""),
    (dict(idempotency_key="m6", user_id="erin", model="gpt-4o", messages=[("", "hi")],
          completion="x"), "messages"),
])
def test_malformed_requests_are_invalid_argument_and_store_nothing(client, services, fields,
                                                                   field):
    with pytest.raises(grpc.RpcError) as err:
        client.record_usage(**fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    if field:
        assert field in _field_violations(err.value)
    assert count_rows(services, "events") == 0


def test_oversized_request_is_resource_exhausted(client, services):
    with pytest.raises(grpc.RpcError) as err:
        client.record_usage(idempotency_key="big", user_id="f", model="gpt-4o",
                            messages=[("user", "x" * 300_000)], completion="ok")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert count_rows(services, "events") == 0


def test_units_overflow_is_resource_exhausted(client, services):
    with pytest.raises(grpc.RpcError) as err:
        client.record_usage(idempotency_key="huge", user_id="g", model="gpt-4o",
                            input_tokens=2**32 - 1, output_tokens=2**32 - 1)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert count_rows(services, "events") == 0


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer zkm_wrong"),),
                                      (("authorization", "Basic abc"),)])
def test_missing_or_wrong_api_key_is_unauthenticated(server, services, metadata):
    with grpc.insecure_channel(server.target) as channel:
        stub = meter_pb2_grpc.MeterServiceStub(channel)
        request = usage_request(idempotency_key="u", user_id="h", model="gpt-4o",
                                input_tokens=1, output_tokens=1)
        with pytest.raises(grpc.RpcError) as err:
            stub.RecordUsage(request, metadata=metadata, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert count_rows(services, "events") == 0


def test_health_and_reflection_answer_without_a_key(server):
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "zkmeter.v1.MeterService", "zkmeter.v1.EpochService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        names = {s.name for s in replies[0].list_services_response.service}
    assert {"zkmeter.v1.MeterService", "zkmeter.v1.EpochService",
            "grpc.health.v1.Health"} <= names


def test_stream_one_response_per_request_in_order(client, services):
    requests = []
    for i in range(300):
        if i == 100:  # a message without a role: refused in the stream, which goes on
            requests.append(usage_request(idempotency_key="norole", user_id="x",
                                          model="gpt-4o", messages=[("", "hi")],
                                          completion="ok"))
        elif i == 150:
            requests.append(usage_request(idempotency_key="bad", user_id="", model="gpt-4o",
                                          input_tokens=1, output_tokens=1))
        elif i % 50 == 49:  # a retry of the previous request
            requests.append(requests[-1])
        else:
            requests.append(usage_request(idempotency_key=f"s{i}", user_id=f"u{i % 9}",
                                          model="gpt-4o", input_tokens=i, output_tokens=1))
    responses = list(client.record_usage_stream(requests))
    assert len(responses) == 300
    assert responses[150].HasField("error")
    assert responses[150].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert responses[150].error.field == "user_id"
    assert (responses[150].error.reason, dict(responses[150].error.metadata)) == ("", {})
    assert responses[100].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert responses[100].error.field == "messages"
    for i, (request, response) in enumerate(zip(requests, responses, strict=True)):
        if i in (100, 150):
            continue
        assert response.HasField("receipt")
        receipt = decode_receipt(response.receipt.encoded + response.receipt.signature)
        assert receipt.user_id == request.user_id
        assert receipt.input_tokens == request.counts.input_tokens
        assert response.replayed == (i % 50 == 49)
    assert count_rows(services, "events") == 300 - 2 - 6


def test_epoch_close_bundle_and_openings_over_grpc(client, services):
    keys = {u: PrivateKey.generate() for u in ("k1", "k2")}
    for user, key in keys.items():
        client.register_user_key(user, bytes(key.public_key))
    for i, user in enumerate(["k1", "k2", "nokey", "k1"]):
        client.record_usage(idempotency_key=f"e{i}", user_id=user, model="gpt-4o",
                            input_tokens=10 * (i + 1), output_tokens=i)
    epoch_id = client.current_epoch().epoch_id
    closed = client.close_epoch()
    assert closed.epoch_id == epoch_id and closed.state == 3  # EPOCH_STATE_CLOSED
    assert (closed.leaves_done, closed.leaves_total) == (16, 16)
    bundle = parse_bundle(client.bundle(epoch_id))
    assert all(c.ok for c in verify_bundle(bundle, provider_key=services.meter.provider_id))
    assert bundle.merkle_root == closed.merkle_root and bundle.total == closed.total_units
    for user, key in keys.items():
        receipts = client.list_receipts(user, epoch_id)
        tag = user_leaf_tag(services, epoch_id, user)
        opening = unseal(client.sealed_opening(epoch_id, tag), bytes(key))
        assert opening.value == receipts[-1].running_total
        assert all(ok for _, ok, _ in check_opening(opening, bundle))
    plain = Opening.from_bytes(client.opening(epoch_id, "nokey"))
    assert plain.value == client.list_receipts("nokey", epoch_id)[-1].running_total
    with pytest.raises(grpc.RpcError) as err:
        client.opening(epoch_id, "k1")  # has a key: only the sealed box exists
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert client.current_epoch().epoch_id == epoch_id + 1


def user_leaf_tag(services, epoch_id: int, user: str) -> bytes:
    secret = master_secret(services.settings.load_signing_key())
    account_id = services.accounts.user_account(user)
    return user_tag(secret, services.epochs.context(epoch_id, account_id), user)


def test_epoch_errors_are_proper_status_codes(client):
    with pytest.raises(grpc.RpcError) as err:
        client.epoch(999)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        client.bundle(999)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        client.sealed_opening(1, b"short")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        client.close_epoch()  # no epoch was ever opened: nothing to close
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_register_key_validation(client):
    with pytest.raises(grpc.RpcError) as err:
        client.register_user_key("u", b"\x01" * 31)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_text_never_reaches_the_database_or_logs(client, services, caplog):
    caplog.set_level("DEBUG")
    client.record_usage(idempotency_key="p1", user_id="ivy", model="gpt-4o",
                        messages=[("user", f"{MARKER} please")], completion=f"{MARKER} done")
    with pytest.raises(grpc.RpcError):
        client.record_usage(idempotency_key="p1", user_id="ivy", model="gpt-4o",
                            messages=[("user", f"{MARKER} changed")], completion=MARKER)
    meta = MetaData()
    meta.reflect(services.meter.ledger.engine)
    with services.meter.ledger.engine.begin() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)).all():
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    assert MARKER.encode() not in raw, table.name
    assert MARKER not in caplog.text


def test_accounts_and_users_over_grpc(client, services):
    payer, token = bytes.fromhex("b2" * 20), bytes.fromhex("c3" * 20)
    account = client.register_account(payer=payer, asset=token,
                                      payer_x25519_public_key=bytes(32 * [5]))
    assert account.account_id == services.accounts.account_id(payer, token)
    assert account.status == meter_pb2.ACCOUNT_STATUS_OPEN
    assert client.account(account.account_id).payer == payer
    key = PrivateKey.generate()
    client.register_user("new-user", account.account_id, bytes(key.public_key))
    receipt = client.record_usage(idempotency_key="n1", user_id="new-user", model="gpt-4o",
                                  input_tokens=1, output_tokens=1).receipt
    assert receipt.sequence == 1
    with pytest.raises(grpc.RpcError) as err:  # a user never moves to another account
        client.register_user("alice", account.account_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        client.register_user("y", b"\x01" * 32)  # no such account
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        client.register_user("y", b"\x01" * 31)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        client.register_account(payer=payer[:19], asset=token,
                                payer_x25519_public_key=bytes(32))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    closed = client.close_account(account.account_id)
    assert closed.status == meter_pb2.ACCOUNT_STATUS_CLOSED
    before = count_rows(services, "events")
    with pytest.raises(grpc.RpcError) as err:
        client.record_usage(idempotency_key="n2", user_id="new-user", model="gpt-4o",
                            input_tokens=1, output_tokens=1)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "closed" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.account(b"\x07" * 32)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert count_rows(services, "events") == before


def test_unregistered_user_is_not_found_and_stores_nothing(client, services):
    with pytest.raises(grpc.RpcError) as err:
        client.record_usage(idempotency_key="s1", user_id="stranger", model="gpt-4o",
                            input_tokens=1, output_tokens=1)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "not registered" in err.value.details()
    responses = list(client.record_usage_stream([
        usage_request(idempotency_key="s2", user_id="stranger", model="gpt-4o",
                      input_tokens=1, output_tokens=1),
        usage_request(idempotency_key="s3", user_id="alice", model="gpt-4o",
                      input_tokens=1, output_tokens=1)]))
    assert responses[0].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert responses[1].receipt.sequence == 1
    assert count_rows(services, "events") == 1
    assert count_rows(services, "user_states") == 1
