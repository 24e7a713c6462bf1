"""A real epoch bundle (prover.epoch.close) through the `zkmeter chain` commands on anvil,
and the read side: deployed code and bundle-vs-chain checks."""

import json

import pytest
from nacl.signing import SigningKey
from typer.testing import CliRunner

from prover.chain import ChainClient
from prover.cli_chain import app
from tests.contracts.helpers import account_bundle
from verifier.bundle import parse_bundle
from verifier.chain import (
    EpochStatus,
    check_bundle_against_chain,
    check_deployment,
    code_matches,
    read_epoch,
)

runner = CliRunner()
SIGNING_KEY = SigningKey(b"zkmeter chain test provider key!")
PUBLIC_KEY = bytes(SIGNING_KEY.verify_key)


def _bundle(client: ChainClient, settlement: str, epoch_id: int, totals: dict[str, int],
            account_id: bytes):
    """A signed bundle of ``totals`` bound to ``account_id`` on ``settlement``."""
    bound = ChainClient(client.w3, settlement=settlement)
    return account_bundle(bound, account_id, epoch_id, list(totals.values()), SIGNING_KEY)


def _cli(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["_exit"] = result.exit_code
    return out


def test_operator_commands_on_anvil(anvil_url, tmp_path):
    deployed = _cli("deploy", "--rpc-url", anvil_url)
    assert deployed["_exit"] == 0 and deployed["chain_id"] == 31337
    settlement = deployed["settlement"]
    common = ["--rpc-url", anvil_url, "--settlement", settlement]
    reg = _cli("register", *common, "--signing-key", "0x" + PUBLIC_KEY.hex(), "--bond",
               str(10**18), "--unit-price", "1000", "--window", "3600")
    assert reg["_exit"] == 0
    client = ChainClient.connect(anvil_url, settlement=settlement)
    pid = bytes.fromhex(reg["provider_id"][2:])
    assert pid == client.provider_id_for(PUBLIC_KEY)
    client.open_account(pid)
    aid = client.account_id_for(pid)
    client.deposit(aid, 10**18)
    totals = {"alice": 1_200, "bob": 34_000, "carol": 0, "padding": 0}
    bundle = _bundle(client, settlement, 9, totals, aid)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle.to_json()))

    sub = _cli("submit", *common, "--bundle", str(path))
    assert sub["_exit"] == 0, sub
    assert sub["epoch"]["status"] == "pending" and sub["epoch"]["total"] == 35_200
    assert sub["epoch"]["leaf_count"] == 4
    again = _cli("submit", *common, "--bundle", str(path))
    assert again["_exit"] == 1 and again["contract_error"] == "EpochIdNotIncreasing"

    aid_hex = "0x" + aid.hex()
    early = _cli("finalize", *common, "--account-id", aid_hex, "--epoch", "9")
    assert early["_exit"] == 1 and early["contract_error"] == "EpochNotFinalizable"
    client.advance_time(3601)
    done = _cli("finalize", *common, "--account-id", aid_hex, "--epoch", "9")
    assert done["_exit"] == 0 and done["epoch"]["status"] == "finalized"

    status = _cli("status", *common, "--provider-id", reg["provider_id"], "--account-id",
                  aid_hex, "--epoch", "9")
    assert client.earnings(pid) == 35_200 * 1000
    assert status["account"]["last_epoch_id"] == 9
    assert status["account"]["escrow"] == 10**18 - 35_200 * 1000
    assert status["provider"]["signing_key"] == "0x" + PUBLIC_KEY.hex()
    assert status["epoch"]["merkle_root"] == "0x" + bundle.merkle_root.hex()

    # the read side agrees with the bundle
    record = read_epoch(client.w3, settlement, aid, 9)
    checks = check_bundle_against_chain(parse_bundle(path.read_bytes()), record)
    assert all(c.ok for c in checks), checks
    assert check_deployment(client.w3, settlement).ok


def test_cli_bad_input():
    out = _cli("status", "--settlement", "0x" + "11" * 20, "--provider-id", "0x1234")
    assert out["_exit"] == 2


def test_bundle_for_another_contract_is_refused(tester_client):
    bundle = _bundle(tester_client, "0x" + "22" * 20, 1, {"a": 1}, bytes(32))
    with pytest.raises(Exception, match="another settlement contract"):
        tester_client.submit_bundle(bundle)


def test_code_checks(tester_client):
    client = tester_client
    assert code_matches(client.w3, client.settlement.address, "ZkMeterSettlement")
    verifier = client.settlement.functions.verifier().call()
    assert code_matches(client.w3, verifier, "BulletproofVerifier")
    assert not code_matches(client.w3, verifier, "ZkMeterSettlement")
    assert not check_deployment(client.w3, verifier).ok


def test_bundle_mismatch_is_reported(tester_client):
    client = tester_client
    client.register_provider(PUBLIC_KEY, bond=10**18, unit_price=1, challenge_window=3600)
    pid = client.provider_id_for(PUBLIC_KEY)
    client.open_account(pid)
    aid = client.account_id_for(pid)
    client.deposit(aid, 10**6)
    bundle = _bundle(client, client.settlement.address, 3, {"a": 5, "b": 6}, aid)
    client.submit_bundle(bundle)
    record = client.epoch(aid, 3)
    assert record.status is EpochStatus.PENDING
    assert all(c.ok for c in check_bundle_against_chain(bundle, record))
    other = _bundle(client, client.settlement.address, 3, {"a": 5, "b": 7}, aid)
    failed = {c.name for c in check_bundle_against_chain(other, record) if not c.ok}
    assert failed == {"chain_root", "chain_total"}
