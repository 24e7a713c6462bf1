"""Every action of the settlement contract on main has its `zkmeter chain` command, and each
command does its action on anvil: the provider's bond and operator role (set-unit-price,
add-bond, transfer-operator, accept-operator, unbond, cancel-unbond, withdraw-bond), the
payer's escrow (request-withdrawal, complete-withdrawal) and the settler's side (challenge a
valid leaf: refused as a sentence; demand, resolve when unanswered, withdraw the share).
The commands run by tests/journeys (deploy, register, open-account, deposit, submit, answer,
finalize, withdraw-earnings, withdraw, status) are covered there too."""

import json
from pathlib import Path

import typer.main
from nacl.signing import SigningKey
from typer.testing import CliRunner

from prover.chain import ChainClient
from tests.contracts.helpers import account_bundle
from verifier.cli import app as verify_app
from verifier.cli_chain import SETTLER_COMMANDS, app

ARTIFACT = Path(__file__).resolve().parents[2] / "contracts" / "artifacts" / \
    "ZkMeterSettlement.json"
# contract function -> the command that sends it (challenge and demand commit first)
COMMAND_OF = {
    "registerProvider": "register", "setUnitPrice": "set-unit-price", "addBond": "add-bond",
    "requestUnbond": "unbond", "cancelUnbond": "cancel-unbond",
    "withdrawBond": "withdraw-bond", "transferOperator": "transfer-operator",
    "acceptOperator": "accept-operator", "submitEpoch": "submit", "answerDemand": "answer",
    "withdrawEarnings": "withdraw-earnings", "openAccount": "open-account",
    "deposit": "deposit", "requestWithdrawal": "request-withdrawal",
    "completeWithdrawal": "complete-withdrawal", "commitChallenge": "challenge",
    "challengeRangeProof": "challenge", "demandData": "demand", "resolveDemand": "resolve",
    "finalize": "finalize", "withdraw": "withdraw",
}
runner = CliRunner()


def cli(*args: str, expect: int = 0) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == expect, (args, result.stdout, result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_contract_action_has_a_command():
    abi = json.loads(ARTIFACT.read_text())["abi"]
    actions = {item["name"] for item in abi if item["type"] == "function"
               and item["stateMutability"] not in ("view", "pure")}
    assert actions == set(COMMAND_OF), "a contract action without a command, or a command " \
                                       "for an action the contract no longer has"
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert set(COMMAND_OF.values()) <= commands
    settler = set(typer.main.get_command(verify_app).commands)  # type: ignore[attr-defined]
    assert {"finalize", "challenge", "demand", "resolve", "withdraw", "chain-status"} <= settler
    assert set(SETTLER_COMMANDS) <= settler


def test_every_action_command_on_anvil(anvil_url, tmp_path):
    w3_client = ChainClient.connect(anvil_url)
    operator, payer, settler, second, heir = w3_client.w3.eth.accounts[:5]
    deployed = cli("deploy", "--rpc-url", anvil_url)
    on = ["--rpc-url", anvil_url, "--contract", deployed["settlement"]]
    client = ChainClient.connect(anvil_url, settlement=deployed["settlement"])
    params = client.params()

    # provider: price and bond
    key = SigningKey(b"every action test provider key!!")
    pid = cli("register", *on, "--unit-price", "1000", "--signing-key",
              bytes(key.verify_key).hex(), "--from", operator)["provider_id"]
    cli("set-unit-price", *on, "--provider-id", pid, "--unit-price", "2000")
    assert client.provider(bytes.fromhex(pid[2:])).unit_price == 2000
    added = cli("add-bond", *on, "--provider-id", pid, "--amount", str(10**17))
    assert added["bond"] == params.min_bond + 10**17

    # payer: open, fund, withdraw part after the notice
    aid = cli("open-account", *on, "--provider-id", pid, "--from", payer)["account_id"]
    cli("deposit", *on, "--account-id", aid, "--amount", str(10**18), "--from", payer)
    asked = cli("request-withdrawal", *on, "--account-id", aid, "--amount", str(10**17),
                "--from", payer)
    assert asked["amount"] == 10**17
    early = cli("complete-withdrawal", *on, "--account-id", aid, "--from", payer, expect=1)
    assert early["contract_error"] and " UTC" in early["error"]
    client.advance_time(params.withdrawal_notice + 1)
    cli("complete-withdrawal", *on, "--account-id", aid, "--from", payer)
    account = client.billing_account(bytes.fromhex(aid[2:]))
    assert account.escrow == 9 * 10**17 and account.withdrawal_amount == 0

    # settler: a valid leaf is not slashable; an unanswered demand is
    bundle = account_bundle(client, bytes.fromhex(aid[2:]), 1, [1_200, 34_000, 0, 0], key)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle.to_json()))
    cli("submit", *on, "--bundle", str(path), "--from", operator)
    refused = cli("challenge", *on, "--bundle", str(path), "--leaf", "0", "--from", settler,
                  expect=1)
    assert refused["contract_error"] == "RangeProofValid"
    assert "RangeProofValid" not in refused["error"]  # a sentence, not the raw error
    demanded = cli("demand", *on, "--account-id", aid, "--epoch", "1", "--leaf", "1",
                   "--from", settler)
    assert demanded["demand"]["status"] == "open"
    too_soon = cli("resolve", *on, "--account-id", aid, "--epoch", "1", "--leaf", "1",
                   "--from", settler, expect=1)
    assert too_soon["contract_error"]
    client.advance_time(params.response_window + 1)
    resolved = cli("resolve", *on, "--account-id", aid, "--epoch", "1", "--leaf", "1",
                   "--from", settler)
    assert resolved["epoch"]["status"] == "rejected"
    share = cli("withdraw", *on, "--from", settler)
    assert share["withdrawn"] > params.demand_bond  # the bond back and a share of the slash

    # another provider: its operator role moves, then its bond is unbonded and withdrawn
    other = SigningKey(b"every action test second key!!!!")
    pid2 = cli("register", *on, "--unit-price", "1000", "--signing-key",
               bytes(other.verify_key).hex(), "--from", second)["provider_id"]
    cli("transfer-operator", *on, "--provider-id", pid2, "--new-operator", heir,
        "--from", second)
    cli("accept-operator", *on, "--provider-id", pid2, "--from", heir)
    assert client.provider(bytes.fromhex(pid2[2:])).operator.lower() == heir.lower()
    cli("unbond", *on, "--provider-id", pid2, "--from", heir)
    cli("cancel-unbond", *on, "--provider-id", pid2, "--from", heir)
    assert client.provider(bytes.fromhex(pid2[2:])).unbond_at == 0
    cli("unbond", *on, "--provider-id", pid2, "--from", heir)
    waiting = cli("withdraw-bond", *on, "--provider-id", pid2, "--from", heir, expect=1)
    assert waiting["contract_error"]
    client.advance_time(params.bond_cooldown + 1)
    before = client.w3.eth.get_balance(heir)
    cli("withdraw-bond", *on, "--provider-id", pid2, "--from", heir)
    assert client.provider(bytes.fromhex(pid2[2:])).bond == 0
    assert client.w3.eth.get_balance(heir) > before


def test_submit_refuses_a_version_1_bundle_under_an_account_its_proofs_are_not_bound_to(
        anvil_url, tmp_path):
    """A version-1 bundle's proofs are bound to its own subject; under another account the
    contract would find every leaf invalid and slash the bond. Refused, nothing submitted."""
    from tests.contracts.helpers import epoch_bundle, make_epoch

    operator, payer = ChainClient.connect(anvil_url).w3.eth.accounts[:2]
    deployed = cli("deploy", "--rpc-url", anvil_url)
    on = ["--rpc-url", anvil_url, "--contract", deployed["settlement"]]
    client = ChainClient.connect(anvil_url, settlement=deployed["settlement"])
    key = SigningKey(b"every action test version-1 key!")
    pid = cli("register", *on, "--unit-price", "1000", "--signing-key",
              bytes(key.verify_key).hex(), "--from", operator)["provider_id"]
    aid = cli("open-account", *on, "--provider-id", pid, "--from", payer)["account_id"]
    cli("deposit", *on, "--account-id", aid, "--amount", str(10**18), "--from", payer)
    path = tmp_path / "v1.json"
    elsewhere = epoch_bundle(client, make_epoch(client, b"\x33" * 32, 1, [5, 7]), key)
    assert elsewhere.account_id is None and elsewhere.subject == b"\x33" * 32
    path.write_text(json.dumps(elsewhere.to_json()))
    refused = cli("submit", *on, "--bundle", str(path), "--account-id", aid, expect=2)
    assert "proofs are bound to 0x" + "33" * 32 in refused["error"]
    assert client.epoch(bytes.fromhex(aid[2:]), 1).status.name == "NONE"
    # bound to the account it is submitted to, a version-1 bundle is accepted
    bound = epoch_bundle(client, make_epoch(client, bytes.fromhex(aid[2:]), 1, [5, 7]), key)
    path.write_text(json.dumps(bound.to_json()))
    accepted = cli("submit", *on, "--bundle", str(path), "--account-id", aid)
    assert accepted["epoch"]["status"] == "pending"
