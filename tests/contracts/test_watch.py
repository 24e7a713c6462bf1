"""The settler's watcher (``zkmeter-verify chain --watch``) against real chains: it demands
withheld data and resolves the demand, challenges a published bad proof and a bad answer,
leaves an honest epoch alone and finalizes it when asked."""

import json
import secrets

from nacl.signing import SigningKey
from typer.testing import CliRunner

from prover.chain import DEFAULT_PARAMS, ChainClient
from tests.contracts.helpers import account_bundle, answer, epoch_bundle, make_epoch, submit
from verifier.chain import EpochStatus
from verifier.cli import app
from verifier.watch import watch_round

BOND = 10**18
WINDOW = 3_600


def _setup(client: ChainClient):
    key = SigningKey.generate()
    client.register_provider(bytes(key.verify_key), bond=BOND, unit_price=1_000,
                             challenge_window=WINDOW)
    pid = client.provider_id_for(bytes(key.verify_key))
    payer = client.w3.eth.accounts[1]
    client.open_account(pid, sender=payer)
    aid = client.account_id_for(pid, payer=payer)
    client.deposit(aid, 10**17, sender=payer)
    settler = ChainClient(client.w3, account=client.w3.eth.accounts[3],
                          settlement=client.settlement_address)
    return key, aid, settler


def _publish(tmp_path, bundle, aid):
    (tmp_path / f"0x{aid.hex()}-{bundle.epoch_id}.json").write_text(bundle.dumps())


def _template(tmp_path):
    return str(tmp_path / "{account}-{epoch}.json")


def test_withheld_bundle_is_demanded_then_resolved(client, tmp_path):
    _, aid, settler = _setup(client)
    epoch = make_epoch(client, aid, 1, [3, 4, 5, 6])
    submit(client, epoch)  # nothing published
    actions = watch_round(settler, bundle_source=_template(tmp_path))
    assert [a.kind for a in actions] == ["demand"] and 0 <= actions[0].leaf_index < 4
    leaf = actions[0].leaf_index
    again = watch_round(settler, bundle_source=_template(tmp_path))  # its budget is spent
    assert [a.kind for a in again] == ["withheld"]
    client.advance_time(DEFAULT_PARAMS.response_window + 1)
    actions = watch_round(settler, bundle_source=_template(tmp_path))
    assert [(a.kind, a.leaf_index) for a in actions] == [("resolve", leaf)]
    assert client.epoch(aid, 1).status is EpochStatus.REJECTED
    assert client.balance_of(settler.account) == DEFAULT_PARAMS.demand_bond + BOND // 10


def test_published_bad_proof_is_challenged(anvil_client, tmp_path):
    client = anvil_client
    key, aid, settler = _setup(client)
    honest = account_bundle(client, aid, 1, [1, 2, 3, 4], key)
    client.submit_bundle(honest)
    _publish(tmp_path, honest, aid)
    assert [a.kind for a in watch_round(settler, bundle_source=_template(tmp_path))] == ["ok"]
    bad = make_epoch(client, aid, 2, [1, 2, 3, 4], bad={2: "overflow"})
    submit(client, bad)
    _publish(tmp_path, epoch_bundle(client, bad, key), aid)
    actions = watch_round(settler, bundle_source=_template(tmp_path))
    assert [(a.kind, a.epoch_id, a.leaf_index) for a in actions] == [
        ("ok", 1, None), ("challenge", 2, 2)]
    assert client.epoch(aid, 2).status is EpochStatus.REJECTED
    assert client.epoch(aid, 1).status is EpochStatus.REJECTED  # voided with the provider


def test_bad_answer_is_challenged(anvil_client, tmp_path):
    client = anvil_client
    _, aid, settler = _setup(client)
    epoch = make_epoch(client, aid, 1, [1, 2], bad={0: "overflow"})
    submit(client, epoch)
    demands = watch_round(settler, bundle_source=_template(tmp_path), max_demands=2)
    assert sorted((a.kind, a.leaf_index) for a in demands) == [("demand", 0), ("demand", 1)]
    answer(client, epoch, 0)  # the provider answers both, one with its bad proof
    answer(client, epoch, 1)
    actions = watch_round(settler, bundle_source=_template(tmp_path))
    assert [(a.kind, a.leaf_index) for a in actions] == [("challenge", 0)]
    assert client.epoch(aid, 1).status is EpochStatus.REJECTED


def test_honest_epoch_is_left_alone_then_finalized_by_the_cli(anvil_client, anvil_url,
                                                             tmp_path):
    client = anvil_client
    key, aid, settler = _setup(client)
    bundle = account_bundle(client, aid, 1, [7, 8], key)
    client.submit_bundle(bundle)
    _publish(tmp_path, bundle, aid)
    args = ["chain", "--watch", "--rpc-url", anvil_url, "--contract",
            client.settlement_address, "--bundle", _template(tmp_path), "--rounds", "1",
            "--from", settler.account, "--finalize", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["action"] for line in lines] == ["ok"]
    client.advance_time(WINDOW + 1)
    result = CliRunner().invoke(app, args)
    assert [json.loads(x)["action"] for x in result.stdout.splitlines()] == ["finalize"]
    assert client.epoch(aid, 1).status is EpochStatus.FINALIZED
    assert client.earnings(client.provider_id_for(bytes(key.verify_key))) == 15 * 1_000


def test_watch_needs_a_bundle_template(anvil_url):
    result = CliRunner().invoke(app, ["chain", "--watch", "--rpc-url", anvil_url,
                                      "--contract", "0x" + secrets.token_hex(20), "--json"])
    assert result.exit_code == 2
