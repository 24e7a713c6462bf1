"""Bundles the prover closes per billing account settle on-chain under that account (issue
14), on py-evm and anvil: two accounts of one epoch are submitted and paid independently,
each exactly its users' units (on anvil, each payer's `zkmeter-verify payer` passes against
the node, the on-chain record included); every honest leaf survives a range-proof challenge;
and a
database that restarts its epoch ids (restored from a backup) cannot close a context the chain
already holds (issue 12)."""

import contextlib
import json
from collections import defaultdict

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from typer.testing import CliRunner

from prover.app import build_services
from prover.chain import SettlementError
from prover.config import Settings
from prover.epoch.executor import InlineExecutor
from prover.epoch.service import EpochParams, EpochService
from prover.epoch.storage import EpochStore
from prover.errors import EpochStateError
from prover.ledger import Ledger
from prover.metering import Meter, UsageRequest
from prover.ratecard import load_rate_card
from tests.accounts import enroll
from tests.postgres import temporary_database
from verifier.account import ETH
from verifier.cli import app as verify_app

BOND = 10**18
UNIT_PRICE = 10**6
KEY = SigningKey(bytes(range(7, 39)))
PAYER_KEYS: dict[str, PrivateKey] = defaultdict(PrivateKey.generate)  # payer address -> key
USERS = {1: ["alice", "bob"], 2: ["carol"]}  # payer account index -> its users


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """Fresh ledger URLs, on SQLite or on the PostgreSQL server."""
    with contextlib.ExitStack() as stack:
        def fresh(name: str) -> str:
            if request.param == "sqlite":
                return f"sqlite:///{tmp_path / name}"
            return stack.enter_context(temporary_database("zkmeter_onchain"))
        yield fresh


def provider(client, url: str):
    """A meter and epoch service of the registered provider on a fresh ledger, with two
    payers' accounts opened, funded and enrolled (alice, bob / carol)."""
    operator = bytes.fromhex(client.account[2:])
    ledger = Ledger.from_url(url, provider_id=bytes(KEY.verify_key))
    payers = {client.w3.eth.accounts[i]: users for i, users in USERS.items()}
    accounts = {}
    for payer, users in payers.items():
        accounts[payer] = enroll(ledger.engine, ledger.provider_id, users, operator=operator,
                                 payer=bytes.fromhex(payer[2:]), asset=ETH,
                                 payer_key=bytes(PAYER_KEYS[payer].public_key))
    meter = Meter(ledger=ledger, signing_key=KEY, rate_card=load_rate_card(Settings().rate_card))
    params = EpochParams(chain_id=client.chain_id,
                         contract=bytes.fromhex(client.settlement.address[2:]), bit_size=32,
                         min_leaves=4, rate_card_hash=meter.rate_card_hash, epoch_seconds=3600,
                         operator=operator)
    service = EpochService(
        ledger=ledger, store=EpochStore(ledger.engine), signing_key=KEY, params=params,
        executor_factory=InlineExecutor,
        onchain_last_epoch=lambda aid: client.billing_account(aid).last_epoch_id)
    return meter, service, accounts


def record(meter, prefix: str) -> None:
    for i, user in enumerate(["alice", "bob", "carol", "alice"]):
        meter.record(UsageRequest(idempotency_key=f"{prefix}-{i}", user_id=user, model="gpt-4o",
                                  input_tokens=100 + i, output_tokens=20 * i))


@pytest.fixture()
def registered(client):
    client.register_provider(bytes(KEY.verify_key), bond=BOND, unit_price=UNIT_PRICE,
                             challenge_window=3_600)
    provider_id = client.provider_id_for(bytes(KEY.verify_key))
    for payer in client.w3.eth.accounts[1:3]:
        client.open_account(provider_id, sender=payer)
        client.deposit(client.account_id_for(provider_id, payer=payer), 10**17, sender=payer)
    return client, provider_id


def test_two_accounts_settle_independently_and_honest_leaves_survive(registered, database,
                                                                    tmp_path):
    client, provider_id = registered
    meter, service, accounts = provider(client, database("ledger.sqlite"))
    record(meter, "r")
    published = service.close()
    assert sorted(published.accounts) == sorted(accounts.values())
    challenger = client.w3.eth.accounts[4]
    for payer, account_id in accounts.items():
        bundle = published.accounts[account_id].bundle
        assert bundle.account_id == account_id
        assert client.account_id_for(provider_id, payer=payer) == account_id
        client.submit_bundle(bundle)
        record_ = client.epoch(account_id, bundle.epoch_id)
        assert (record_.total, record_.merkle_root) == (bundle.total, bundle.merkle_root)
        assert client.billing_account(account_id).reserved == bundle.total * UNIT_PRICE
        for index in range(len(bundle.leaves)):  # users' and padding leaves alike
            with pytest.raises(SettlementError, match=r"^RangeProofValid\("):
                client.challenge_bundle_leaf(bundle, index, sender=challenger)
        if getattr(client.w3.provider, "endpoint_uri", None):  # a node the CLI can reach
            payer_checks(client, bundle, service, payer, tmp_path)
    client.advance_time(3_601)
    for account_id in accounts.values():
        client.finalize(account_id, published.epoch_id)
    paid = {a: published.accounts[a].bundle.total * UNIT_PRICE for a in accounts.values()}
    assert client.earnings(provider_id) == sum(paid.values())
    for account_id, amount in paid.items():
        assert client.billing_account(account_id).escrow == 10**17 - amount
    assert client.provider(provider_id).bond == BOND
    meter.ledger.dispose()


def payer_checks(client, bundle, service, payer: str, tmp_path) -> None:
    """The payer's own check, from the verifier's CLI, against the node it reads: every named
    check passes, the on-chain record included."""
    folder = tmp_path / payer
    folder.mkdir()
    (folder / "bundle.json").write_text(bundle.dumps())
    (folder / "statement.bin").write_bytes(service.store.statement(bundle.epoch_id,
                                                                   bundle.account_id))
    (folder / "payer.key").write_bytes(bytes(PAYER_KEYS[payer]))
    index = client.w3.eth.accounts.index(payer)
    (folder / "users.txt").write_text("\n".join(USERS[index]) + "\n")
    result = CliRunner().invoke(verify_app, [
        "payer", "--bundle", str(folder / "bundle.json"),
        "--statement", str(folder / "statement.bin"), "--secret-key", str(folder / "payer.key"),
        "--users", str(folder / "users.txt"), "--rpc-url", client.w3.provider.endpoint_uri,
        "--contract", client.settlement.address, "--json"])
    out = json.loads(result.output)
    assert result.exit_code == 0, out
    status = {c["name"]: c["status"] for c in out["checks"]}
    assert status["chain"] == "ok" and status["users_known"] == "ok", status
    assert status["leaves_open"] == status["padding_zero"] == status["total"] == "ok", status


def test_a_restored_database_cannot_close_a_context_the_chain_holds(registered, database):
    client, _ = registered
    meter, service, _ = provider(client, database("ledger.sqlite"))
    record(meter, "r")
    first = service.close()
    for part in first.accounts.values():
        client.submit_bundle(part.bundle)
    # the operator restores an older backup (here: an empty database) and meters again
    meter2, restored, _ = provider(client, database("restored.sqlite"))
    record(meter2, "other")
    epoch_id = meter2.ledger.current_epoch().id
    assert epoch_id == first.epoch_id  # the restored database restarted its epoch ids
    with pytest.raises(EpochStateError, match=f"already has epoch {first.epoch_id} on-chain"):
        restored.close()
    assert restored.store.status(epoch_id) is None  # the close never started: nothing stored
    assert restored.store.account_bundles(epoch_id) == []
    meter.ledger.dispose()
    meter2.ledger.dispose()


def test_settings_with_an_rpc_url_wire_the_check_into_epoch_close(registered, tmp_path):
    """`zkmeter serve` / `epoch close` settings (ZKMETER_RPC_URL) give the epoch service the
    chain reader: the restored database's close is refused through build_services too."""
    client, _ = registered
    url = getattr(client.w3.provider, "endpoint_uri", None)
    if not url:
        pytest.skip("needs a JSON-RPC node (the anvil case)")
    meter, service, _ = provider(client, f"sqlite:///{tmp_path / 'first.sqlite'}")
    record(meter, "r")
    for part in service.close().accounts.values():
        client.submit_bundle(part.bundle)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'restored.sqlite'}",
                        signing_key=bytes(KEY).hex(), chain_id=client.chain_id,
                        contract_address=client.settlement.address,
                        operator_address=client.account, rpc_url=url, min_leaves=4)
    services = build_services(settings)
    try:
        for i, users in USERS.items():
            payer = client.w3.eth.accounts[i]
            enroll(services.meter.ledger.engine, services.meter.provider_id, users,
                   operator=bytes.fromhex(client.account[2:]), payer=bytes.fromhex(payer[2:]),
                   asset=ETH, payer_key=bytes(PAYER_KEYS[payer].public_key))
        record(services.meter, "again")
        with pytest.raises(EpochStateError, match="already has epoch 1 on-chain"):
            services.epochs.close()
    finally:
        services.close()
    meter.ledger.dispose()
