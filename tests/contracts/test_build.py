"""The committed artifacts are what the pinned solc makes of the sources; the Solidity
generator constants are the ones circuits/generators.py derives."""

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from circuits.constants import BP_G_LABEL, BP_H_LABEL, BP_U_LABEL, PEDERSEN_H_LABEL
from circuits.generators import hash_to_g1
from verifier.chain import load_artifact

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "contracts"
GOLDEN = json.loads((ROOT / "circuits" / "vectors" / "golden_v1.json").read_text())
GENS_SOL = (CONTRACTS / "src" / "BulletproofGenerators.sol").read_text()


def _solc_installed() -> bool:
    return shutil.which("node") is not None and (CONTRACTS / "node_modules" / "solc").exists()


@pytest.mark.skipif(not _solc_installed(), reason="node or contracts/node_modules missing")
def test_artifacts_are_byte_identical_to_a_fresh_build(tmp_path):
    subprocess.run(["node", "build.js", "--out", str(tmp_path)], cwd=CONTRACTS, check=True,
                   capture_output=True, timeout=120)
    committed = sorted(p.name for p in (CONTRACTS / "artifacts").glob("*.json"))
    fresh = sorted(p.name for p in tmp_path.glob("*.json"))
    assert committed == fresh == ["BulletproofVerifier.json", "ZkMeterSettlement.json",
                                  "ZkMeterTestToken.json"]
    for name in committed:
        assert (tmp_path / name).read_bytes() == (CONTRACTS / "artifacts" / name).read_bytes(), name


def test_pinned_compiler_and_prague():
    lock = json.loads((CONTRACTS / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/solc"]["version"] == "0.8.37"
    assert lock["packages"]["node_modules/@foundry-rs/anvil"]["version"] == "1.7.1"
    assert lock["packages"]["node_modules/@openzeppelin/contracts"]["version"] == "5.7.0"
    pkg = json.loads((CONTRACTS / "package.json").read_text())
    assert pkg["devDependencies"] == {"@foundry-rs/anvil": "1.7.1",
                                      "@openzeppelin/contracts": "5.7.0", "solc": "0.8.37"}
    for name in ("BulletproofVerifier", "ZkMeterSettlement"):
        artifact = json.loads((CONTRACTS / "artifacts" / f"{name}.json").read_text())
        assert artifact["compiler"]["version"].startswith("0.8.37+")
        assert artifact["compiler"]["settings"]["evmVersion"] == "prague"
    for src in (CONTRACTS / "src").glob("*.sol"):
        assert "pragma solidity 0.8.37;" in src.read_text(), src.name


def test_deployable_code_fits_eip170():
    """Mainnet refuses runtime code over 24,576 bytes (EIP-170)."""
    for name in ("BulletproofVerifier", "ZkMeterSettlement", "ZkMeterTestToken"):
        assert len(load_artifact(name).deployed_bytecode) <= 24_576, name


def test_generator_constants_rederived_from_circuits():
    spec = importlib.util.spec_from_file_location("gen", CONTRACTS / "generate_constants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == GENS_SOL


def _const(name: str) -> int:
    return int(re.search(rf"{name} = (0x[0-9a-f]{{64}});", GENS_SOL).group(1), 16)


def _immediate_points() -> list[tuple[int, int]]:
    """(x, y) of every term of the unrolled vectorTerms, in order: G_0, H_0, G_1, H_1, ..."""
    xs = [int(w, 16) for w in re.findall(r"mstore\(t, (0x[0-9a-f]{64})\)", GENS_SOL)]
    ys = [int(w, 16) for w in re.findall(r"mstore\(add\(t, 0x20\), (0x[0-9a-f]{64})\)", GENS_SOL)]
    return list(zip(xs, ys, strict=True))


def _golden_point(text: str) -> tuple[int, int]:
    raw = bytes.fromhex(text[2:])
    return int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")


def test_generator_constants_match_the_golden_vectors():
    gens = GOLDEN["generators"]
    assert (_const("H_X"), _const("H_Y")) == _golden_point(gens["H"])
    assert (_const("U_X"), _const("U_Y")) == _golden_point(gens["U"])
    g = [_golden_point(p) for p in gens["G_i"][:32]]
    h = [_golden_point(p) for p in gens["H_i"][:32]]
    points = _immediate_points()
    assert points[0::2] == g
    assert points[1::2] == h
    # and the golden vectors themselves are hash_to_g1's
    assert hash_to_g1(PEDERSEN_H_LABEL, 0) == _golden_point(gens["H"])
    assert hash_to_g1(BP_U_LABEL, 0) == _golden_point(gens["U"])
    assert hash_to_g1(BP_G_LABEL, 31) == g[31]
    assert hash_to_g1(BP_H_LABEL, 31) == h[31]


def test_abi_has_every_custom_error_the_tests_name():
    names = {i["name"] for i in load_artifact("ZkMeterSettlement").abi if i["type"] == "error"}
    for expected in ("InvalidCommitment", "TagsNotIncreasing", "ScalarNotInField",
                     "PrecompileFailed", "TotalMismatch", "RangeProofValid", "NotOperator",
                     "ChallengeWindowClosed", "EpochNotFinalizable", "EpochNotPending",
                     "NoChallengeCommitment", "DemandsOpen", "InsufficientBond",
                     "InsufficientEscrow", "UnsupportedToken", "ReentrancyGuardReentrantCall",
                     "SafeERC20FailedOperation"):
        assert expected in names
