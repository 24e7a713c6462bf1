"""``zkmeter-verify chain`` against a real anvil node: a bundle from the epoch pipeline,
submitted on-chain, matches; a bundle that differs from the record, or another contract,
does not; an unreachable node is bad input."""

import copy
import json

import pytest
from nacl.signing import SigningKey
from typer.testing import CliRunner

from tests.contracts.helpers import account_bundle
from verifier.cli import app

runner = CliRunner()


@pytest.fixture()
def submitted(anvil_client, tmp_path):
    key = SigningKey.generate()
    provider = bytes(key.verify_key)
    anvil_client.register_provider(provider, bond=10**18, unit_price=10**9,
                                   challenge_window=3600)
    pid = anvil_client.provider_id_for(provider)
    anvil_client.open_account(pid)
    account = anvil_client.account_id_for(pid)
    anvil_client.deposit(account, 10**18)
    bundle = account_bundle(anvil_client, account, 1, [10, 25, 7, 0], key)
    anvil_client.submit_bundle(bundle)
    path = tmp_path / "bundle.json"
    path.write_text(bundle.dumps())
    return anvil_client, path, bundle


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout


def test_chain_matches(submitted, anvil_url):
    client, path, _ = submitted
    code, out = run("chain", "--rpc", anvil_url, "--contract", client.settlement_address,
                    "--epoch", 1, "--bundle", path, "--json")
    assert code == 0, out
    data = json.loads(out)
    assert {c["name"] for c in data["checks"]} >= {"contract_code", "chain_root", "chain_total"}
    assert data["record"]["status"] == "pending"  # submitted, inside its challenge window


def test_chain_detects_a_different_total(submitted, anvil_url, tmp_path):
    client, path, _ = submitted
    data = json.loads(path.read_text())
    changed = copy.deepcopy(data)
    changed["total"]["value"] += 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps(changed))
    code, out = run("chain", "--rpc", anvil_url, "--contract", client.settlement_address,
                    "--epoch", 1, "--bundle", other, "--json")
    assert code == 1
    failed = {c["name"] for c in json.loads(out)["checks"] if not c["ok"]}
    assert failed == {"chain_total"}


def test_chain_detects_another_contract(submitted, anvil_url, anvil_client):
    _, path, _ = submitted
    other = anvil_client.__class__.connect(anvil_url)
    other.deploy()  # a second, honest deployment that never saw this epoch
    code, out = run("chain", "--rpc", anvil_url, "--contract", other.settlement_address,
                    "--epoch", 1, "--bundle", path, "--json")
    assert code == 1
    failed = {c["name"] for c in json.loads(out)["checks"] if not c["ok"]}
    assert "chain_context" in failed and "chain_record" in failed


def test_chain_unreachable_node_is_bad_input(submitted):
    client, path, _ = submitted
    code, _ = run("chain", "--rpc", "http://127.0.0.1:9", "--contract",
                  client.settlement_address, "--epoch", 1, "--bundle", path, "--json")
    assert code == 2


def test_chain_epoch_mismatch_is_bad_input(submitted, anvil_url):
    client, path, _ = submitted
    code, _ = run("chain", "--rpc", anvil_url, "--contract", client.settlement_address,
                  "--epoch", 2, "--bundle", path, "--json")
    assert code == 2
