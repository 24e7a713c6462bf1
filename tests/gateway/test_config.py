"""The gateway's configuration: what it refuses, and how ``zkmeter gateway`` says so."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from prover.api.grpc_server import hash_api_key
from prover.errors import ConfigError
from prover.gateway.config import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
GOOD = {hash_api_key("zkm_caller"): "alice"}


def test_caller_keys_must_be_hashes():
    with pytest.raises(ValidationError, match="sha256"):
        GatewaySettings(caller_keys={"zkm_plain-key": "alice"})
    with pytest.raises(ValidationError, match="user id"):
        GatewaySettings(caller_keys={hash_api_key("k"): ""})
    assert GatewaySettings(caller_keys=GOOD).all_caller_keys() == GOOD


def test_checked_names_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="upstream"):
        GatewaySettings(zkmeter_api_key="zkm_x", caller_keys=GOOD).checked()
    with pytest.raises(ConfigError, match="ZKMETER_GATEWAY_ZKMETER_API_KEY"):
        GatewaySettings(upstream_url="http://127.0.0.1:1/v1", caller_keys=GOOD).checked()
    with pytest.raises(ConfigError, match="caller keys"):
        GatewaySettings(upstream_url="http://127.0.0.1:1/v1", zkmeter_api_key="k").checked()
    bad = tmp_path / "keys.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        GatewaySettings(caller_keys_file=bad).all_caller_keys()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    assert GatewaySettings(caller_keys_file=good).all_caller_keys() == GOOD


def test_secrets_are_not_in_the_repr():
    settings = GatewaySettings(upstream_api_key="sk-upstream-secret-42",
                               zkmeter_api_key="zkm_secret-43")
    assert "secret-42" not in repr(settings) and "secret-43" not in repr(settings)


@pytest.mark.parametrize("upstream", ["ftp://host/v1", "http://127.0.0.1:9/v1"])
def test_gateway_command_exits_2_on_bad_configuration(upstream, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{ROOT / 'proto'}"}
    proc = subprocess.run([sys.executable, "-m", "prover.cli", "gateway", "--upstream",
                           upstream], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2
    assert "configuration error" in proc.stderr
    assert "Traceback" not in proc.stderr
