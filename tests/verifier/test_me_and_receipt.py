"""``zkmeter-verify me`` and ``receipt`` on data from the real pipeline: metered events with
text, an epoch closed on the ledger, a user's sealed opening, receipts and kept texts."""

import json
from pathlib import Path

import pytest
from nacl.public import PrivateKey
from typer.testing import CliRunner

from prover.epoch.executor import InlineExecutor
from prover.epoch.service import EpochParams, EpochService
from prover.epoch.storage import EpochStore
from prover.ledger import Ledger
from prover.metering import Meter, UsageRequest
from prover.ratecard import loads_rate_card
from tests.accounts import OPERATOR, PAYER, enroll
from verifier.bundle import parse_bundle
from verifier.cli import app
from verifier.tokens import Message

RATES = """
version = 1
unit = "micro-usd"

[models."gpt-4o"]
input = 3
cached_input = 1
output = 10
reasoning = 10
"""
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from nacl.signing import SigningKey

    tmp = tmp_path_factory.mktemp("me")
    key = SigningKey.generate()
    ledger = Ledger.from_url(f"sqlite:///{tmp / 'l.sqlite'}", provider_id=bytes(key.verify_key))
    meter = Meter(ledger=ledger, signing_key=key, rate_card=loads_rate_card(RATES))
    enroll(ledger.engine, ledger.provider_id, ["alice", "bob"])
    store = EpochStore(ledger.engine)
    service = EpochService(
        ledger=ledger, store=store, signing_key=key, executor_factory=InlineExecutor,
        params=EpochParams(chain_id=1, contract=b"\x01" * 20, bit_size=32, min_leaves=8,
                           rate_card_hash=meter.rate_card_hash, epoch_seconds=60,
                           operator=OPERATOR))
    alice = PrivateKey.generate()
    store.register_user_key("alice", bytes(alice.public_key))
    texts = []
    for i in range(5):
        messages = [Message("user", f"alice's question number {i}")]
        completion = f"the answer is {i * 7}"
        meter.record(UsageRequest(idempotency_key=f"a{i}", user_id="alice", model="gpt-4o",
                                  messages=messages, completion=completion,
                                  reasoning_tokens=i))
        texts.append({"seq": i + 1, "messages": [{"role": "user", "content": m.content}
                                                 for m in messages], "completion": completion})
        meter.record(UsageRequest(idempotency_key=f"b{i}", user_id="bob", model="gpt-4o",
                                  input_tokens=40 + i, output_tokens=9))
    epoch_id = ledger.current_epoch().id
    closed = service.close()
    files = {
        "bundle": tmp / "bundle.json", "opening": tmp / "opening.hex",
        "secret": tmp / "secret.key", "receipts": tmp / "receipts.json",
        "texts": tmp / "texts.json", "bob_receipts": tmp / "bob.json",
        "bob_opening": tmp / "bob_opening.bin",
    }
    files["bundle"].write_bytes(store.bundle_json(epoch_id))
    tag = closed.openings["alice"].tag
    files["opening"].write_text(store.sealed_opening(epoch_id, tag).hex())
    files["secret"].write_bytes(bytes(alice))
    receipts = [r.to_json() for r in ledger.receipts(epoch_id, "alice")]
    files["receipts"].write_text(json.dumps(receipts))
    files["texts"].write_text(json.dumps(texts))
    files["bob_receipts"].write_text(json.dumps(
        [r.to_json() for r in ledger.receipts(epoch_id, "bob")]))
    files["bob_opening"].write_bytes(store.private_opening(epoch_id, "bob"))
    files["receipt"] = tmp / "one.json"
    files["receipt"].write_text(json.dumps(receipts[2]))
    files["openings"] = tmp / "openings.json"
    files["openings"].write_text(json.dumps(
        {"0x" + t.hex(): "0x" + store.sealed_opening(epoch_id, t).hex()
         for t in (leaf.tag for leaf in closed.bundle.leaves)}))
    # alice keeps using the service: her receipts of the next epoch
    meter.record(UsageRequest(idempotency_key="a-next", user_id="alice", model="gpt-4o",
                              input_tokens=3, output_tokens=4))
    files["next_receipts"] = tmp / "next.json"
    files["next_receipts"].write_text(json.dumps(
        [r.to_json() for r in ledger.receipts(epoch_id + 1, "alice")]))
    files["signing_key"] = key
    yield files, receipts, bytes(key.verify_key)
    ledger.dispose()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout


def me(files, **override):
    args = {"--opening": files["opening"], "--secret-key": files["secret"],
            "--receipts": files["receipts"], "--bundle": files["bundle"],
            "--texts": files["texts"], **override}
    flat = [x for k, v in args.items() if v is not None for x in (k, v)]
    code, out = run("me", *flat, "--json")
    return code, json.loads(out)


def failed(out) -> set[str]:
    return {c["name"] for c in out["checks"] if not c["ok"]}


def test_me_all_checks_pass(world):
    files, receipts, _ = world
    code, out = me(files)
    assert code == 0, out
    assert out["committed_units"] == out["receipted_units"] == receipts[-1]["total_units"]
    names = {c["name"] for c in out["checks"]}
    assert {"signature", "opening", "merkle_path", "commitment", "own_range_proof",
            "receipt_chain", "total_matches", "texts"} <= names
    # the billing account the usage was billed to (the bundle's, issue 14)
    bundle = parse_bundle(Path(files["bundle"]).read_bytes())
    assert out["account"] == {"account_id": "0x" + bundle.account_id.hex(),
                              "payer": "0x" + PAYER.hex(), "asset": "ETH"}


def test_me_for_a_user_without_a_key_with_the_plaintext_opening(world):
    files, _, _ = world
    code, out = me(files, **{"--opening": files["bob_opening"], "--secret-key": None,
                             "--receipts": files["bob_receipts"], "--texts": None})
    assert code == 0, out


def test_me_with_the_wrong_secret_key_is_a_mix_up(world, tmp_path):
    files, _, _ = world
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(bytes(PrivateKey.generate()))
    code, out = me(files, **{"--secret-key": wrong})
    assert code == 2
    assert "cannot be opened with this key" in out["error"]


def test_me_finds_its_own_opening_in_the_published_list(world):
    files, receipts, _ = world
    code, out = me(files, **{"--opening": None, "--openings": files["openings"],
                             "--user-id": "alice"})
    assert code == 0, out
    assert out["committed_units"] == receipts[-1]["total_units"]
    assert out["user_id"] == "alice"


def test_me_with_a_key_that_opens_nothing_in_the_list(world, tmp_path):
    files, _, _ = world
    wrong = tmp_path / "wrong.key"
    wrong.write_text(bytes(PrivateKey.generate()).hex())
    code, out = me(files, **{"--opening": None, "--openings": files["openings"],
                             "--secret-key": wrong})
    assert code == 1  # nothing published for this key: the provider's side, not a mix-up
    assert "none of the 8 published sealed openings" in out["checks"][0]["detail"]


def test_me_with_a_receipt_missing_in_the_middle(world, tmp_path):
    files, receipts, _ = world
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(receipts[:2] + receipts[3:]))
    code, out = me(files, **{"--receipts": partial})
    assert code == 2
    assert "missing seq 3" in out["error"] and "holds 1-2, 4-5" in out["error"]


def test_me_with_the_last_receipt_missing(world, tmp_path):
    files, receipts, _ = world
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(receipts[:-1]))
    code, out = me(files, **{"--receipts": partial, "--texts": None})
    assert code == 2
    assert "lacks the last receipts (seq > 4)" in out["error"]
    assert "total_matches" in failed(out)


def test_me_with_someone_elses_receipts(world):
    files, _, _ = world
    code, out = me(files, **{"--receipts": files["bob_receipts"], "--texts": None,
                             "--user-id": "alice"})
    assert code == 2
    assert "user 'bob''s, not 'alice''s" in out["error"]


def test_me_with_receipts_of_another_epoch(world):
    files, _, _ = world
    code, out = me(files, **{"--receipts": files["next_receipts"], "--texts": None})
    assert code == 2
    assert "receipts are for epoch 2, the bundle is epoch 1" in out["error"]


def test_me_with_a_receipt_not_signed_by_the_provider(world, tmp_path):
    from nacl.signing import SigningKey

    from verifier.receipts import receipt_from_json, with_signature

    files, receipts, _ = world
    original = receipt_from_json(receipts[1])
    forged = with_signature(original, SigningKey.generate().sign(
        original.signed_bytes()).signature)  # same fields, signed by someone else
    path = tmp_path / "forged.json"
    path.write_text(json.dumps([receipts[0], forged.to_json(), *receipts[2:]]))
    code, out = me(files, **{"--receipts": path, "--texts": None})
    assert code == 2
    assert "seq 2 is not signed by the bundle's provider key" in out["error"]


def test_me_with_a_signed_receipt_beyond_the_commitment_is_evidence(world, tmp_path):
    """The provider signed a receipt whose total the commitment does not reach: both are
    provider-signed, so this is a real contradiction (exit 1), not a mix-up."""
    import dataclasses

    from verifier.receipts import receipt_from_json, sign_receipt

    files, receipts, _ = world
    last = receipt_from_json(receipts[-1])
    extra = sign_receipt(dataclasses.replace(
        last, seq=last.seq + 1, prev_hash=last.hash(), units=7,
        total_units=last.total_units + 7, signature=b""), files["signing_key"])
    path = tmp_path / "more.json"
    path.write_text(json.dumps([*receipts, extra.to_json()]))
    code, out = me(files, **{"--receipts": path, "--texts": None})
    assert code == 1
    assert failed(out) == {"total_matches"}
    assert "evidence" in {c["name"]: c for c in out["checks"]}["total_matches"]["detail"]


def test_me_with_an_altered_text(world, tmp_path):
    files, _, _ = world
    texts = json.loads(files["texts"].read_text())
    texts[1]["completion"] += "!"
    altered = tmp_path / "texts.json"
    altered.write_text(json.dumps(texts))
    code, out = me(files, **{"--texts": altered})
    assert code == 1
    assert failed(out) == {"texts"}


@pytest.mark.parametrize("content", ["not json", "[]", '[{"seq": 1}]'])
def test_me_with_malformed_receipts_is_bad_input(world, tmp_path, content):
    files, _, _ = world
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, _ = run("me", "--opening", files["opening"], "--secret-key", files["secret"],
                  "--receipts", bad, "--bundle", files["bundle"], "--json")
    assert code == 2


def test_receipt_accepts_a_list(world, tmp_path):
    files, receipts, provider = world
    code, out = run("receipt", files["receipts"], "--provider-key", provider.hex(), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["ok"] and data["receipts"] == len(receipts) and data["not_checked"] == []
    code, out = run("receipt", files["receipts"], "--json")  # no pinned key: said so
    data = json.loads(out)
    assert code == 0 and data["not_checked"] == ["provider_key"]
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([*receipts, {"seq": 1}]))
    code, out = run("receipt", mixed, "--json")
    assert code == 2 and "receipt [5]" in json.loads(out)["error"]


def test_receipt_ok_and_wrong_key(world):
    files, _, provider = world
    code, out = run("receipt", files["receipt"], "--provider-key", provider.hex(), "--json")
    assert code == 0 and json.loads(out)["ok"]
    code, out = run("receipt", files["receipt"], "--provider-key", "11" * 32, "--json")
    assert code == 1
    assert not {c["name"]: c["ok"] for c in json.loads(out)["checks"]}["signature"]


def test_receipt_tampered_is_bad_input(world, tmp_path):
    _files, receipts, provider = world
    tampered = dict(receipts[2], units=receipts[2]["units"] + 1)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(tampered))
    code, _ = run("receipt", path, "--provider-key", provider.hex(), "--json")
    assert code == 2  # the stated hash no longer matches: malformed, not a signature question
