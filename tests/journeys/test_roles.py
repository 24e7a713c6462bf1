"""Every role's first hour, as README's "Using it" tells it, with the documented commands run
as real subprocesses in its order: the operator (keys, deploy from $ZKMETER_CHAIN_RPC_URL and
the printed export line, register, serve), the payer (open an account, deposit, its X25519
key), the operator's account register (`zkmeter accounts register | add-user | show`), the
gateway (README's client snippet: register the user's key, record usage, hand the receipt
over with zkmeter.client.receipt_json), the operator's close and submit of the account's
bundle route, the payer's check (`zkmeter-verify payer` with forwarded receipts and the
chain), the auditor (bundle, audit), the user (its own key, `zkmeter-verify me` finding its
opening in the published list, receipt), the settler (chain, challenge an honest leaf,
finalize too early, demand, finalize, chain-status) and the operator's answer and
withdrawals. Chain commands run against anvil (Prague). Run with ``-s`` to see the time of
each command.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.anvil import free_port, rpc
from zkmeter.client import Client, receipt_json

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
UNIT_PRICE = 1_000


class Shell:
    """Runs the documented commands the way a shell would, keeping the time of each."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        self.times: dict[str, float] = {}

    def __call__(self, *args, expect=0, label=None) -> subprocess.CompletedProcess:
        start = time.perf_counter()
        proc = subprocess.run([str(BIN / args[0]), *map(str, args[1:])], env=self.env,
                              cwd=self.cwd, capture_output=True, text=True, timeout=600,
                              check=False)
        self.times[label or " ".join(map(str, args[:3]))] = time.perf_counter() - start
        assert proc.returncode == expect, (args, proc.stdout[-2000:], proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def json(self, *args, expect=0, label=None) -> dict:
        return json.loads(self(*args, "--json", expect=expect, label=label).stdout)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"zkmeter serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail("zkmeter serve did not come up")


def test_every_role_follows_the_readme(tmp_path, anvil):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKMETER_")}
    sh = Shell(env, tmp_path)
    operator, payer, settler = rpc(anvil, "eth_accounts")[:3]

    # --- operator: keys, contract, settings, serve --------------------------------------
    env["ZKMETER_SIGNING_KEY"] = sh("zkmeter", "keys", "signing-key").stdout.strip()
    keys = sh("zkmeter", "keys", "api-key", "--role", "gateway")
    gateway_key = keys.stdout.strip()  # `> gateway.key`
    (line,) = keys.stderr.strip().splitlines()
    name, _, value = line.partition("=")
    env[name] = value.strip("'")
    env["ZKMETER_CHAIN_RPC_URL"] = anvil
    deployed = sh("zkmeter", "chain", "deploy").stdout
    (export,) = [x for x in deployed.splitlines() if x.startswith("export ")]
    for assignment in export.removeprefix("export ").split():  # what the README copies
        name, _, value = assignment.partition("=")
        env[name] = value
    assert env["ZKMETER_CHAIN_ID"] == "31337"
    contract = env["ZKMETER_CONTRACT_ADDRESS"]
    registered = sh.json("zkmeter", "chain", "register", "--unit-price", UNIT_PRICE)
    provider_id = registered["provider_id"]
    assert registered["challenge_window"] == 3_600  # the contract's minimum, by default

    grpc_port, http_port = free_port(), free_port()
    env.update({"ZKMETER_DATABASE_URL": f"sqlite:///{tmp_path / 'zkmeter.sqlite'}",
                "ZKMETER_GRPC_BIND": f"127.0.0.1:{grpc_port}",
                "ZKMETER_METRICS_BIND": "127.0.0.1:0",
                "ZKMETER_HTTP_BIND": f"127.0.0.1:{http_port}", "ZKMETER_PROOF_WORKERS": "1",
                "ZKMETER_SHUTDOWN_GRACE_SECONDS": "2",
                "ZKMETER_OPERATOR_ADDRESS": operator})
    base = f"http://127.0.0.1:{http_port}"
    start = time.perf_counter()
    server = subprocess.Popen([str(BIN / "zkmeter"), "serve"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http(f"{base}/healthz", server)
        sh.times["zkmeter serve (until ready)"] = time.perf_counter() - start

        # --- payer: an account with the provider, funded; its own X25519 key ------------
        opened = sh.json("zkmeter", "chain", "open-account", "--provider-id", provider_id,
                         "--from", payer)
        account_id = opened["account_id"]
        assert opened["unit_price"] == UNIT_PRICE
        funded = sh.json("zkmeter", "chain", "deposit", "--account-id", account_id,
                         "--amount", 10**18, "--from", payer)
        assert funded["escrow"] == 10**18
        payer_key = sh("zkmeter", "keys", "user-key", "--out", "payer.key",
                       label="zkmeter keys user-key (payer)").stdout.strip()

        # --- operator: the payer's account and its users; the user's own key -----------
        public = sh("zkmeter", "keys", "user-key", "--out", "alice.key").stdout.strip()
        account = sh.json("zkmeter", "accounts", "register", "--payer", payer, "--asset",
                          "ETH", "--payer-key", payer_key)
        assert account["account_id"] == account_id.lower()  # the contract's id
        sh("zkmeter", "accounts", "add-user", "alice", "--account-id", account_id,
           "--user-key", public)
        sh("zkmeter", "accounts", "add-user", "bob", "--account-id", account_id,
           label="zkmeter accounts add-user (no key)")
        shown = sh.json("zkmeter", "accounts", "show", "--account-id", account_id)
        assert shown["users"] == ["alice", "bob"] and shown["status"] == "open"

        # --- gateway: README's snippet, then receipts handed to the user ---------------
        kept, texts = [], []
        with Client(f"127.0.0.1:{grpc_port}", api_key=gateway_key) as zk:
            zk.register_user_key("alice", bytes.fromhex(public))  # the same key: a no-op
            for i in range(3):
                reply = zk.record_usage(idempotency_key=f"req-{i}", user_id="alice",
                                        model="gpt-4o", messages=[("user", f"question {i}")],
                                        completion=f"answer {i}")
                kept.append(receipt_json(reply))  # the gateway hands this to the user
                texts.append({"seq": i + 1, "messages": [{"role": "user",
                                                          "content": f"question {i}"}],
                              "completion": f"answer {i}"})
                zk.record_usage(idempotency_key=f"bob-{i}", user_id="bob", model="gpt-4o",
                                input_tokens=100, output_tokens=20)
        (tmp_path / "alice.json").write_text(json.dumps(kept))
        (tmp_path / "texts.json").write_text(json.dumps(texts))

        # --- operator: close, submit ----------------------------------------------------
        closed = sh.json("zkmeter", "epoch", "close")
        epoch = closed["epoch_id"]
        again = sh("zkmeter", "epoch", "close", expect=1,
                   label="zkmeter epoch close (nothing new)")
        assert "no usage since the last close" in again.stderr
        listed = json.loads(urllib.request.urlopen(f"{base}/v1/epochs/{epoch}/accounts").read())
        assert account_id.lower() in json.dumps(listed)
        bundle = f"{base}/v1/epochs/{epoch}/accounts/{account_id}/bundle"
        statement = f"{base}/v1/epochs/{epoch}/accounts/{account_id}/statement"
        openings = f"{base}/v1/epochs/{epoch}/openings"
        submitted = sh.json("zkmeter", "chain", "submit", "--bundle", bundle)
        assert submitted["epoch"]["status"] == "pending"
        assert submitted["epoch"]["total"] == closed["total_units"]

        # --- payer: every unit it pays for, with the receipts alice forwarded -----------
        (tmp_path / "users.txt").write_text("alice\nbob\n")
        (tmp_path / "forwarded").mkdir()
        (tmp_path / "forwarded" / "alice.json").write_text(json.dumps(kept))
        out = sh.json("zkmeter-verify", "payer", "--bundle", bundle, "--statement", statement,
                      "--secret-key", "payer.key", "--users", "users.txt", "--receipts",
                      "forwarded/", "--rpc-url", anvil, "--contract", contract)
        assert out["ok"] and out["not_checked"] == ["range_proofs"], out

        # --- auditor, user: the verifier commands ----------------------------------------
        single = f"{base}/v1/epochs/{epoch}/bundle"  # an epoch that billed one account
        provider_key = json.loads(urllib.request.urlopen(single).read())["provider_id"]
        out = sh.json("zkmeter-verify", "bundle", single, "--provider-key", provider_key,
                      label="zkmeter-verify bundle")
        assert out["ok"] and out["not_checked"] == []
        out = sh.json("zkmeter-verify", "audit", single, "--openings", openings,
                      label="zkmeter-verify audit")
        assert out["ok"] and out["not_checked"] == ["tags_unlinkable"]
        out = sh.json("zkmeter-verify", "me", "--openings", openings, "--secret-key",
                      "alice.key", "--receipts", "alice.json", "--texts", "texts.json",
                      "--bundle", bundle, "--user-id", "alice")
        assert out["ok"] and out["committed_units"] == kept[-1]["total_units"]
        out = sh.json("zkmeter-verify", "receipt", "alice.json", "--provider-key",
                      provider_key)
        assert out["ok"] and out["receipts"] == 3

        # --- settler (with zkmeter[chain]) ------------------------------------------------
        out = sh.json("zkmeter-verify", "chain", "--rpc-url", anvil, "--contract", contract,
                      "--epoch", epoch, "--bundle", single, "--account-id", account_id)
        assert out["ok"], out
        (tmp_path / "bundle.json").write_bytes(urllib.request.urlopen(bundle).read())
        honest = sh.json("zkmeter-verify", "challenge", "--bundle", "bundle.json", "--leaf", 0,
                         "--account-id", account_id, "--from", settler, expect=1)
        assert honest["contract_error"] == "RangeProofValid"  # an honest leaf stands
        early = sh("zkmeter-verify", "finalize", "--account-id", account_id, "--epoch",
                   epoch, "--from", settler, expect=1, label="zkmeter-verify finalize (early)")
        assert "cannot be finalized yet" in early.stderr and " UTC (in " in early.stderr
        demanded = sh.json("zkmeter-verify", "demand", "--account-id", account_id,
                           "--epoch", epoch, "--leaf", 0, "--from", settler)
        assert demanded["demand"]["status"] == "open"
        # --- operator: the demanded data, answered from the bundle ------------------------
        sh.json("zkmeter", "chain", "answer", "--bundle", bundle, "--leaf", 0)
        rpc(anvil, "evm_increaseTime", [3_601 * 2])  # a dev chain: time passes
        rpc(anvil, "evm_mine")
        done = sh.json("zkmeter-verify", "finalize", "--account-id", account_id, "--epoch",
                       epoch, "--from", settler)
        assert done["epoch"]["status"] == "finalized"
        status = sh.json("zkmeter-verify", "chain-status", "--account-id", account_id,
                         "--epoch", epoch)
        assert status["epoch"]["status"] == "finalized"

        # --- operator: earnings and the answered demand's bond ---------------------------
        earned = sh.json("zkmeter", "chain", "withdraw-earnings", "--provider-id",
                         provider_id)
        assert earned["withdrawn"] == closed["total_units"] * UNIT_PRICE
        credited = sh.json("zkmeter", "chain", "withdraw")
        assert credited["withdrawn"] > 0  # the demand bond paid the answer
        status = sh.json("zkmeter", "chain", "status", "--provider-id", provider_id,
                         "--account-id", account_id, "--epoch", epoch)
        assert status["account"]["reserved"] == 0
        assert status["account"]["escrow"] == 10**18 - closed["total_units"] * UNIT_PRICE
        table = sh("zkmeter", "chain", "status", "--account-id", account_id,
                   label="zkmeter chain status (table)").stdout
        assert "billable units" in table
    finally:
        server.terminate()
        server.wait(timeout=60)
    for command, seconds in sh.times.items():
        print(f"journey time: {seconds:6.2f} s  {command}")
