"""Shared by the journey tests: a real closed epoch written out as the files each role holds
(the public bundle and openings, a user's key, receipts and kept texts)."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from prover.epoch.executor import InlineExecutor
from prover.epoch.service import EpochParams, EpochService
from prover.epoch.storage import EpochStore
from prover.ledger import Ledger
from prover.metering import Meter, UsageRequest
from prover.ratecard import loads_rate_card
from tests.accounts import OPERATOR, enroll
from tests.anvil import running_anvil
from verifier.keys import new_user_key
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


@dataclass
class EpochFiles:
    """What each role has after an epoch was closed and published."""

    provider_key: str  # hex Ed25519 public key
    bundle: Path
    openings: Path
    secret_key: Path  # alice's X25519 secret key (0600)
    receipts: Path
    texts: Path
    one_receipt: Path
    payer_key: Path  # the payer's X25519 secret key (0600)
    statement: Path  # the account's sealed payer statement
    users: Path  # the payer's list of its users


@pytest.fixture(scope="session")
def epoch_files(tmp_path_factory) -> EpochFiles:
    tmp = tmp_path_factory.mktemp("journey-epoch")
    key = SigningKey.generate()
    ledger = Ledger.from_url(f"sqlite:///{tmp / 'l.sqlite'}", provider_id=bytes(key.verify_key))
    meter = Meter(ledger=ledger, signing_key=key, rate_card=loads_rate_card(RATES))
    store = EpochStore(ledger.engine)
    service = EpochService(
        ledger=ledger, store=store, signing_key=key, executor_factory=InlineExecutor,
        params=EpochParams(chain_id=31337, contract=b"\x5e" * 20, bit_size=32, min_leaves=8,
                           rate_card_hash=meter.rate_card_hash, epoch_seconds=60,
                           operator=OPERATOR))
    secret = tmp / "alice.key"
    payer_key = tmp / "payer.key"
    account_id = enroll(ledger.engine, ledger.provider_id, ["alice", "bob"],
                        payer_key=new_user_key(payer_key))
    store.register_user_key("alice", new_user_key(secret))
    texts = []
    for i in range(4):
        messages = [Message("user", f"alice asks question {i}")]
        completion = f"answer number {i}"
        meter.record(UsageRequest(idempotency_key=f"a{i}", user_id="alice", model="gpt-4o",
                                  messages=messages, completion=completion))
        texts.append({"seq": i + 1, "messages": [{"role": "user", "content": m.content}
                                                 for m in messages], "completion": completion})
        meter.record(UsageRequest(idempotency_key=f"b{i}", user_id="bob", model="gpt-4o",
                                  input_tokens=10 + i, output_tokens=3))
    epoch_id = ledger.current_epoch().id
    closed = service.close()
    files = EpochFiles(
        provider_key=bytes(key.verify_key).hex(), bundle=tmp / "bundle.json",
        openings=tmp / "openings.json", secret_key=secret, receipts=tmp / "receipts.json",
        texts=tmp / "texts.json", one_receipt=tmp / "receipt.json", payer_key=payer_key,
        statement=tmp / "statement.bin", users=tmp / "users.txt")
    files.statement.write_bytes(store.statement(epoch_id, account_id) or b"")
    files.users.write_text("alice\nbob\n")
    files.bundle.write_bytes(store.bundle_json(epoch_id))
    files.openings.write_text(json.dumps(
        {"0x" + leaf.tag.hex(): "0x" + store.sealed_opening(epoch_id, leaf.tag).hex()
         for leaf in closed.bundle.leaves}))
    receipts = [r.to_json() for r in ledger.receipts(epoch_id, "alice")]
    files.receipts.write_text(json.dumps(receipts))
    files.one_receipt.write_text(json.dumps(receipts[0]))
    files.texts.write_text(json.dumps(texts))
    ledger.dispose()
    return files


@pytest.fixture(scope="session")
def anvil():
    """A real anvil node (Prague, the EVM the artifacts target) on a free loopback port."""
    with running_anvil() as url:
        yield url


def chain_bundle(*, chain_id: int, contract: str, epoch_id: int, totals: dict[str, int],
                 signing_key: SigningKey, operator: str, payer: str):
    """A real closed epoch's bundle bound to ``contract`` and to the ETH billing account of
    ``payer`` with the provider that ``operator`` registered (prover.epoch.close)."""
    from circuits.transcript import RangeProofContext
    from prover.epoch.close import EpochInputs, MemoryLeafStore, close_epoch
    from verifier.account import AccountBlock

    account = AccountBlock(operator=bytes.fromhex(operator[2:]), payer=bytes.fromhex(payer[2:]),
                           asset=bytes(20))
    ctx = RangeProofContext(chain_id=chain_id, contract=bytes.fromhex(contract[2:]),
                            provider_id=account.account_id(bytes(signing_key.verify_key)),
                            epoch_id=epoch_id)
    inputs = EpochInputs(ctx=ctx, window_start=1_700_000_000, window_end=1_700_003_600,
                         rate_card_hash=bytes(32), bit_size=32, totals=totals, min_leaves=4,
                         account=account)
    return close_epoch(inputs, secret=b"journey test master secret, 32+ bytes",
                       signing_key=signing_key, store=MemoryLeafStore()).bundle
