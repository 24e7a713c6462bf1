"""BulletproofVerifier against the golden vectors and the Python verifier."""

import json
from pathlib import Path

import pytest
from web3 import Web3

from circuits.constants import CURVE_ORDER, FIELD_MODULUS
from circuits.hashing import keccak256
from circuits.rangeproof import RangeProof, Statement, _decode, _verification_terms
from circuits.transcript import RangeProofContext
from verifier.chain import load_artifact
from verifier.chain_client import ChainClient, SettlementError, _revert_data, decode_revert

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = json.loads((ROOT / "circuits" / "vectors" / "golden_v1.json").read_text())
CTX = GOLDEN["context"]
CASES_32 = [p for p in GOLDEN["proofs"] if p["n"] == 32 and p["m"] == 1]
OTHER_CASES = [p for p in GOLDEN["proofs"] if not (p["n"] == 32 and p["m"] == 1)]


@pytest.fixture(scope="module")
def verifier(tester_w3):
    client = ChainClient(tester_w3)
    artifact = load_artifact("BulletproofVerifier")
    receipt = client._send(tester_w3.eth.contract(abi=artifact.abi,
                                                  bytecode=artifact.bytecode).constructor())
    return tester_w3.eth.contract(address=receipt.contractAddress, abi=artifact.abi)


def _args(case, *, epoch_id=None):
    commitment = bytes.fromhex(case["commitments"][0][2:])
    return (CTX["chain_id"], Web3.to_checksum_address(CTX["contract"]),
            bytes.fromhex(CTX["provider_id"][2:]),
            CTX["epoch_id"] if epoch_id is None else epoch_id,
            int.from_bytes(commitment[:32], "big"), int.from_bytes(commitment[32:], "big"))


def _proof(case, key="proof"):
    return bytes.fromhex(case[key][2:])


def test_golden_cases_exist():
    assert len(CASES_32) == 3
    assert all(len(_proof(c)) == 1057 for c in CASES_32)


@pytest.mark.parametrize("case", CASES_32, ids=lambda c: f"v{c['values'][0]}")
def test_challenges_match_python(verifier, case):
    y, z, x, w, us, c = verifier.functions.challenges(*_args(case), _proof(case)).call()
    expected = case["challenges"]
    assert [y, z, x, w] == [int(expected[k], 16) for k in ("y", "z", "x", "w")]
    assert list(us) == [int(u, 16) for u in expected["u"]]
    # c: the transcript after the last u, then append "a", append "b", challenge "c"
    proof = RangeProof.from_bytes(_proof(case), n=32, m=1)
    ctx = RangeProofContext(chain_id=CTX["chain_id"], contract=bytes.fromhex(CTX["contract"][2:]),
                            provider_id=bytes.fromhex(CTX["provider_id"][2:]),
                            epoch_id=CTX["epoch_id"])
    t = ctx.transcript()
    st = Statement(t, _proof(case), [bytes.fromhex(case["commitments"][0][2:])], 32)
    decoded, points = _decode(st)
    terms = _verification_terms(t, decoded, points, 32, 1)
    assert terms.challenges[:4] == (y, z, x, w)
    t.append_scalar(b"a", proof.a)
    t.append_scalar(b"b", proof.b)
    assert t.challenge_scalar(b"c") == c


@pytest.mark.parametrize("case", CASES_32, ids=lambda c: f"v{c['values'][0]}")
def test_golden_proof_accepted_and_tampered_rejected(verifier, case):
    assert verifier.functions.verify(*_args(case), _proof(case)).call() is True
    assert verifier.functions.verify(*_args(case), _proof(case, "tampered_proof_t_x_plus_1")
                                     ).call() is False


def test_other_context_rejected(verifier):
    case = CASES_32[1]
    assert verifier.functions.verify(*_args(case, epoch_id=CTX["epoch_id"] + 1),
                                     _proof(case)).call() is False


@pytest.mark.parametrize("case", OTHER_CASES, ids=lambda c: f"n{c['n']}m{c['m']}")
def test_other_sizes_rejected_as_malformed(verifier, case):
    assert verifier.functions.verify(*_args(case), _proof(case)).call() is False


def _mutate(proof: bytes, offset: int, word: int) -> bytes:
    return proof[:offset] + word.to_bytes(32, "big") + proof[offset + 32:]


MALFORMED = {
    "version": lambda p: b"\x02" + p[1:],
    "short": lambda p: p[:-1],
    "long": lambda p: p + b"\x00",
    "A.x >= p": lambda p: _mutate(p, 1, FIELD_MODULUS + int.from_bytes(p[1:33], "big")
                                  if int.from_bytes(p[1:33], "big") < 2**256 - FIELD_MODULUS
                                  else FIELD_MODULUS),
    "S off curve": lambda p: _mutate(p, 65 + 32, (int.from_bytes(p[97:129], "big") + 1)
                                     % FIELD_MODULUS),
    "L_5 identity": lambda p: p[:353 + 4 * 128] + bytes(64) + p[353 + 4 * 128 + 64:],
    "t_x >= r": lambda p: _mutate(p, 257, int.from_bytes(p[257:289], "big") + CURVE_ORDER
                                  if int.from_bytes(p[257:289], "big") < 2**256 - CURVE_ORDER
                                  else CURVE_ORDER),
    "b >= r": lambda p: _mutate(p, 1025, CURVE_ORDER),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_proof_is_false_not_a_revert(verifier, name):
    case = CASES_32[0]
    bad = MALFORMED[name](_proof(case))
    assert verifier.functions.verify(*_args(case), bad).call() is False
    with pytest.raises(Exception) as info:
        verifier.functions.challenges(*_args(case), bad).call()
    assert decode_revert(_revert_data(info.value)).name == "MalformedProof"


def test_off_curve_commitment_is_false(verifier):
    case = CASES_32[0]
    args = list(_args(case))
    args[5] = (args[5] + 1) % FIELD_MODULUS
    assert verifier.functions.verify(*args, _proof(case)).call() is False


def test_settlement_error_decoding_names_the_verifier_error():
    err = decode_revert(keccak256(b"MalformedProof()")[:4])
    assert isinstance(err, SettlementError) and err.name == "MalformedProof"
