"""The read side of per-account epochs (issue 14), over real sockets: HTTP lists an epoch's
billing accounts and serves each account's bundle, sealed payer statement and sealed
openings; the single-bundle routes refuse an epoch of two accounts with a clear status; gRPC
does the same (GetBundle with an account id, ListAccountBundles, GetStatement)."""

import grpc
import pytest
from nacl.public import PrivateKey

from prover.api.grpc_server import hash_api_key, new_api_key
from prover.api.http import create_http_app
from prover.metering import UsageRequest
from tests.api.grpc_harness import ServerThread
from tests.api.test_http import HttpServer, build_services
from verifier.account import ETH
from verifier.bundle import parse_bundle, verify_bundle
from verifier.statement import unseal_statement
from zkmeter.client import Client

PAYERS = {bytes.fromhex("a1" * 20): ["ann", "ben"], bytes.fromhex("b2" * 20): ["cat"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    services = build_services(f"sqlite:///{tmp_path_factory.mktemp('acct') / 'zk.sqlite'}")
    payer_keys, accounts = {}, {}
    for payer, users in PAYERS.items():
        payer_keys[payer] = PrivateKey.generate()
        account = services.accounts.register_account(
            payer=payer, asset=ETH, payer_x25519_public_key=bytes(payer_keys[payer].public_key))
        accounts[payer] = account.account_id
        for user in users:
            services.accounts.register_user(user, account.account_id)
    for i, user in enumerate(["ann", "ben", "cat", "ann"]):
        services.meter.record(UsageRequest(idempotency_key=f"q-{i}", user_id=user,
                                           model="gpt-4o", input_tokens=10 + i,
                                           output_tokens=i))
    published = services.epochs.close()
    api_key = new_api_key()
    grpc_server = ServerThread(services, api_key_hashes={hash_api_key(api_key): "gateway"})
    http = HttpServer(create_http_app(services))
    yield services, published, accounts, payer_keys, http, grpc_server, api_key
    http.stop()
    grpc_server.stop()
    services.close()


def test_http_lists_accounts_and_serves_each_bundle_and_statement(world):
    _, published, accounts, payer_keys, http, _, _ = world
    epoch_id = published.epoch_id
    listed = http.client.get(f"/v1/epochs/{epoch_id}/accounts")
    assert listed.status_code == 200
    rows = listed.json()
    assert [r["account_id"] for r in rows] == sorted("0x" + a.hex() for a in accounts.values())
    for payer, account_id in accounts.items():
        part = published.accounts[account_id]
        row = next(r for r in rows if r["account_id"] == "0x" + account_id.hex())
        assert (row["leaves"], row["total_units"], row["merkle_root"]) == (
            len(part.bundle.leaves), part.bundle.total, "0x" + part.bundle.merkle_root.hex())
        raw = http.client.get(row["bundle"])
        assert raw.status_code == 200 and raw.content == part.bundle.dumps().encode()
        bundle = parse_bundle(raw.content)
        assert all(c.ok for c in verify_bundle(bundle)) and bundle.account_id == account_id
        box = http.client.get(row["statement"])
        assert box.status_code == 200
        assert box.headers["content-type"] == "application/octet-stream"
        statement = unseal_statement(box.content, bytes(payer_keys[payer]))
        assert statement.account_id == account_id and statement.total == bundle.total
        openings = http.client.get(f"/v1/epochs/{epoch_id}/accounts/0x{account_id.hex()}"
                                   "/openings").json()
        assert sorted(openings) == sorted("0x" + leaf.tag.hex() for leaf in bundle.leaves)
    # the epoch-wide list still holds every leaf of every account
    assert len(http.client.get(f"/v1/epochs/{epoch_id}/openings").json()) == published.leaves


def test_http_single_bundle_route_and_bad_account_ids(world):
    _, published, _, _, http, _, _ = world
    epoch_id = published.epoch_id
    ambiguous = http.client.get(f"/v1/epochs/{epoch_id}/bundle")
    assert ambiguous.status_code == 409
    assert f"/v1/epochs/{epoch_id}/accounts" in ambiguous.json()["detail"]
    unknown = "0x" + "77" * 32
    for path in ("bundle", "statement", "openings"):
        missing = http.client.get(f"/v1/epochs/{epoch_id}/accounts/{unknown}/{path}")
        assert missing.status_code == 404, path
        bad = http.client.get(f"/v1/epochs/{epoch_id}/accounts/0x1234/{path}")
        assert bad.status_code == 422, path
    assert http.client.get("/v1/epochs/99/accounts").status_code == 404


def test_grpc_account_bundles_and_statements(world):
    _, published, accounts, payer_keys, _, server, api_key = world
    epoch_id = published.epoch_id
    with Client(server.target, api_key=api_key) as zk:
        listed = zk.account_bundles(epoch_id)
        assert [a.account_id for a in listed] == sorted(accounts.values())
        for payer, account_id in accounts.items():
            part = published.accounts[account_id]
            assert zk.bundle(epoch_id, account_id) == part.bundle.dumps()
            statement = unseal_statement(zk.statement(epoch_id, account_id),
                                         bytes(payer_keys[payer]))
            assert statement.total == part.bundle.total
        with pytest.raises(grpc.RpcError) as err:
            zk.bundle(epoch_id)  # two accounts: name one
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "billed 2 accounts" in err.value.details()
        for call in (lambda: zk.bundle(epoch_id, b"\x01" * 5),
                     lambda: zk.statement(epoch_id, b"\x01" * 31)):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            zk.statement(epoch_id, b"\x77" * 32)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
