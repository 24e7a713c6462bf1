"""A real epoch bundle (prover.epoch.close) through the `zkmeter chain` commands on anvil,
and the read side: deployed code and bundle-vs-chain checks."""

import json

import pytest
from nacl.signing import SigningKey
from typer.testing import CliRunner

from circuits.transcript import RangeProofContext
from prover.chain import ChainClient
from prover.cli_chain import app
from prover.epoch.close import EpochInputs, MemoryLeafStore, close_epoch
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
PROVIDER_ID = bytes(SIGNING_KEY.verify_key)


def _bundle(chain_id: int, settlement: str, epoch_id: int, totals: dict[str, int]):
    ctx = RangeProofContext(chain_id=chain_id, contract=bytes.fromhex(settlement[2:]),
                            provider_id=PROVIDER_ID, epoch_id=epoch_id)
    inputs = EpochInputs(ctx=ctx, window_start=1_700_000_000, window_end=1_700_003_600,
                         rate_card_hash=bytes(32), bit_size=32, totals=totals, min_leaves=4)
    closed = close_epoch(inputs, secret=b"chain test master secret, 32+ bytes",
                         signing_key=SIGNING_KEY, store=MemoryLeafStore())
    return closed.bundle


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
    pid_hex = "0x" + PROVIDER_ID.hex()
    reg = _cli("register", *common, "--provider-id", pid_hex, "--bond", str(10**18),
               "--unit-price", "1000", "--window", "60")
    assert reg["_exit"] == 0

    client = ChainClient.connect(anvil_url, settlement=settlement)
    client.deposit(PROVIDER_ID, 10**18)
    totals = {"alice": 1_200, "bob": 34_000, "carol": 0}
    bundle = _bundle(31337, settlement, 9, totals)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle.to_json()))

    sub = _cli("submit", *common, "--bundle", str(path))
    assert sub["_exit"] == 0, sub
    assert sub["epoch"]["status"] == "pending" and sub["epoch"]["total"] == 35_200
    again = _cli("submit", *common, "--bundle", str(path))
    assert again["_exit"] == 1 and again["contract_error"] == "EpochIdNotIncreasing"

    early = _cli("finalize", *common, "--provider-id", pid_hex, "--epoch", "9")
    assert early["_exit"] == 1 and early["contract_error"] == "EpochNotFinalizable"
    client.advance_time(61)
    done = _cli("finalize", *common, "--provider-id", pid_hex, "--epoch", "9")
    assert done["_exit"] == 0 and done["epoch"]["status"] == "finalized"

    status = _cli("status", *common, "--provider-id", pid_hex, "--epoch", "9")
    assert status["provider"]["earnings"] == 35_200 * 1000
    assert status["provider"]["last_epoch_id"] == 9
    assert status["epoch"]["merkle_root"] == "0x" + bundle.merkle_root.hex()

    # the read side agrees with the bundle
    record = read_epoch(client.w3, settlement, PROVIDER_ID, 9)
    checks = check_bundle_against_chain(parse_bundle(path.read_bytes()), record)
    assert all(c.ok for c in checks), checks
    assert check_deployment(client.w3, settlement).ok


def test_cli_bad_input():
    out = _cli("status", "--settlement", "0x" + "11" * 20, "--provider-id", "0x1234")
    assert out["_exit"] == 2


def test_bundle_for_another_contract_is_refused(tester_client):
    bundle = _bundle(tester_client.chain_id, "0x" + "22" * 20, 1, {"a": 1})
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
    client.register_provider(PROVIDER_ID, bond=1, unit_price=1, challenge_window=60)
    bundle = _bundle(client.chain_id, client.settlement.address, 3, {"a": 5, "b": 6})
    client.submit_bundle(bundle)
    record = client.epoch(PROVIDER_ID, 3)
    assert record.status is EpochStatus.PENDING
    assert all(c.ok for c in check_bundle_against_chain(bundle, record))
    other = _bundle(client.chain_id, client.settlement.address, 3, {"a": 5, "b": 7})
    failed = {c.name for c in check_bundle_against_chain(other, record) if not c.ok}
    assert failed == {"chain_root", "chain_total"}
