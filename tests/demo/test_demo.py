"""``zkmeter demo`` runs the whole story and asserts its own outcome; these tests run it with
small N and M and check the outcome from the outside too."""

import io
import json
import subprocess
import sys

from rich.console import Console

from prover.demo import UNIT_PRICE_WEI, run_demo


def quiet() -> Console:
    return Console(file=io.StringIO(), force_terminal=False)


def test_demo_settles_and_every_user_verifies(tmp_path):
    summary = run_demo(users=3, requests=12, out=tmp_path / "demo", console=quiet())
    assert summary["outcome"] == "settled"
    assert summary["on_chain_status"] == "finalized"
    assert summary["payment_wei"] == summary["total_units"] * UNIT_PRICE_WEI > 0
    assert summary["users_verified"] == 3 and summary["audit_clean"]
    assert summary["retries"] >= 1 and summary["receipts"] == summary["requests_sent"] - \
        summary["retries"]
    assert summary["tokens"]["reasoning"] > 0 and summary["tokens"]["input"] > 0
    assert summary["through_gateway"] == 6  # the chat half went through zkmeter gateway
    out = tmp_path / "demo"
    verification = json.loads((out / "verification.json").read_text())
    assert {"bundle", "audit", "me user-01", "me user-02", "me user-03"} <= set(verification)
    assert all(v["ok"] and v["exit_code"] == 0 for v in verification.values())
    bundle = json.loads((out / "bundle.json").read_text())
    assert bundle["total"]["value"] == summary["total_units"]
    assert json.loads((out / "summary.json").read_text())["outcome"] == "settled"
    for user in ("user-01", "user-02", "user-03"):  # users' secret keys: owner-only
        assert (out / user / "secret.key").stat().st_mode & 0o777 == 0o600


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
    assert "challenge" in summary["gas"] and "finalize" not in summary["gas"]


def test_demo_withheld_data_is_demanded_and_slashed(tmp_path):
    summary = run_demo(users=3, requests=12, out=tmp_path / "withhold", withhold=True,
                       console=quiet())
    assert summary["outcome"] == "withheld" and summary["on_chain_status"] == "rejected"
    bond = summary["bond_slashed_wei"]
    assert bond > 0 and summary["payer_credit_wei"] == bond * 4 // 10
    # the settler's 10 % and its demand bond back (DEFAULT_PARAMS: 0.01 ETH)
    assert summary["settler_credit_wei"] == bond // 10 + 10**16
    assert {"demand", "resolve"} <= set(summary["seconds"])
    assert "finalize" not in summary["gas"]


def test_demo_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "prover.cli", "demo", "--users", "2",
                           "--requests", "6", "--out", str(tmp_path / "cli")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "settled" in proc.stdout and "zkmeter demo" in proc.stdout
