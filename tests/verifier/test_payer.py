"""The payer's check: an honest account epoch passes every check; each dishonest provider is
caught by the right named check, with an evidence file `zkmeter-verify evidence` confirms.

Epochs are closed by the real pipeline (real commitments and range proofs under the account
id); receipts are really signed and chained. The CLI is driven black-box through typer."""

import dataclasses
import json

import pytest
from nacl.public import PrivateKey
from typer.testing import CliRunner

from tests.verifier.payer_world import (
    account_epoch,
    index_of,
    restate,
    write_files,
)
from verifier.cli import app
from verifier.payer import PayerInputError, check_payer
from verifier.statement import seal_statement

runner = CliRunner()
USAGE = {"alice": 120, "bob": 7, "dave": 33}
USERS = ["alice", "bob", "dave"]
PAYER_CHECKS = ["structure", "encodings", "signature", "merkle_root", "aggregate",
                "range_proofs", "statement_signature", "statement_matches_bundle",
                "leaves_open", "padding_zero", "users_unique", "users_known", "total",
                "receipts", "chain"]


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout


def payer(files, *extra, **override):
    args = {"--bundle": files["bundle"], "--statement": files["statement"],
            "--secret-key": files["secret"], "--users": files["users"],
            "--receipts": files["receipts"], **override}
    flat = [x for k, v in args.items() if v is not None for x in (k, v)]
    code, out = run("payer", *flat, *extra, "--json")
    return code, json.loads(out)


def failed(out) -> set[str]:
    return {c["name"] for c in out["checks"] if c["status"] == "failed"}


def evidence(path):
    code, out = run("evidence", path, "--json")
    return code, json.loads(out)


def all_receipts(world):
    return [r for chain in world.receipts.values() for r in chain]


@pytest.fixture(scope="module")
def honest():
    return account_epoch(USAGE)


# --- the honest account epoch ---------------------------------------------------------------

def test_an_honest_epoch_passes_every_check(honest):
    result = check_payer(honest.bundle, honest.statement, users=USERS,
                         receipts=all_receipts(honest))
    assert [c.name for c in result.checks] == PAYER_CHECKS
    status = {c.name: c.status for c in result.checks}
    assert status.pop("range_proofs") == status.pop("chain") == "not_checked"
    assert set(status.values()) == {"ok"}, result.checks
    assert result.ok and result.contradictions == []
    assert result.facts["total"] == result.facts["stated_total"] == 160
    assert "3 of 3 users' receipts" in {c.name: c for c in result.checks}["receipts"].detail


def test_the_honest_epoch_through_the_cli(honest, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = write_files(honest, tmp_path, USERS)
    code, out = payer(files)
    assert code == 0, out
    assert out["ok"] is True and failed(out) == set()
    assert out["not_checked"] == ["range_proofs", "chain"]
    assert "zkmeter-verify bundle" in {c["name"]: c for c in out["checks"]}[
        "range_proofs"]["detail"]
    assert "evidence" not in out
    assert not list(tmp_path.glob("evidence-*.json"))  # nothing written when all is well
    code, text = run("payer", "--bundle", files["bundle"], "--statement", files["statement"],
                     "--secret-key", files["secret"], "--users", files["users"])
    assert code == 0
    assert "statement_matches_bundle" in text and "verified" in text
    assert "not checked: range_proofs, receipts, chain" in " ".join(text.split())


def test_a_plaintext_statement_and_a_json_user_list(honest, tmp_path):
    files = write_files(honest, tmp_path, USERS)
    plain = tmp_path / "statement.hex"
    plain.write_text("0x" + honest.statement.to_bytes().hex())
    users = tmp_path / "users.json"
    users.write_text(json.dumps(USERS))
    code, out = payer(files, **{"--statement": plain, "--secret-key": None,
                                "--users": users})
    assert code == 0, out


def test_without_receipts_an_overcharge_is_not_visible_and_said_so():
    world = account_epoch(USAGE, totals={**USAGE, "alice": 150})
    result = check_payer(world.bundle, world.statement, users=USERS)
    receipts = {c.name: c for c in result.checks}["receipts"]
    assert receipts.status == "not_checked" and "--receipts" in receipts.detail
    assert result.ok and not result.contradictions


# --- attacks: the right check fails, the evidence holds -------------------------------------

def _attack(world, tmp_path, users=USERS):
    files = write_files(world, tmp_path, users)
    out_file = tmp_path / "evidence.json"
    code, out = payer(files, **{"--evidence-out": out_file})
    return code, out, out_file


def test_phantom_user(tmp_path):
    world = account_epoch(USAGE, totals={**USAGE, "mallory": 50})
    code, out, path = _attack(world, tmp_path)
    assert code == 1
    assert failed(out) == {"users_known"}
    assert "'mallory'" in {c["name"]: c for c in out["checks"]}["users_known"]["detail"]
    assert out["contradictions"] == ["phantom_user"]
    code, ev = evidence(path)
    assert code == 1
    assert ev["holds"] is True
    assert [(c["kind"], c["holds"], c["strength"]) for c in ev["claims"]] == [
        ("phantom_user", True, "payer_attested")]
    assert "payer's word" in ev["verdict"]


def test_padding_leaf_with_value(tmp_path):
    def hide(entries):  # the provider bills 40 units on a leaf it calls padding
        return restate(entries, index_of(entries, "ghost"), user_id=None,
                       last_hash=bytes(32))
    world = account_epoch(USAGE, totals={**USAGE, "ghost": 40}, states=hide)
    code, out, path = _attack(world, tmp_path)
    assert code == 1
    assert failed(out) == {"padding_zero"}
    assert out["contradictions"] == ["padding_with_value"]
    code, ev = evidence(path)
    assert code == 1
    assert ev["claims"][0]["strength"] == "provider_signed"
    assert ev["verdict"].startswith("provider-signed data contradicts itself")


def test_duplicated_user(tmp_path):
    def twice(entries):  # a second leaf billed to alice, with alice's own receipt hash
        alice = entries[index_of(entries, "alice")]
        return restate(entries, index_of(entries, "alice~2"), user_id="alice",
                       last_hash=alice[4])
    world = account_epoch(USAGE, totals={**USAGE, "alice~2": 120}, states=twice)
    code, out, path = _attack(world, tmp_path)
    assert code == 1
    assert failed(out) == {"users_unique"}
    assert out["contradictions"] == ["duplicate_user"]
    code, ev = evidence(path)
    assert code == 1 and ev["claims"][0]["kind"] == "duplicate_user"


def test_overcharged_user_value_above_the_receipts(tmp_path):
    world = account_epoch(USAGE, totals={**USAGE, "alice": 150})  # receipts end at 120
    code, out, path = _attack(world, tmp_path)
    assert code == 1
    assert failed(out) == {"receipts"}
    detail = {c["name"]: c for c in out["checks"]}["receipts"]["detail"]
    assert "'alice'" in detail and "120" in detail and "150" in detail
    assert out["contradictions"] == ["overcharged_user"]
    code, ev = evidence(path)
    assert code == 1
    # the statement names alice's last receipt itself, so this is the provider's own word
    assert ev["claims"][0]["strength"] == "provider_signed"


def test_overcharged_user_with_a_hash_that_is_not_the_last_receipts(tmp_path):
    def other_hash(entries):
        return restate(entries, index_of(entries, "bob"), last_hash=b"\x42" * 32)
    world = account_epoch(USAGE, totals={**USAGE, "bob": 9}, states=other_hash)
    code, out, path = _attack(world, tmp_path)
    assert code == 1
    assert failed(out) == {"receipts"}
    code, ev = evidence(path)
    assert code == 1
    # the provider could still answer with later receipts it signed: said so
    assert ev["claims"][0]["strength"] == "rebuttable"
    assert "unless the provider shows" in ev["claims"][0]["detail"]


def test_a_stated_hash_that_differs_at_the_right_value_fails_receipts(tmp_path):
    def other_hash(entries):
        return restate(entries, index_of(entries, "dave"), last_hash=b"\x07" * 32)
    world = account_epoch(USAGE, states=other_hash)
    result = check_payer(world.bundle, world.statement, users=USERS,
                         receipts=all_receipts(world))
    assert {c.name for c in result.checks if c.status == "failed"} == {"receipts"}
    assert [c.kind for c in result.contradictions] == ["overcharged_user"]


def test_an_entry_that_does_not_open_its_leaf_and_a_wrong_total():
    def lie(entries):  # bob's entry states 1 unit less than his leaf commits
        i = index_of(entries, "bob")
        return restate(entries, i, value=entries[i][2] - 1)
    world = account_epoch(USAGE, states=lie)
    result = check_payer(world.bundle, world.statement, users=USERS)
    failing = {c.name: c for c in result.checks if c.status == "failed"}
    assert set(failing) == {"leaves_open", "total"}
    assert failing["leaves_open"].failing_leaves == (index_of(world.entries, "bob"),)
    assert [c.kind for c in result.contradictions] == ["opening_mismatch", "total_mismatch"]


# --- the statement itself --------------------------------------------------------------------

def test_a_statement_sealed_to_another_key_is_bad_input(honest, tmp_path):
    files = write_files(honest, tmp_path, USERS)
    files["statement"].write_bytes(
        seal_statement(honest.statement, bytes(PrivateKey.generate().public_key)))
    code, out = payer(files)
    assert code == 2
    assert "does not open with this key" in out["error"]
    result = runner.invoke(app, ["payer", "--bundle", str(files["bundle"]), "--statement",
                                 str(files["statement"]), "--secret-key", str(files["secret"]),
                                 "--users", str(files["users"])])
    assert result.exit_code == 2
    assert "sealed to another payer" in " ".join(result.output.split())


def test_a_tampered_statement_signature_fails_statement_signature(honest, tmp_path):
    sig = honest.statement.signature
    tampered = dataclasses.replace(honest.statement, signature=sig[:-1] + bytes([sig[-1] ^ 1]))
    files = write_files(honest, tmp_path, USERS)
    files["statement"].write_bytes(seal_statement(tampered, bytes(honest.payer_key.public_key)))
    code, out = payer(files, **{"--evidence-out": tmp_path / "e.json"})
    assert code == 1
    assert failed(out) == {"statement_signature"}
    assert "evidence" not in out and not (tmp_path / "e.json").exists()  # nothing provable


def test_a_statement_of_another_bundle_of_the_same_epoch(honest, tmp_path):
    other = account_epoch({**USAGE, "bob": 8})  # the provider signed two different closes
    files = write_files(honest, tmp_path, USERS)
    files["statement"].write_bytes(other.sealed)
    code, out = payer(files, **{"--evidence-out": tmp_path / "e.json"})
    assert code == 1
    assert "statement_matches_bundle" in failed(out)
    assert {c["name"]: c for c in out["checks"]}["leaves_open"]["status"] == "not_checked"
    assert out["contradictions"] == ["statement_bundle_mismatch"]
    code, ev = evidence(tmp_path / "e.json")
    assert code == 1 and ev["claims"][0]["kind"] == "statement_bundle_mismatch"


def test_a_statement_of_another_epoch_fails_without_evidence(honest, tmp_path):
    later = account_epoch(USAGE, epoch_id=10)
    result = check_payer(honest.bundle, later.statement, users=USERS)
    match = {c.name: c for c in result.checks}["statement_matches_bundle"]
    assert match.status == "failed" and "epoch" in match.detail
    assert result.contradictions == []  # two epochs: a mix-up, not a contradiction


# --- bad input ---------------------------------------------------------------------------

def test_receipts_of_another_epoch_are_bad_input(honest):
    later = account_epoch(USAGE, epoch_id=10)
    with pytest.raises(PayerInputError, match="epoch 10"):
        check_payer(honest.bundle, honest.statement, users=USERS,
                    receipts=all_receipts(later))


def test_receipts_with_a_gap_are_bad_input(honest):
    gappy = [r for r in all_receipts(honest) if not (r.user_id == "alice" and r.seq == 2)]
    with pytest.raises(PayerInputError, match="miss seq 2"):
        check_payer(honest.bundle, honest.statement, users=USERS, receipts=gappy)


@pytest.mark.parametrize("which, content, message", [
    ("users", b"[1, 2]", "users"),
    ("users", b"", "empty"),
    ("secret", b"abcd", "32 bytes"),
    ("statement", b"garbage", "statement"),
    ("bundle", b"{}", "missing field"),
])
def test_unusable_inputs_exit_2(honest, tmp_path, which, content, message):
    files = write_files(honest, tmp_path, USERS)
    files[which].write_bytes(content)
    code, out = payer(files)
    assert code == 2
    assert message in out["error"]


def test_bad_receipt_files_and_half_a_chain_option_exit_2(honest, tmp_path):
    files = write_files(honest, tmp_path, USERS)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    code, out = payer(files, **{"--receipts": bad})
    assert code == 2 and "receipts" in out["error"]
    code, out = payer(files, "--rpc-url", "http://127.0.0.1:1")
    assert code == 2 and "--contract" in out["error"]
    code, out = payer(files, **{"--bundle": tmp_path / "missing.json"})
    assert code == 2 and "cannot read" in out["error"]


def test_an_unreachable_chain_is_bad_input(honest, tmp_path):
    files = write_files(honest, tmp_path, USERS)
    code, out = payer(files, "--rpc-url", "http://127.0.0.1:1", "--contract", "0x" + "11" * 20)
    assert code == 2
    assert "127.0.0.1:1" in out["error"]
