"""Chains for the contract tests: the embedded py-evm chain and a real anvil node."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from prover.chain import ChainClient
from tests.anvil import running_anvil
from verifier.chain import connect

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def anvil_url():
    """A real anvil node on 127.0.0.1 (random free port), stopped after the session."""
    with running_anvil() as url:
        yield url


@pytest.fixture(scope="session")
def tester_w3():
    """The embedded py-evm chain (one per session; tests deploy their own contracts)."""
    return connect(None)


@pytest.fixture(params=["tester", "anvil"])
def client(request, tester_w3) -> ChainClient:
    """A fresh deployment on the embedded chain or on anvil."""
    if request.param == "tester":
        c = ChainClient(tester_w3)
    else:
        c = ChainClient.connect(request.getfixturevalue("anvil_url"))
    c.deploy()
    return c


@pytest.fixture
def anvil_client(anvil_url) -> ChainClient:
    c = ChainClient.connect(anvil_url)
    c.deploy()
    return c


@pytest.fixture
def tester_client(tester_w3) -> ChainClient:
    c = ChainClient(tester_w3)
    c.deploy()
    return c


@pytest.fixture(scope="session")
def harness_artifacts(tmp_path_factory) -> dict:
    """The test-only contracts (contracts/test/*.sol) compiled once, by name."""
    if shutil.which("node") is None or not (ROOT / "contracts" / "node_modules" / "solc").exists():
        pytest.skip("node or contracts/node_modules missing")
    out = tmp_path_factory.mktemp("harness-artifacts")
    subprocess.run(["node", "build.js", "--harness", str(out)], cwd=ROOT / "contracts",
                   check=True, capture_output=True, timeout=300)
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def node_available() -> bool:
    return shutil.which("node") is not None
