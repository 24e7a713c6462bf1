"""Evidence files: re-checked by anyone without the payer's key; a file edited to claim
something false proves nothing (exit 0); an unreadable one is bad input (exit 2)."""

import copy
import dataclasses
import json

import pytest
from typer.testing import CliRunner

from tests.verifier.payer_world import account_epoch, index_of, restate
from verifier.cli import app
from verifier.evidence import (
    EVIDENCE_FORMAT,
    Claim,
    EvidenceFormatError,
    check_evidence,
    dumps_evidence,
    make_evidence,
)
from verifier.payer import check_payer
from verifier.statement import StatementEntry

runner = CliRunner()
USAGE = {"alice": 120, "bob": 7, "dave": 33}
USERS = ["alice", "bob", "dave"]


def _hide(entries):
    return restate(entries, index_of(entries, "ghost"), user_id=None, last_hash=bytes(32))


@pytest.fixture(scope="module")
def padded():
    """A provider that bills 40 units on a leaf it calls padding."""
    world = account_epoch(USAGE, totals={**USAGE, "ghost": 40}, states=_hide)
    result = check_payer(world.bundle, world.statement, users=USERS)
    assert [c.kind for c in result.contradictions] == ["padding_with_value"]
    return world, make_evidence(world.bundle, world.statement, result.contradictions)


@pytest.fixture(scope="module")
def overcharged():
    world = account_epoch(USAGE, totals={**USAGE, "alice": 150})
    receipts = [r for chain in world.receipts.values() for r in chain]
    result = check_payer(world.bundle, world.statement, users=USERS, receipts=receipts)
    assert [c.kind for c in result.contradictions] == ["overcharged_user"]
    return world, make_evidence(world.bundle, world.statement, result.contradictions)


def run_evidence(tmp_path, obj, *extra):
    path = tmp_path / "evidence.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    result = runner.invoke(app, ["evidence", str(path), *extra])
    return result.exit_code, result.output


def holds(obj) -> list[bool]:
    return [c.holds for c in check_evidence(json.dumps(obj).encode()).claims]


def test_the_file_carries_only_provider_signed_items(padded):
    world, ev = padded
    assert ev["format"] == EVIDENCE_FORMAT and ev["version"] == 1
    assert set(ev) == {"format", "version", "epoch_id", "account_id", "bundle", "statement",
                       "claims"}
    assert ev["statement"] == "0x" + world.statement.to_bytes().hex()
    assert ev["bundle"] == world.bundle.to_json()
    result = check_evidence(json.dumps(ev).encode())
    assert result.holds and [c.status for c in result.checks] == ["ok"] * 3
    assert result.epoch_id == world.bundle.epoch_id
    assert result.account_id == world.bundle.account_id


def test_the_evidence_cli_confirms_and_explains(padded, tmp_path):
    _, ev = padded
    code, out = run_evidence(tmp_path, ev)
    assert code == 1
    assert "provider-signed data contradicts itself" in " ".join(out.split())
    code, out = run_evidence(tmp_path, ev, "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["holds"] is True
    assert data["claims"][0]["kind"] == "padding_with_value"


def test_a_claim_moved_to_another_entry_does_not_hold(padded, tmp_path):
    world, ev = padded
    edited = copy.deepcopy(ev)
    edited["claims"][0]["entries"] = [index_of(world.entries, "alice")]  # a real user
    code, out = run_evidence(tmp_path, edited, "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["holds"] is False
    assert data["verdict"].startswith("the evidence does not hold")
    edited["claims"][0]["entries"] = [99]
    assert holds(edited) == [False]


def test_claims_the_data_does_not_support_do_not_hold(padded, overcharged):
    world, ev = padded
    alice, bob = index_of(world.entries, "alice"), index_of(world.entries, "bob")
    false_claims = [
        {"kind": "duplicate_user", "entries": [alice, bob]},
        {"kind": "opening_mismatch", "entries": [alice]},
        {"kind": "total_mismatch", "entries": []},
        {"kind": "statement_bundle_mismatch", "entries": []},
        {"kind": "phantom_user", "entries": [alice], "user_id": "bob"},
        {"kind": "overcharged_user", "entries": [alice]},  # no receipts
    ]
    for claim in false_claims:
        edited = copy.deepcopy(ev)
        edited["claims"] = [claim]
        assert holds(edited) == [False], claim
    # alice's receipts against bob's entry are not bob's receipts
    over_world, over = overcharged
    edited = copy.deepcopy(over)
    edited["claims"][0]["entries"] = [index_of(over_world.entries, "bob")]
    assert holds(edited) == [False]


def test_an_edited_statement_or_bundle_proves_nothing(padded, tmp_path):
    world, ev = padded
    ghost = ev["claims"][0]["entries"][0]
    # "repair" the statement: the padding entry now states zero (the signature breaks)
    edited = copy.deepcopy(ev)
    fixed = restate(world.entries, ghost, value=0)
    stmt = dataclasses.replace(world.statement,
                               entries=tuple(StatementEntry(*e) for e in fixed))
    edited["statement"] = "0x" + stmt.to_bytes().hex()
    code, out = run_evidence(tmp_path, edited, "--json")
    data = json.loads(out)
    assert code == 0 and data["holds"] is False
    assert {c["name"]: c for c in data["checks"]}["statement_signature"]["ok"] is False
    edited = copy.deepcopy(ev)
    edited["bundle"]["total"]["value"] += 1
    code, out = run_evidence(tmp_path, edited, "--json")
    assert code == 0 and json.loads(out)["holds"] is False


def test_an_edited_receipt_proves_nothing(overcharged):
    _, ev = overcharged
    assert holds(ev) == [True]
    edited = copy.deepcopy(ev)
    receipt = edited["claims"][0]["receipts"][-1]
    receipt["units"] += 30  # alice "really" used 150: a receipt the provider never signed
    receipt["total_units"] += 30
    receipt.pop("hash")
    with pytest.raises(EvidenceFormatError):  # the JSON form states its own hash
        check_evidence(json.dumps(edited).encode())
    receipt["hash"] = "0x" + "00" * 32
    with pytest.raises(EvidenceFormatError):
        check_evidence(json.dumps(edited).encode())


def test_a_rebuttable_overcharge_says_so():
    def other(entries):
        return restate(entries, index_of(entries, "bob"), last_hash=b"\x42" * 32)
    world = account_epoch(USAGE, totals={**USAGE, "bob": 9}, states=other)
    receipts = [r for chain in world.receipts.values() for r in chain]
    result = check_payer(world.bundle, world.statement, users=USERS, receipts=receipts)
    text = dumps_evidence(world.bundle, world.statement, result.contradictions)
    (claim,) = check_evidence(text.encode()).claims
    assert claim.holds and claim.strength == "rebuttable"


def test_a_statement_of_another_epoch_is_no_mismatch():
    now, later = account_epoch(USAGE), account_epoch(USAGE, epoch_id=10)
    ev = make_evidence(now.bundle, later.statement,
                       [Claim("statement_bundle_mismatch", "claimed")])
    (claim,) = check_evidence(json.dumps(ev).encode()).claims
    assert not claim.holds and "another epoch" in claim.detail


@pytest.mark.parametrize("content", [
    "not json", "[]", "{}", '{"format": "zkmeter-evidence", "version": 2}',
    '{"format": "zkmeter-evidence", "version": 1, "bundle": {}}',
])
def test_unreadable_evidence_exits_2(tmp_path, content):
    code, out = run_evidence(tmp_path, content, "--json")
    assert code == 2
    assert json.loads(out)["ok"] is False and "evidence" in json.loads(out)["error"]


def test_malformed_parts_exit_2(padded, tmp_path):
    _, ev = padded
    for change in ({"statement": "0x1234"}, {"statement": 5}, {"claims": []},
                   {"claims": [{"kind": "made_up"}]},
                   {"claims": [{"kind": "duplicate_user", "entries": ["a"]}]}):
        code, out = run_evidence(tmp_path, {**ev, **change}, "--json")
        assert code == 2, change
        assert json.loads(out)["error"].startswith("evidence")
    result = runner.invoke(app, ["evidence", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "cannot read" in result.output
