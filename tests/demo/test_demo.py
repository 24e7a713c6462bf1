"""``zkmeter demo`` runs the whole story and asserts its own outcome; these tests run it with
small N and M and check the outcome from the outside too: two payers, one billing account
each (ETH and the test ERC-20), each paid exactly its users' units in its own asset; and each
cheat caught while the other account settles normally."""

import io
import json
import subprocess
import sys

import pytest
from rich.console import Console

from prover.demo import PHANTOM_USER, UNIT_PRICE_WEI, DemoError, run_demo
from tests.anvil import running_anvil
from verifier.bundle import parse_bundle
from verifier.statement import unseal_statement

ETH = "0x" + "00" * 20


def quiet() -> Console:
    return Console(file=io.StringIO(), force_terminal=False)


def users_units(out, users) -> int:
    """The sum of the running totals of each user's last receipt (what the users hold)."""
    total = 0
    for user in users:
        receipts = json.loads((out / user / "receipts.json").read_text())
        total += max(receipts, key=lambda r: r["seq"])["total_units"]
    return total


def test_demo_two_payers_each_paid_its_users_units_in_its_asset(tmp_path):
    summary = run_demo(users=4, requests=12, out=tmp_path / "demo", console=quiet())
    out = tmp_path / "demo"
    assert summary["outcome"] == "settled" and summary["on_chain_status"] == "finalized"
    accounts = summary["accounts"]
    assert set(accounts) == {"payer-eth", "payer-token"}
    eth, token = accounts["payer-eth"], accounts["payer-token"]
    assert eth["asset"] == ETH and token["asset"] == summary["chain"]["token"] != ETH
    assert eth["account_id"] != token["account_id"]
    # every user is under exactly one account
    assert sorted(eth["users"] + token["users"]) == [f"user-0{i}" for i in range(1, 5)]
    assert not set(eth["users"]) & set(token["users"])
    for name, account in accounts.items():
        units = users_units(out, account["users"])
        assert units > 0 and account["total_units"] == units
        assert account["payment"] == account["withdrawn"] == units * UNIT_PRICE_WEI
        assert account["on_chain_status"] == "finalized"
        bundle = parse_bundle((out / name / "bundle.json").read_bytes())
        assert "0x" + bundle.account_id.hex() == account["account_id"]
        assert bundle.total == units
        # the payer's statement opens with its key and lists exactly its users
        statement = unseal_statement((out / name / "statement.bin").read_bytes(),
                                     bytes.fromhex((out / name / "payer.key").read_text()))
        assert sorted(e.user_id for e in statement.entries if e.user_id) == \
            sorted(account["users"])
        assert (out / name / "payer.key").stat().st_mode & 0o777 == 0o600
        assert not (out / name / "evidence.json").exists()  # nothing to report
    assert summary["total_units"] == eth["total_units"] + token["total_units"]
    assert summary["users_verified"] == 4 and summary["audit_clean"]
    assert summary["payers_verified"] == 2
    assert summary["retries"] >= 1 and summary["receipts"] == summary["requests_sent"] - \
        summary["retries"]
    assert summary["tokens"]["reasoning"] > 0 and summary["tokens"]["input"] > 0
    assert summary["through_gateway"] == 6  # the chat half went through zkmeter gateway
    assert {"finalize eth", "finalize token", "approve token"} <= set(summary["gas"])
    verification = json.loads((out / "verification.json").read_text())
    assert {"bundle payer-eth", "bundle payer-token", "audit payer-eth", "audit payer-token",
            "payer payer-eth", "payer payer-token", "me user-01", "me user-02", "me user-03",
            "me user-04"} <= set(verification)
    assert all(v["ok"] and v["exit_code"] == 0 for v in verification.values())
    assert json.loads((out / "summary.json").read_text())["outcome"] == "settled"
    for user in ("user-01", "user-02", "user-03", "user-04"):  # users' secret keys
        assert (out / user / "secret.key").stat().st_mode & 0o777 == 0o600


def test_demo_on_anvil_checks_each_account_against_the_node(tmp_path):
    """On a real node the verifier's subprocesses read the chain: `chain` and the payer's own
    check compare each account's on-chain record with its bundle."""
    with running_anvil() as url:
        summary = run_demo(users=2, requests=6, out=tmp_path / "anvil", rpc=url,
                           console=quiet())
    assert summary["outcome"] == "settled" and summary["chain"]["rpc"] == url
    verification = json.loads((tmp_path / "anvil" / "verification.json").read_text())
    for name, account in summary["accounts"].items():
        assert verification[f"chain {name}"]["exit_code"] == 0
        checks = {c["name"]: c["status"] for c in verification[f"payer {name}"]["checks"]}
        assert checks["chain"] == "ok" and checks["receipts"] == "ok", checks
        assert account["payment"] == users_units(tmp_path / "anvil", account["users"]) * \
            UNIT_PRICE_WEI > 0


def test_demo_phantom_user_is_caught_by_the_payer_with_evidence(tmp_path):
    summary = run_demo(users=3, requests=12, out=tmp_path / "phantom", phantom=True,
                       console=quiet())
    out = tmp_path / "phantom"
    assert summary["outcome"] == "phantom_caught"
    cheated = summary["cheated_account"]
    assert summary["on_chain_status"] == "pending"  # the contract cannot tell
    assert summary["payer_failed_checks"] == ["users_known"]
    assert summary["evidence_claims"] == [{"kind": "phantom_user",
                                           "strength": "payer_attested"}]
    verification = json.loads((out / "verification.json").read_text())
    # the public and per-user checks pass on the well-formed forged bundle ...
    assert verification[f"bundle {cheated}"]["exit_code"] == 0
    users = [n for n in verification if n.startswith("me ")]
    assert len(users) == 3 and all(verification[n]["exit_code"] == 0 for n in users)
    # ... only the payer's fails, and the evidence holds
    assert verification[f"payer {cheated}"]["exit_code"] == 1
    assert verification[f"evidence {cheated}"]["exit_code"] == 1
    evidence = json.loads((out / cheated / "evidence.json").read_text())
    assert [c["kind"] for c in evidence["claims"]] == ["phantom_user"]
    assert evidence["claims"][0]["user_id"] == PHANTOM_USER
    bundle = parse_bundle((out / cheated / "bundle.json").read_bytes())
    assert bundle.total == summary["total_units"] == \
        users_units(out, _users_of(out, cheated)) + summary["phantom_units"]
    # the other account settled normally, paid exactly its users' units
    (other,) = summary["accounts"].values()
    assert other["on_chain_status"] == "finalized"
    assert other["payment"] == users_units(out, other["users"]) * UNIT_PRICE_WEI > 0
    assert verification[f"payer {next(iter(summary['accounts']))}"]["exit_code"] == 0


def _users_of(out, payer: str) -> list[str]:
    return (out / payer / "users.txt").read_text().split()


def test_demo_bad_proof_is_caught_and_slashed(tmp_path):
    summary = run_demo(users=3, requests=12, out=tmp_path / "bad", bad_proof=True,
                       console=quiet())
    assert summary["outcome"] == "rejected"
    assert summary["on_chain_status"] == "rejected"
    bond = summary["bond_slashed_wei"]
    assert bond > 0  # the whole bond: half burned, 40 % to the payer, 10 % to the challenger
    assert summary["challenger_credit_wei"] == bond // 10
    assert summary["payer_credit_wei"] == bond * 4 // 10 and summary["burned_wei"] == bond // 2
    assert summary["units_moved"] > 0
    assert "challenge" in summary["gas"]
    assert f"finalize {summary['cheated_account'].removeprefix('payer-')}" not in summary["gas"]
    (other,) = summary["accounts"].values()  # settled before the cheat, in its asset
    assert other["on_chain_status"] == "finalized" and other["payment"] > 0
    assert other["payment"] == other["total_units"] * UNIT_PRICE_WEI


def test_demo_withheld_data_is_demanded_and_slashed(tmp_path):
    summary = run_demo(users=3, requests=12, out=tmp_path / "withhold", withhold=True,
                       console=quiet())
    assert summary["outcome"] == "withheld" and summary["on_chain_status"] == "rejected"
    bond = summary["bond_slashed_wei"]
    assert bond > 0 and summary["payer_credit_wei"] == bond * 4 // 10
    # the settler's 10 % and its demand bond back (DEFAULT_PARAMS: 0.01 ETH)
    assert summary["settler_credit_wei"] == bond // 10 + 10**16
    assert {"demand", "resolve"} <= set(summary["seconds"])
    (other,) = summary["accounts"].values()
    assert other["on_chain_status"] == "finalized"
    assert other["payment"] == other["total_units"] * UNIT_PRICE_WEI > 0


def test_demo_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "prover.cli", "demo", "--users", "2",
                           "--requests", "6", "--out", str(tmp_path / "cli")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "settled" in proc.stdout and "zkmeter demo" in proc.stdout
    assert "payer-eth" in proc.stdout and "payer-token" in proc.stdout


def test_demo_command_refuses_two_cheats(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "prover.cli", "demo", "--phantom",
                           "--withhold", "--out", str(tmp_path / "two")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "choose one of --bad-proof, --withhold and --phantom" in proc.stderr
    assert not (tmp_path / "two").exists()  # refused before anything ran


def test_demo_bad_proof_with_two_users_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(DemoError, match=r"--bad-proof needs .* --users 3 or more"):
        run_demo(users=2, requests=6, out=tmp_path / "two", bad_proof=True, console=quiet())
    assert not (tmp_path / "two").exists()
