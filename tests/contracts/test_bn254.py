"""The BN254 library through a test-only harness contract, against circuits' backends."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from circuits.backend import get_backend
from circuits.constants import CURVE_ORDER, FIELD_MODULUS
from circuits.encoding import G1Affine
from circuits.generators import hash_to_g1
from verifier.chain_client import ChainClient, SettlementError, _revert_data, decode_revert

ROOT = Path(__file__).resolve().parents[2]
P, R = FIELD_MODULUS, CURVE_ORDER
G = G1Affine(1, 2)
H = hash_to_g1(b"pedersen.H", 0)


@pytest.fixture(scope="module")
def harness(tmp_path_factory, tester_w3):
    if shutil.which("node") is None or not (ROOT / "contracts" / "node_modules" / "solc").exists():
        pytest.skip("node or contracts/node_modules missing")
    out = tmp_path_factory.mktemp("harness")
    subprocess.run(["node", "build.js", "--harness", str(out)], cwd=ROOT / "contracts",
                   check=True, capture_output=True, timeout=120)
    artifact = json.loads((out / "BN254Harness.json").read_text())
    client = ChainClient(tester_w3)
    receipt = client._send(tester_w3.eth.contract(abi=artifact["abi"],
                                                  bytecode=artifact["bytecode"]).constructor())
    return tester_w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"])


def _error(call) -> SettlementError:
    with pytest.raises(Exception) as info:
        call()
    err = decode_revert(_revert_data(info.value))
    assert err is not None, info.value
    return err


def _ref_mul(point, k):
    be = get_backend("pyecc")
    return tuple(be.to_affine(be.mul(be.from_affine(G1Affine(*point)), k % R)))


def _ref_add(a, b):
    be = get_backend("pyecc")
    return tuple(be.to_affine(be.add(be.from_affine(G1Affine(*a)), be.from_affine(G1Affine(*b)))))


def test_add_and_mul_agree_with_py_ecc(harness):
    for k in (1, 2, 3, 12345, R - 1, 2**200 + 7):
        assert tuple(harness.functions.mul(*G, k).call()) == _ref_mul(G, k)
        assert tuple(harness.functions.mul(*H, k).call()) == _ref_mul(H, k)
    a, b = _ref_mul(G, 99), _ref_mul(H, 1234)
    assert tuple(harness.functions.add(*a, *b).call()) == _ref_add(a, b)
    assert tuple(harness.functions.mul(*G, R).call()) == (0, 0)
    assert tuple(harness.functions.mul(*G, 0).call()) == (0, 0)
    neg = tuple(harness.functions.negate(*a).call())
    assert neg == (a[0], P - a[1])
    assert tuple(harness.functions.add(*a, *neg).call()) == (0, 0)
    assert tuple(harness.functions.negate(0, 0).call()) == (0, 0)


def test_curve_membership(harness):
    assert harness.functions.isOnCurve(*G).call()
    assert harness.functions.isOnCurve(*H).call()
    assert not harness.functions.isOnCurve(0, 0).call()  # the identity is not a point here
    assert not harness.functions.isOnCurve(1, 3).call()
    assert not harness.functions.isOnCurve(1 + P, 2).call()  # same residue, not canonical
    assert not harness.functions.isOnCurve(1, 2 + P).call()


def test_validation_errors(harness):
    err = _error(lambda: harness.functions.validatePoint(1 + P, 2).call())
    assert (err.name, err.args_) == ("CoordinateNotInField", (1 + P,))
    err = _error(lambda: harness.functions.validatePoint(1, P).call())
    assert (err.name, err.args_) == ("CoordinateNotInField", (P,))
    err = _error(lambda: harness.functions.validatePoint(1, 3).call())
    assert (err.name, err.args_) == ("PointNotOnCurve", (1, 3))
    err = _error(lambda: harness.functions.validatePoint(0, 0).call())
    assert err.name == "PointNotOnCurve"
    assert harness.functions.validatePoint(*H).call()
    err = _error(lambda: harness.functions.validateScalar(R).call())
    assert (err.name, err.args_) == ("ScalarNotInField", (R,))
    assert harness.functions.validateScalar(R - 1).call()


def test_invert(harness):
    for a in (1, 2, 7, R - 1, 2**250 % R):
        assert harness.functions.invert(a).call() * a % R == 1


def test_precompile_failures_revert(harness):
    err = _error(lambda: harness.functions.add(1, 3, *G).call())  # off-curve input
    assert (err.name, err.args_) == ("PrecompileFailed", (6,))
    err = _error(lambda: harness.functions.mul(1, 3, 5).call())
    assert (err.name, err.args_) == ("PrecompileFailed", (7,))
    # starved of gas, ECMUL reverts (the verifier relies on this to never answer "invalid")
    assert harness.functions.mulWithGas(*G, 5, 200_000).call()
    assert not harness.functions.mulWithGas(*G, 5, 5_000).call()
