"""Every custom error of every committed contract artifact reads as a sentence
(verifier/chain_errors.py), and times read as dates with "in N s"."""

import json
from pathlib import Path

import pytest

from verifier.chain_errors import SENTENCES, ChainClock, explain

ARTIFACTS = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"
# the BN254 library's errors reach an ABI only where used; prover/chain.py decodes them all
BN254 = {"CoordinateNotInField": ["x"], "PointNotOnCurve": ["x", "y"],
         "ScalarNotInField": ["scalar"], "PrecompileFailed": ["precompile"]}


def abi_errors() -> dict[str, list[tuple[str, str]]]:
    found = {name: [(arg, "uint256") for arg in args] for name, args in BN254.items()}
    for path in sorted(ARTIFACTS.glob("*.json")):
        for item in json.loads(path.read_text())["abi"]:
            if item["type"] == "error":
                found[item["name"]] = [(i["name"], i["type"]) for i in item["inputs"]]
    return found


def sample(kind: str):
    if kind == "bytes32":
        return bytes(range(32))
    if kind == "address":
        return "0x" + "ab" * 20
    return 1_700_000_000 if kind.startswith("uint") else 1


def test_the_artifacts_have_errors_to_explain():
    assert len(abi_errors()) > 30


@pytest.mark.parametrize("name", sorted(abi_errors()))
def test_every_error_of_the_artifacts_has_a_sentence(name):
    assert name in SENTENCES, f"{name} has no sentence in verifier/chain_errors.py"
    inputs = abi_errors()[name]
    clock = ChainClock(1_699_999_000, 1_700_000_000)
    text = explain(name, [sample(t) for _, t in inputs], [n for n, _ in inputs], clock)
    assert text[0].isupper() or text[0].isdigit() or text.startswith("0x"), text
    assert text.rstrip().endswith((".", ")")), text
    assert "None" not in text and "{" not in text, text
    assert name not in text  # a sentence, not the raw error


def test_a_time_reads_as_a_date_and_in_n_seconds_with_the_stale_block_note():
    names = ["accountId", "epochId", "readyAt"]
    clock = ChainClock(latest_block_time=1_700_000_000, wall_time=1_700_000_500)
    text = explain("EpochNotFinalizable", [bytes(32), 7, 1_700_003_600], names, clock)
    assert "Epoch 7 of account" in text
    assert "2023-11-14 23:13:20 UTC (in 3600 s; the chain's latest block is at " \
        "2023-11-14 22:13:20 UTC)" in text
    assert "latest block is 500 s old" in text and "mined no block since" in text
    fresh = explain("EpochNotFinalizable", [bytes(32), 7, 1_700_003_600], names,
                    ChainClock(1_700_000_000, 1_700_000_002))
    assert "mined no block" not in fresh
    past = explain("ChallengeWindowClosed", [bytes(32), 7, 1_699_999_000], names,
                   ChainClock(1_700_000_000, 1_700_000_000))
    assert "(1000 s ago" in past


def test_an_unknown_error_still_reads_with_its_arguments():
    assert explain("SomethingNew", [3], ["count"]) == \
        "The contract refused with SomethingNew(count=3)."
