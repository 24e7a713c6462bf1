"""The public HTTP API over a real uvicorn server on a loopback port (httpx), after closing a
real epoch: every endpoint, the bundle verifies, sealed openings open with the user's key,
every 404 and 422, metrics parse, health (also with the database down), and schemathesis
against the served OpenAPI document."""

import contextlib
import dataclasses
import socket
import threading
import time

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from nacl.public import PrivateKey
from prometheus_client.parser import text_string_to_metric_families
from schemathesis import GenerationMode

from prover.accounts.registry import AccountRegistry
from prover.api.http import create_http_app, create_metrics_app
from prover.api.http_server import uvicorn_config
from prover.api.metrics import observe_ingest
from prover.app import Services
from prover.config import Settings
from prover.epoch.executor import InlineExecutor
from prover.epoch.service import EpochParams, EpochService
from prover.epoch.storage import EpochStore
from prover.ledger.store import make_engine
from prover.metering import Meter, UsageRequest
from tests.postgres import temporary_database
from verifier.audit import check_openings
from verifier.bundle import parse_bundle, verify_bundle
from verifier.opening import OpeningError, check_opening, unseal

SEED = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
MODEL = "gpt-4o"
USERS = [f"user-{i}" for i in range(5)]


# --- harness -------------------------------------------------------------------------------

class HttpServer:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a background thread, configured as
    ``zkmeter serve`` configures it (prover/api/http_server.py)."""

    def __init__(self, app, **timeouts) -> None:
        config = uvicorn_config(app, host="127.0.0.1", port=0, **timeouts)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


@dataclasses.dataclass
class World:
    """A provider with one published epoch (1), one closing (2) and one open (3)."""

    services: Services
    keys: dict[str, PrivateKey]
    tags: dict[str, bytes]
    server: HttpServer

    @property
    def http(self) -> httpx.Client:
        return self.server.client


def build_services(url: str) -> Services:
    config = Settings(database_url=url, signing_key=SEED, contract_address="0x" + "42" * 20,
                      min_leaves=8)
    meter = Meter.from_settings(config)
    store = EpochStore(meter.ledger.engine)
    params = EpochParams(chain_id=config.chain_id, contract=config.contract_bytes(),
                         bit_size=config.bit_size, min_leaves=config.min_leaves,
                         rate_card_hash=meter.rate_card_hash, epoch_seconds=3600,
                         operator=config.operator_bytes())
    epochs = EpochService(ledger=meter.ledger, store=store,
                          signing_key=config.load_signing_key(), params=params,
                          executor_factory=InlineExecutor)
    accounts = AccountRegistry(meter.ledger.engine, operator=config.operator_bytes(),
                               provider_key=meter.provider_id)
    return Services(settings=config, meter=meter, epochs=epochs, store=store,
                    accounts=accounts)


def make_world(url: str) -> World:
    services = build_services(url)
    keys = {user: PrivateKey.generate() for user in USERS[:4]}  # the last user has no key
    account = services.accounts.register_account(payer=bytes.fromhex("a1" * 20),
                                                 asset=bytes(20),
                                                 payer_x25519_public_key=bytes(32 * [9]))
    for user in USERS:
        key = keys.get(user)
        services.accounts.register_user(user, account.account_id,
                                        None if key is None else bytes(key.public_key))
    for i in range(15):
        services.meter.record(UsageRequest(
            idempotency_key=f"req-{i}", user_id=USERS[i % len(USERS)], model=MODEL,
            input_tokens=100 + i, output_tokens=20 + i, cached_input_tokens=i % 3))
    closed = services.epochs.close()  # epoch 1: published and closed
    services.meter.record(UsageRequest(idempotency_key="late", user_id=USERS[0], model=MODEL,
                                       input_tokens=5, output_tokens=5))
    ledger = services.meter.ledger
    params = services.epochs.params
    ledger.close_epoch(2, next_rate_card_hash=params.rate_card_hash,
                       next_bit_size=params.bit_size, epoch_seconds=params.epoch_seconds)
    services.store.start_close(2, 8)  # epoch 2: closing, no leaf proved yet; epoch 3: open
    tags = {user: opening.tag for user, opening in closed.openings.items()}
    return World(services, keys, tags, HttpServer(create_http_app(services)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = make_world(f"sqlite:///{tmp_path_factory.mktemp('http') / 'zk.sqlite'}")
    yield world
    world.server.stop()
    world.services.close()


@pytest.fixture()
def pg_url():
    with temporary_database("zkmeter_http") as url:
        yield url


# --- happy paths ---------------------------------------------------------------------------

def check_published_epoch(world: World) -> None:
    """Epoch 1 over HTTP: listed, bundle verifies, every user's opening opens."""
    http, services = world.http, world.services
    raw = http.get("/v1/epochs/1/bundle")
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/json"
    assert raw.content == services.store.bundle_json(1)
    bundle = parse_bundle(raw.content)
    provider_key = bytes(services.meter.provider_id)
    assert all(c.ok for c in verify_bundle(bundle, provider_key=provider_key))

    epoch = http.get("/v1/epochs/1").json()
    assert epoch["state"] == "closed" and epoch["published"] is True
    assert epoch["merkle_root"] == "0x" + bundle.merkle_root.hex()
    assert epoch["total_units"] == bundle.total == sum(services.meter.ledger.totals(1).values())
    assert (epoch["leaves_done"], epoch["leaves_total"]) == (8, 8)
    assert (epoch["window_start_ms"], epoch["window_end_ms"]) == (bundle.window_start,
                                                                  bundle.window_end)

    openings = http.get("/v1/epochs/1/openings").json()
    assert check_openings(bundle, openings).ok
    for user, key in world.keys.items():
        tag = world.tags[user]
        one = http.get(f"/v1/epochs/1/openings/0x{tag.hex()}")
        assert one.status_code == 200
        body = one.json()
        assert body == {"epoch_id": 1, "tag": "0x" + tag.hex(),
                        "sealed": openings["0x" + tag.hex()]}
        octets = http.get(f"/v1/epochs/1/openings/{tag.hex().upper()}",
                          headers={"accept": "application/octet-stream"})
        assert octets.headers["content-type"] == "application/octet-stream"
        assert octets.content == bytes.fromhex(body["sealed"][2:])
        opening = unseal(octets.content, bytes(key))
        assert all(ok for _, ok, _ in check_opening(opening, bundle))
        assert opening.value == services.meter.ledger.receipts(1, user)[-1].total_units
        # Without knowing the tag: exactly one box of the whole list opens with the key.
        mine = []
        for box in openings.values():
            with contextlib.suppress(OpeningError):
                mine.append(unseal(bytes.fromhex(box[2:]), bytes(key)))
        assert mine == [opening]


def test_published_epoch(world):
    check_published_epoch(world)


def test_list_and_paginate(world):
    page = world.http.get("/v1/epochs").json()
    # the open epoch 3 is not public: its existence would tell when traffic began
    assert [(e["epoch_id"], e["state"], e["published"]) for e in page["epochs"]] == [
        (2, "closing", False), (1, "closed", True)]
    assert page["next_before"] is None
    closing = page["epochs"][0]
    assert (closing["leaves_done"], closing["leaves_total"]) == (0, 8)
    assert closing["merkle_root"] is None and closing["total_units"] is None
    assert closing["window_end_ms"] is not None
    first = world.http.get("/v1/epochs", params={"limit": 1}).json()
    assert [e["epoch_id"] for e in first["epochs"]] == [2] and first["next_before"] == 2
    rest = world.http.get("/v1/epochs", params={"limit": 1, "before": 2}).json()
    assert [e["epoch_id"] for e in rest["epochs"]] == [1] and rest["next_before"] is None
    assert world.http.get("/v1/epochs", params={"before": 1}).json() == {
        "epochs": [], "next_before": None}
    assert world.http.get("/v1/epochs/2").json() == page["epochs"][0]
    assert world.http.get("/v1/epochs/3").status_code == 404


def test_provider(world):
    body = world.http.get("/v1/provider").json()
    meter = world.services.meter
    assert body["provider_id"] == "0x" + meter.provider_id.hex()
    assert (body["chain_id"], body["contract_address"], body["bit_size"]) == (
        31337, "0x" + "42" * 20, 32)
    card = body["rate_card"]
    assert card["hash"] == "0x" + meter.rate_card_hash.hex()
    assert card["version"] == meter.rate_card.version
    assert card["models"][MODEL] == dataclasses.asdict(meter.rate_card.models[MODEL])
    assert set(card["models"]) == set(meter.rate_card.models)


def test_health_metrics_openapi(world):
    health = world.http.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok", "database": "ok"})
    assert world.http.get("/metrics").status_code == 404  # never on the public listener
    observe_ingest("RecordUsage", "recorded", 0.003)
    observe_ingest("RecordUsageStream", "refused", 0.001, count=2)
    operator = HttpServer(create_metrics_app(world.services))
    try:
        response = operator.client.get("/metrics")
    finally:
        operator.stop()
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {"zkmeter_ingest_events", "zkmeter_ingest_latency_seconds", "zkmeter_epoch_state",
            "zkmeter_epoch_close_progress", "zkmeter_database_up"} <= set(families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("zkmeter_ingest_events_total", (("outcome", "refused"),))] >= 2
    assert samples[("zkmeter_ingest_latency_seconds_count", (("rpc", "RecordUsage"),))] >= 1
    for state in ("open", "closing", "closed"):
        assert samples[("zkmeter_epoch_state", (("state", state),))] == 1
    assert samples[("zkmeter_epoch_close_progress", (("epoch", "2"),))] == 0
    assert samples[("zkmeter_database_up", ())] == 1
    with pytest.raises(ValueError):
        observe_ingest("RecordUsage", "bogus", 0.1)
    schema = world.http.get("/openapi.json").json()
    assert {"/v1/epochs", "/v1/epochs/{epoch_id}", "/v1/epochs/{epoch_id}/bundle",
            "/v1/epochs/{epoch_id}/openings", "/v1/epochs/{epoch_id}/openings/{tag}",
            "/v1/provider", "/healthz"} <= set(schema["paths"])
    assert "/metrics" not in schema["paths"]
    assert world.http.get("/docs").status_code == 200


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/v1/epochs/99", "/v1/epochs/0", "/v1/epochs/99/bundle", "/v1/epochs/99/openings",
    "/v1/epochs/99/openings/" + "ab" * 32,
    # not published: closing (2) and open (3)
    "/v1/epochs/2/bundle", "/v1/epochs/3/bundle", "/v1/epochs/2/openings",
    "/v1/epochs/3/openings", "/v1/epochs/2/openings/" + "ab" * 32,
    # published, but no such tag
    "/v1/epochs/1/openings/0x" + "ab" * 32,
    "/nowhere",
    # a trailing slash is another (unknown) path, not a redirect
    "/v1/epochs/", "/v1/epochs/1/", "/v1/provider/",
])
def test_not_found(world, path):
    response = world.http.get(path)
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["detail"], str)


def test_not_found_says_why(world):
    assert "no closed epoch" in world.http.get("/v1/epochs/99/bundle").json()["detail"]
    assert "no closed epoch" in world.http.get("/v1/epochs/3/bundle").json()["detail"]
    assert "not published" in world.http.get("/v1/epochs/2/bundle").json()["detail"]
    assert "no sealed opening" in world.http.get(
        "/v1/epochs/1/openings/" + "00" * 32).json()["detail"]


@pytest.mark.parametrize("path", [
    "/v1/epochs/abc", "/v1/epochs/1.5", "/v1/epochs/-1", "/v1/epochs/" + str(1 << 63),
    "/v1/epochs/" + "9" * 400, "/v1/epochs/1e3/bundle", "/v1/epochs/x/openings",
    "/v1/epochs/1/openings/" + "ab" * 31, "/v1/epochs/1/openings/" + "ab" * 33,
    "/v1/epochs/1/openings/0x" + "ab" * 31 + "a", "/v1/epochs/1/openings/" + "zz" * 32,
    "/v1/epochs/1/openings/0X" + "ab" * 32, "/v1/epochs/1/openings/0x0x" + "ab" * 31,
    "/v1/epochs/1/openings/%20" + "ab" * 32, "/v1/epochs/1/openings/" + "ab" * 32 + "%0a",
    "/v1/epochs?limit=0", "/v1/epochs?limit=501", "/v1/epochs?limit=x",
    "/v1/epochs?before=abc", "/v1/epochs?before=0",
    # integers are ASCII digits only: no decimals, spaces, newlines, underscores or signs
    "/v1/epochs/1.0", "/v1/epochs/%201", "/v1/epochs/1%20", "/v1/epochs/%0A1",
    "/v1/epochs/1%0A", "/v1/epochs/1_0", "/v1/epochs/+1", "/v1/epochs/%D9%A1",
    "/v1/epochs/1.0/bundle", "/v1/epochs/1_0/openings",
    "/v1/epochs/%201/openings/" + "ab" * 32,
    "/v1/epochs?limit=1_0", "/v1/epochs?limit=%202", "/v1/epochs?limit=2.0",
])
def test_bad_input_is_422(world, path):
    response = world.http.get(path)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail and {"loc", "msg", "type"} <= set(detail[0])


def test_wrong_method_is_405_json(world):
    response = world.http.post("/v1/epochs/1/bundle", content=b"secret-body")
    assert response.status_code == 405 and "GET" in response.headers["allow"]
    assert response.json() == {"detail": "Method Not Allowed"}


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/v1/epochs", "/v1/epochs/1",
                                  "/v1/epochs/1/bundle", "/healthz"])
@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "DELETE", "PATCH"])
def test_only_get(world, path, method):
    """Every path answers only GET: the framework's own routes (/openapi.json, /docs) too."""
    response = world.http.request(method, path)
    assert response.status_code == 405, (method, path)
    assert response.headers["allow"] == "GET"
    if method != "HEAD":
        assert response.json() == {"detail": "Method Not Allowed"}
    assert world.http.get(path).status_code == 200


# --- malformed HTTP and slow clients (prover/api/http_server.py) ---------------------------

def _raw(port: int, data: bytes, *, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``data`` on a fresh connection; (everything read until the server closes,
    seconds until it did)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if data:
            sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - started


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n", b"GET /v1/epochs x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/epochs HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET /v1/epochs HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
])
def test_malformed_http_is_plain_400(world, request_bytes):
    """uvicorn answers malformed HTTP before the application runs: a text/plain 400 (the
    one non-JSON error, docs/api.md), then it closes the connection."""
    answer, _ = _raw(world.server.port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert b"content-type: text/plain; charset=utf-8" in head.lower()
    assert body == b"Invalid HTTP request received."


@pytest.fixture(scope="module")
def strict_server(world):
    server = HttpServer(create_http_app(world.services), header_timeout=0.5, keep_alive=1)
    yield server
    server.stop()


def test_silent_client_is_dropped(strict_server):
    answer, took = _raw(strict_server.port, b"")
    assert answer == b"" and 0.4 < took < 3.0


def test_slow_headers_are_dropped(strict_server):
    """A client that trickles its request head (slowloris) is cut off at the header timeout,
    however often it sends a byte."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        with contextlib.suppress(OSError):
            for _ in range(40):
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.1)
        closed = sock.recv(65536) == b""
    took = time.monotonic() - started
    assert closed and took < 3.0


def test_idle_keep_alive_is_closed(strict_server):
    """After a response the client has the header timeout (here 0.5 s, shorter than the
    keep-alive timeout) to start its next request, and a fast client keeps its connection."""
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=10) as sock:
        for _ in range(3):  # requests in a row on one connection, each well within the bound
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ")
            time.sleep(0.1)
        started = time.monotonic()
        assert sock.recv(65536) == b""
        assert time.monotonic() - started < 3.0


def test_keep_alive_timeout(world):
    """With the keep-alive timeout the shorter (1 s, header timeout 5 s: as with the
    defaults, 5 s and 10 s), an idle connection closes at the keep-alive timeout."""
    server = HttpServer(create_http_app(world.services), header_timeout=5.0, keep_alive=1)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ")
            started = time.monotonic()
            assert sock.recv(65536) == b""
            took = time.monotonic() - started
    finally:
        server.stop()
    assert 0.8 < took < 3.0, took


def test_database_down(world):
    down = EpochStore(make_engine("postgresql+psycopg://nobody@127.0.0.1:9/none"))
    server = HttpServer(create_http_app(dataclasses.replace(world.services, store=down)))
    try:
        health = server.client.get("/healthz")
        assert (health.status_code, health.json()) == (
            503, {"status": "unavailable", "database": "unreachable"})
        for path in ("/v1/epochs", "/v1/epochs/1", "/v1/epochs/1/bundle",
                     "/v1/epochs/1/openings/" + "ab" * 32):
            response = server.client.get(path)
            assert response.status_code == 503
            assert response.json() == {"detail": "the database is unavailable"}
        operator = HttpServer(create_metrics_app(dataclasses.replace(world.services,
                                                                     store=down)))
        try:
            metrics = operator.client.get("/metrics")
        finally:
            operator.stop()
        assert metrics.status_code == 200
        assert "zkmeter_database_up 0.0" in metrics.text
        assert "zkmeter_ingest_events_total" in metrics.text
    finally:
        server.stop()
        down.engine.dispose()


# --- PostgreSQL ----------------------------------------------------------------------------

@pytest.mark.postgres
def test_published_epoch_on_postgresql(pg_url):
    world = make_world(pg_url)
    try:
        check_published_epoch(world)
        page = world.http.get("/v1/epochs").json()
        assert [e["state"] for e in page["epochs"]] == ["closing", "closed"]
        assert world.http.get("/healthz").status_code == 200
        assert world.http.get("/v1/epochs/2/openings").status_code == 404
    finally:
        world.server.stop()
        world.services.close()


# --- schemathesis --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["positive", "negative"])
def test_openapi_conformance(world, mode):
    """Generated requests against the served schema, over the real server: no 5xx, every
    response conforms to the schema (status, content type, body), bad input is refused."""
    api = schemathesis.openapi.from_asgi("/openapi.json", world.server.server.config.app)

    @given(case=api.as_strategy(mode))
    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(base_url=world.server.url)

    run()
