"""Every role's first hour, as README's "Using it" tells it, with the documented commands run
as real subprocesses: the operator (keys, deploy, register, serve, close, submit, withdraw),
the payer (open an account, deposit), the gateway (record usage, hand the receipt over with
zkmeter.client.receipt_json), the user (its own key, `zkmeter-verify me` finding its opening in
the published list), the auditor (bundle, audit) and the settler (finalize too early, demand
a leaf's data, finalize). Chain commands run against anvil (Prague). Run with ``-s`` to see
the time of each operator command.
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
    _operator, payer, settler = rpc(anvil, "eth_accounts")[:3]

    # --- operator: keys, then the contract, then the settings ---------------------------
    env["ZKMETER_SIGNING_KEY"] = sh("zkmeter", "keys", "signing-key").stdout.strip()
    keys = sh("zkmeter", "keys", "api-key", "--role", "operator")
    gateway_key = keys.stdout.strip()
    (line,) = keys.stderr.strip().splitlines()
    name, _, value = line.partition("=")
    env[name] = value.strip("'")
    deployed = sh.json("zkmeter", "chain", "deploy", "--rpc-url", anvil)
    env["ZKMETER_CHAIN_RPC_URL"] = anvil
    env["ZKMETER_CHAIN_ID"] = str(deployed["chain_id"])
    env["ZKMETER_CONTRACT_ADDRESS"] = deployed["settlement"]
    registered = sh.json("zkmeter", "chain", "register", "--unit-price", UNIT_PRICE)
    provider_id = registered["provider_id"]
    assert registered["challenge_window"] == 3_600  # the contract's minimum, by default

    # --- payer: an account with the provider, funded -----------------------------------
    opened = sh.json("zkmeter", "chain", "open-account", "--provider-id", provider_id,
                     "--from", payer)
    account_id = opened["account_id"]
    assert opened["unit_price"] == UNIT_PRICE
    funded = sh.json("zkmeter", "chain", "deposit", "--account-id", account_id, "--amount",
                     10**18, "--from", payer)
    assert funded["escrow"] == 10**18

    # --- operator: serve --------------------------------------------------------------
    grpc_port, http_port = free_port(), free_port()
    env.update({"ZKMETER_DATABASE_URL": f"sqlite:///{tmp_path / 'zkmeter.sqlite'}",
                "ZKMETER_GRPC_BIND": f"127.0.0.1:{grpc_port}",
                "ZKMETER_METRICS_BIND": "127.0.0.1:0",
                "ZKMETER_HTTP_BIND": f"127.0.0.1:{http_port}", "ZKMETER_PROOF_WORKERS": "1",
                "ZKMETER_SHUTDOWN_GRACE_SECONDS": "2",
                "ZKMETER_OPERATOR_ADDRESS": _operator})
    base = f"http://127.0.0.1:{http_port}"
    start = time.perf_counter()
    server = subprocess.Popen([str(BIN / "zkmeter"), "serve"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http(f"{base}/healthz", server)
        sh.times["zkmeter serve (until ready)"] = time.perf_counter() - start

        # --- user: its own key; gateway: registers it, meters, hands receipts over -----
        public = sh("zkmeter", "keys", "user-key", "--out", "alice.key").stdout.strip()
        kept, texts = [], []
        with Client(f"127.0.0.1:{grpc_port}", api_key=gateway_key) as zk:
            # the operator enters the payer's billing account (the contract's id), the
            # gateway puts its users under it
            account = zk.register_account(payer=bytes.fromhex(payer[2:]), asset=bytes(20),
                                          payer_x25519_public_key=bytes(32 * [7]))
            assert "0x" + account.account_id.hex() == account_id.lower()
            zk.register_user("alice", account.account_id, bytes.fromhex(public))
            zk.register_user("bob", account.account_id)
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
        bundle = f"{base}/v1/epochs/{epoch}/bundle"
        openings = f"{base}/v1/epochs/{epoch}/openings"
        again = sh("zkmeter", "epoch", "close", expect=1,
                   label="zkmeter epoch close (nothing new)")
        assert "no usage since the last close" in again.stderr
        submitted = sh.json("zkmeter", "chain", "submit", "--bundle", bundle, "--account-id",
                            account_id)
        assert submitted["epoch"]["status"] == "pending"
        assert submitted["epoch"]["total"] == closed["total_units"]

        # --- auditor, user, settler: the verifier commands --------------------------------
        provider_key = json.loads(urllib.request.urlopen(bundle).read())["provider_id"]
        out = sh.json("zkmeter-verify", "bundle", bundle, "--provider-key", provider_key)
        assert out["ok"] and out["not_checked"] == []
        out = sh.json("zkmeter-verify", "audit", bundle, "--openings", openings)
        assert out["ok"] and out["not_checked"] == ["tags_unlinkable"]
        out = sh.json("zkmeter-verify", "me", "--openings", openings, "--secret-key",
                      "alice.key", "--receipts", "alice.json", "--texts", "texts.json",
                      "--bundle", bundle, "--user-id", "alice")
        assert out["ok"] and out["committed_units"] == kept[-1]["total_units"]
        out = sh.json("zkmeter-verify", "receipt", "alice.json", "--provider-key",
                      provider_key)
        assert out["ok"] and out["receipts"] == 3
        out = sh.json("zkmeter-verify", "chain", "--rpc-url", anvil, "--contract",
                      deployed["settlement"], "--epoch", epoch, "--bundle", bundle,
                      "--account-id", account_id)
        assert out["ok"], out

        # settler: too early, said with the date and "in N s"
        early = sh("zkmeter-verify", "finalize", "--account-id", account_id, "--epoch",
                   epoch, "--from", settler, expect=1, label="zkmeter-verify finalize (early)")
        assert "cannot be finalized yet" in early.stderr and " UTC (in " in early.stderr
        # settler demands a leaf's data; the operator answers from the bundle
        demanded = sh.json("zkmeter-verify", "demand", "--account-id", account_id,
                           "--epoch", epoch, "--leaf", 0, "--from", settler)
        assert demanded["demand"]["status"] == "open"
        sh.json("zkmeter", "chain", "answer", "--bundle", bundle, "--leaf", 0,
                "--account-id", account_id)
        rpc(anvil, "evm_increaseTime", [3_601 * 2])  # a dev chain: time passes
        rpc(anvil, "evm_mine")
        done = sh.json("zkmeter-verify", "finalize", "--account-id", account_id, "--epoch",
                       epoch, "--from", settler)
        assert done["epoch"]["status"] == "finalized"

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
