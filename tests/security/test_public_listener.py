"""Nothing on the public HTTP listener changes between two publications (issue 12): every
public endpoint is polled while usage is ingested over real gRPC; every answer stays byte for
byte the same until the next epoch's close begins. Operational metrics, which do move with
every request, are only on the operator's own listener."""

import json

import grpc
import pytest

from prover.api.grpc_server import hash_api_key, new_api_key
from prover.api.http import create_http_app, create_metrics_app
from prover.app import build_services
from prover.config import Settings
from tests.accounts import enroll
from tests.api.grpc_harness import ServerThread
from tests.api.test_http import HttpServer
from zkmeter.client import Client, usage_request

SEED = "b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfef"


@pytest.fixture()
def world(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'zk.sqlite'}", signing_key=SEED,
                        proof_workers=1, contract_address="0x" + "42" * 20, min_leaves=4)
    services = build_services(settings)
    enroll(services.meter.ledger.engine, services.meter.provider_id,
           ["u0", "u1", "u2", "user-0", "user-1", "user-2", "user-3", "streamer"])
    key = new_api_key()
    grpc_server = ServerThread(services, api_key_hashes={hash_api_key(key): "operator"})
    public = HttpServer(create_http_app(services))
    operator = HttpServer(create_metrics_app(services))
    with Client(grpc_server.target, api_key=key) as zk:
        yield services, zk, public, operator
    operator.stop()
    public.stop()
    grpc_server.stop()
    services.close()


def public_paths(zk, epoch_id: int) -> list[str]:
    tag = json.loads(zk.bundle(epoch_id))["leaves"][0]["tag"][2:]
    return ["/v1/epochs", "/v1/epochs?limit=1", f"/v1/epochs/{epoch_id}",
            f"/v1/epochs/{epoch_id + 1}", f"/v1/epochs/{epoch_id}/bundle",
            f"/v1/epochs/{epoch_id}/openings", f"/v1/epochs/{epoch_id}/openings/{tag}",
            f"/v1/epochs/{epoch_id + 1}/bundle", f"/v1/epochs/{epoch_id + 1}/openings",
            "/v1/provider", "/healthz", "/openapi.json", "/docs", "/metrics"]


def snapshot(public, paths) -> dict[str, tuple[int, bytes]]:
    out = {}
    for path in paths:
        response = public.client.get(path)
        out[path] = (response.status_code, response.content)
    return out


def test_no_public_answer_moves_while_usage_is_ingested(world):
    _services, zk, public, operator = world
    for i in range(3):
        zk.record_usage(idempotency_key=f"warm-{i}", user_id=f"u{i}", model="gpt-4o",
                        input_tokens=5, output_tokens=1)
    first = zk.close_epoch().epoch_id  # epoch 1 published; nothing is open now
    paths = public_paths(zk, first)
    before = snapshot(public, paths)
    assert before["/metrics"][0] == 404
    metrics_before = operator.client.get("/metrics").text
    for i in range(25):  # ingest, polling every public endpoint after each request
        zk.record_usage(idempotency_key=f"req-{i}", user_id=f"user-{i % 4}", model="gpt-4o",
                        input_tokens=10 + i, output_tokens=i)
        if i == 12:
            stream = [usage_request(
                idempotency_key=f"s-{j}", user_id="streamer", model="gpt-4o", input_tokens=1,
                output_tokens=1) for j in range(5)]
            list(zk.record_usage_stream(stream))
        if i in (3, 7):
            with pytest.raises(grpc.RpcError):  # refused requests move nothing either
                zk.record_usage(idempotency_key="", user_id="x", model="gpt-4o",
                                input_tokens=1, output_tokens=1)
        assert snapshot(public, paths) == before, f"a public answer moved after request {i}"
    # the operator's listener does see the traffic
    assert operator.client.get("/metrics").text != metrics_before
    # control: the next publication does change the public side
    zk.close_epoch()
    assert snapshot(public, paths) != before
