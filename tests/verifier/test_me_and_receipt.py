"""``zkmeter-verify me`` and ``receipt`` on data from the real pipeline: metered events with
text, an epoch closed on the ledger, a user's sealed opening, receipts and kept texts."""

import json

import pytest
from nacl.public import PrivateKey
from typer.testing import CliRunner

from prover.epoch.executor import InlineExecutor
from prover.epoch.service import EpochParams, EpochService
from prover.epoch.storage import EpochStore
from prover.ledger import Ledger
from prover.metering import Meter, UsageRequest
from prover.ratecard import loads_rate_card
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
    store = EpochStore(ledger.engine)
    service = EpochService(
        ledger=ledger, store=store, signing_key=key, executor_factory=InlineExecutor,
        params=EpochParams(chain_id=1, contract=b"\x01" * 20, bit_size=32, min_leaves=8,
                           rate_card_hash=meter.rate_card_hash, epoch_seconds=60))
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


def test_me_for_a_user_without_a_key_with_the_plaintext_opening(world):
    files, _, _ = world
    code, out = me(files, **{"--opening": files["bob_opening"], "--secret-key": None,
                             "--receipts": files["bob_receipts"], "--texts": None})
    assert code == 0, out


def test_me_with_the_wrong_secret_key(world, tmp_path):
    files, _, _ = world
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(bytes(PrivateKey.generate()))
    code, out = me(files, **{"--secret-key": wrong})
    assert code == 1
    assert "opening" in failed(out)
    assert "receipt_chain" not in failed(out)


def test_me_with_a_missing_receipt(world, tmp_path):
    files, receipts, _ = world
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(receipts[:2] + receipts[3:]))
    code, out = me(files, **{"--receipts": partial})
    assert code == 1
    assert failed(out) == {"receipt_chain", "texts"}  # the kept text of seq 3 has no receipt
    code, out = me(files, **{"--receipts": partial, "--texts": None})
    assert failed(out) == {"receipt_chain"}


def test_me_with_someone_elses_receipts(world):
    files, _, _ = world
    code, out = me(files, **{"--receipts": files["bob_receipts"], "--texts": None})
    assert code == 1
    assert "total_matches" in failed(out)


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
