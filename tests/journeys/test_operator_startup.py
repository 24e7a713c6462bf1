"""The operator's first hour: every start-up failure is one line on stderr and exit 2 (never
a traceback, never a secret), the unset settlement contract is refused, keys print exactly
what goes where, and an epoch with no usage is not published."""

import json
import os
import socket
import stat
import subprocess
import sys

import pytest
from nacl.public import PrivateKey
from typer.testing import CliRunner

from prover.cli import app

runner = CliRunner()
SEED = "e1" + "".join(f"{i:02x}" for i in range(31))
CONTRACT = "0x" + "5e" * 20


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """A clean, valid operator environment (SQLite in tmp, a real contract address)."""
    for key in list(os.environ):
        if key.startswith("ZKMETER_"):
            monkeypatch.delenv(key)
    values = {"ZKMETER_SIGNING_KEY": SEED,
              "ZKMETER_DATABASE_URL": f"sqlite:///{tmp_path / 'op.sqlite'}",
              "ZKMETER_CHAIN_ID": "31337", "ZKMETER_CONTRACT_ADDRESS": CONTRACT,
              "ZKMETER_PROOF_WORKERS": "1", "ZKMETER_MIN_LEAVES": "4"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def invoke(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(("change", "expected"), [
    ({"ZKMETER_CONTRACT_ADDRESS": None}, "ZKMETER_CONTRACT_ADDRESS is not set"),
    ({"ZKMETER_CONTRACT_ADDRESS": "0x" + "00" * 20}, "ZKMETER_CONTRACT_ADDRESS is not set"),
    ({"ZKMETER_CHAIN_ID": None}, "ZKMETER_CHAIN_ID is not set"),
    ({"ZKMETER_SIGNING_KEY": "changeme-changeme"}, "placeholder"),
    ({"ZKMETER_SIGNING_KEY": None}, "set exactly one of ZKMETER_SIGNING_KEY"),
    ({"ZKMETER_BIT_SIZE": "33"}, "ZKMETER_BIT_SIZE: bit_size must be"),
    ({"ZKMETER_CONTRACT_ADDRESS": "0x1234"}, "ZKMETER_CONTRACT_ADDRESS: contract_address"),
    ({"ZKMETER_MIN_LEAVES": "zero"}, "ZKMETER_MIN_LEAVES:"),
    ({"ZKMETER_DATABASE_URL": "postgresql+psycopg://zk:hunter2@127.0.0.1:1/zk"},
     "cannot open the database postgresql+psycopg://zk:***@127.0.0.1:1/zk"),
    ({"ZKMETER_DATABASE_URL": "no url hunter2"}, "ZKMETER_DATABASE_URL is not a database URL"),
    ({"ZKMETER_DATABASE_URL": "postgresql+psycopg://postgres:hunter2@127.0.0.1:5432/zk_absent"},
     "the database does not exist"),
    ({"ZKMETER_DATABASE_URL": "postgresql+psycopg://zk_no_role:hunter2@127.0.0.1:5432/postgres"},
     "the server refused the login"),
    ({"ZKMETER_RATE_CARD": "/nonexistent/rates.toml"}, "rate card"),
])
@pytest.mark.parametrize("command", [("serve",), ("epoch", "close")])
def test_start_up_failures_are_one_line_and_exit_2(env, monkeypatch, change, expected,
                                                   command):
    for key, value in change.items():
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)
    code, _, err = invoke(*command)
    assert code == 2, err
    line = one_line(err)
    assert expected in line
    assert "hunter2" not in err and "changeme" not in err  # secrets are never echoed


def test_dev_flag_accepts_the_zero_contract_for_a_development_run(env, monkeypatch):
    monkeypatch.delenv("ZKMETER_CONTRACT_ADDRESS")
    code, _, err = invoke("epoch", "close", "--dev")
    assert code == 1  # past the settlement check: now it is the empty ledger that refuses
    assert "no open epoch" in one_line(err)


def test_an_epoch_with_no_usage_is_refused_then_allowed_explicitly(env):
    from prover.app import build_services
    from prover.metering import UsageRequest
    from tests.accounts import enroll

    services = build_services()
    enroll(services.meter.ledger.engine, services.meter.provider_id, ["alice"])
    services.meter.record(UsageRequest(idempotency_key="k1", user_id="alice", model="gpt-4o",
                                       input_tokens=5, output_tokens=7))
    services.close()
    code, out, err = invoke("epoch", "close", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["users"] == 1 and first["total_units"] > 0
    code, out, err = invoke("epoch", "close", "--json")
    assert code == 1
    assert "no usage since the last close" in one_line(err)
    assert json.loads(out)["ok"] is False
    code, out, err = invoke("epoch", "close", "--allow-empty", "--json")
    assert code == 0, err
    assert json.loads(out) | {"seconds": None} == json.loads(out) | {
        "epoch_id": first["epoch_id"] + 1, "users": 0, "total_units": 0, "seconds": None}


def test_api_key_prints_the_exact_environment_line(tmp_path):
    # a real process with stdout/stderr as pipes (not a terminal): nothing may wrap
    proc = subprocess.run([sys.executable, "-m", "prover.cli", "keys", "api-key"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "40"})
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip()
    assert "\n" not in key and key.startswith("zkm_")
    line = one_line(proc.stderr)
    assert line.startswith("ZKMETER_API_KEY_HASHES='") and line.endswith("'")
    from prover.api.grpc_server import hash_api_key
    from prover.config import Settings

    value = line.removeprefix("ZKMETER_API_KEY_HASHES='").removesuffix("'")
    assert json.loads(value) == {hash_api_key(key): "gateway"}
    # and that value is exactly what the settings accept
    os.environ["ZKMETER_API_KEY_HASHES"] = value
    try:
        assert Settings().api_key_roles() == {hash_api_key(key): "gateway"}
    finally:
        del os.environ["ZKMETER_API_KEY_HASHES"]


def test_user_key_writes_a_private_file_and_prints_the_public_key(tmp_path):
    path = tmp_path / "alice.key"
    code, out, err = invoke("keys", "user-key", "--out", str(path))
    assert code == 0, err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = bytes.fromhex(path.read_text().strip())
    assert bytes(PrivateKey(secret).public_key).hex() == out.strip()
    code, _, err = invoke("keys", "user-key", "--out", str(path))
    assert code == 2 and "already exists" in one_line(err)
    assert bytes.fromhex(path.read_text().strip()) == secret  # not replaced
    code, out, _ = invoke("keys", "user-key", "--out", str(path), "--force", "--json")
    assert code == 0 and json.loads(out)["public_key"] != bytes(PrivateKey(secret).public_key)


def test_serve_refuses_a_port_in_use_in_one_line(env):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "prover.cli", "serve"], capture_output=True, text=True,
            timeout=120, env={**os.environ, "ZKMETER_GRPC_BIND": f"127.0.0.1:{port}"})
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert f"ZKMETER_GRPC_BIND 127.0.0.1:{port}: address already in use" in line


def test_serve_says_when_only_the_chain_commands_node_is_set(monkeypatch):
    from prover.config import Settings
    from prover.startup import startup_lines

    monkeypatch.delenv("ZKMETER_RPC_URL", raising=False)
    monkeypatch.delenv("ZKMETER_CHAIN_RPC_URL", raising=False)
    quiet = [line for line in startup_lines(Settings(), bytes(32)) if "prepaid" in line]
    assert quiet == ["prepaid limits: none (ZKMETER_RPC_URL unset)"]
    monkeypatch.setenv("ZKMETER_CHAIN_RPC_URL", "http://127.0.0.1:8545")
    (line,) = [line for line in startup_lines(Settings(), bytes(32)) if "prepaid" in line]
    assert "ZKMETER_CHAIN_RPC_URL is set but only the chain commands read it" in line
    assert "8545" not in line  # a node URL may carry an API key: never logged
    monkeypatch.setenv("ZKMETER_RPC_URL", "http://127.0.0.1:8545")
    (line,) = [line for line in startup_lines(Settings(), bytes(32)) if "prepaid" in line]
    assert line.startswith("prepaid limits: each account's escrow")
