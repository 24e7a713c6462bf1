"""One epoch, several billing accounts (issue 14), on SQLite and PostgreSQL: the close makes
one bundle per account with usage, each naming its account and proved under its account id,
each with a payer statement sealed to that payer that opens every leaf; a close interrupted
in the middle of the second account resumes to byte-identical bundles and statements."""

from dataclasses import replace

import pytest
from nacl.public import PrivateKey

from circuits.pedersen import commit
from prover.config import Settings
from prover.epoch.executor import InlineExecutor
from prover.epoch.service import EpochParams, EpochService
from prover.epoch.storage import EpochStore
from prover.errors import EpochStateError
from prover.ledger import Ledger
from prover.metering import Meter, UsageRequest
from prover.ratecard import load_rate_card
from tests.accounts import OPERATOR, enroll, uninterrupted_close
from verifier.account import ETH
from verifier.bundle import parse_bundle, verify_bundle
from verifier.opening import check_opening, unseal
from verifier.statement import unseal_statement

MODEL = "gpt-4o"
TOKEN = bytes.fromhex("7e" * 20)
PAYERS = {  # payer address -> (asset, users)
    bytes.fromhex("a1" * 20): (ETH, ["alice", "bob", "carol"]),
    bytes.fromhex("b2" * 20): (TOKEN, ["dave", "erin"]),
}


class Boom(RuntimeError):
    """The simulated crash of a closer."""


class CrashingExecutor(InlineExecutor):
    """Proves inline, then dies after ``limit`` leaves (a closer killed mid-close)."""

    def __init__(self, limit: int) -> None:
        super().__init__(chunk=2)
        self.left = limit

    def run(self, ctx, n, jobs):
        for batch in super().run(ctx, n, jobs):
            if self.left <= 0:
                raise Boom("closer killed")
            self.left -= len(batch)
            yield batch


def world(url, signing_key, *, executor_factory=InlineExecutor, operator=OPERATOR):
    ledger = Ledger.from_url(url, provider_id=bytes(signing_key.verify_key))
    payer_keys = {payer: PrivateKey(bytes([i + 1]) * 32) for i, payer in enumerate(PAYERS)}
    user_keys = {u: PrivateKey(bytes([0x40 + i]) * 32)
                 for i, u in enumerate(["alice", "bob", "dave"])}  # carol, erin: no key
    accounts = {}
    for payer, (asset, users) in PAYERS.items():
        accounts[payer] = enroll(ledger.engine, ledger.provider_id, users, payer=payer,
                                 asset=asset, payer_key=bytes(payer_keys[payer].public_key),
                                 keys={u: bytes(k.public_key) for u, k in user_keys.items()})
    meter = Meter(ledger=ledger, signing_key=signing_key,
                  rate_card=load_rate_card(Settings().rate_card))
    params = EpochParams(chain_id=31337, contract=b"\x42" * 20, bit_size=32, min_leaves=4,
                         rate_card_hash=meter.rate_card_hash, epoch_seconds=3600,
                         operator=operator)
    service = EpochService(ledger=ledger, store=EpochStore(ledger.engine),
                           signing_key=signing_key, params=params,
                           executor_factory=executor_factory)
    return meter, service, accounts, payer_keys, user_keys


def ingest(meter):
    users = [u for _, users in PAYERS.values() for u in users]
    for i in range(30):
        meter.record(UsageRequest(idempotency_key=f"k-{i}", user_id=users[i % len(users)],
                                  model=MODEL, input_tokens=40 + i, output_tokens=7 * i))


def test_two_accounts_in_one_epoch(ledger_url, signing_key):
    meter, service, accounts, payer_keys, user_keys = world(ledger_url, signing_key)
    ingest(meter)
    epoch_id = meter.ledger.current_epoch().id
    totals = dict(meter.ledger.running_totals(epoch_id))

    published = service.close()

    store = service.store
    assert [a.account_id for a in store.account_bundles(epoch_id)] == sorted(accounts.values())
    assert store.bundle_json(epoch_id) is None  # two accounts: no single epoch bundle
    with pytest.raises(LookupError, match="billed 2 accounts"):
        published.bundle
    for payer, (asset, users) in PAYERS.items():
        account_id = accounts[payer]
        bundle = parse_bundle(store.account_bundle_json(epoch_id, account_id))
        assert bundle == published.accounts[account_id].bundle
        assert bundle.account_id == account_id and bundle.subject == account_id
        assert (bundle.account.operator, bundle.account.payer, bundle.account.asset) == (
            OPERATOR, payer, asset)
        assert bundle.context.provider_id == account_id  # proofs bound to the account
        assert all(c.ok for c in verify_bundle(bundle,
                                               provider_key=bytes(signing_key.verify_key)))
        assert bundle.total == sum(totals[u] for u in users)
        assert len(bundle.leaves) == 4
        # the payer's statement opens every leaf: users with their last receipt, padding zero
        statement = unseal_statement(store.statement(epoch_id, account_id),
                                     bytes(payer_keys[payer]))
        assert [e.tag for e in statement.entries] == [leaf.tag for leaf in bundle.leaves]
        stated = {e.user_id: e for e in statement.entries if e.user_id is not None}
        assert sorted(stated) == sorted(users)
        for entry, leaf in zip(statement.entries, bundle.leaves, strict=True):
            assert commit(entry.value, entry.blinding) == leaf.commitment
            if entry.user_id is None:
                assert entry.value == 0 and entry.last_receipt_hash == bytes(32)
            else:
                last = meter.ledger.receipts(epoch_id, entry.user_id)[-1]
                assert (entry.value, entry.last_receipt_hash) == (last.total_units, last.hash())
        # each user's opening is in its own account's bundle
        sealed = store.sealed_openings(epoch_id, account_id)
        assert set(sealed) == {leaf.tag for leaf in bundle.leaves}
        for user in users:
            if user in user_keys:
                opening = unseal(sealed[published.openings[user].tag], bytes(user_keys[user]))
                assert all(ok for _, ok, _ in check_opening(opening, bundle))
    # both statements have the same size: it depends on the public leaf count only
    assert len({len(store.statement(epoch_id, a)) for a in accounts.values()}) == 1
    status = store.status(epoch_id)
    assert (status.leaves_done, status.leaves_total, status.finished) == (8, 8, True)
    meter.ledger.dispose()


def test_a_crashed_multi_account_close_resumes_byte_identical(ledger_url, signing_key):
    crashing = {"limit": 6}  # the first account has 4 leaves: dies inside the second

    def factory():
        if crashing["limit"] is None:
            return InlineExecutor()
        executor = CrashingExecutor(crashing["limit"])
        crashing["limit"] = None
        return executor

    meter, service, accounts, payer_keys, _ = world(ledger_url, signing_key,
                                                    executor_factory=factory)
    ingest(meter)
    epoch_id = meter.ledger.current_epoch().id
    with pytest.raises(Boom):
        service.close()
    assert meter.ledger.epoch(epoch_id).state == "closing"
    assert service.store.status(epoch_id).leaves_done == 6
    assert service.store.account_bundles(epoch_id)[1].total_units is None  # nothing published
    resumed = service.close()
    assert resumed.epoch_id == epoch_id and len(resumed.accounts) == 2
    for payer, account_id in accounts.items():
        bundle, statement = uninterrupted_close(service, epoch_id, account_id, signing_key)
        assert service.store.account_bundle_json(epoch_id, account_id) == bundle.dumps().encode()
        stored = unseal_statement(service.store.statement(epoch_id, account_id),
                                  bytes(payer_keys[payer]))
        assert stored.to_bytes() == statement.to_bytes()
    meter.ledger.dispose()


def test_an_operator_address_change_is_refused_naming_the_setting(sqlite_url, signing_key):
    meter, honest, _, _, _ = world(sqlite_url, signing_key)
    ingest(meter)
    service = EpochService(ledger=meter.ledger, store=honest.store, signing_key=signing_key,
                           params=replace(honest.params, operator=bytes.fromhex("99" * 20)),
                           executor_factory=InlineExecutor)
    with pytest.raises(EpochStateError, match="ZKMETER_OPERATOR_ADDRESS"):
        service.close()
    assert service.store.status(1) is None or service.store.status(1).leaves_done == 0
    meter.ledger.dispose()
