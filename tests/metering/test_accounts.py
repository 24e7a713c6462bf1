"""Billing accounts in the ledger, on SQLite and PostgreSQL: users belong to accounts, usage
of unknown users and of closed accounts is refused storing nothing, per-account usage is
counted, prepaid limits refuse exactly at the boundary and a concurrent burst cannot
overshoot them, and the per-account leaf limit."""


import pytest
from sqlalchemy import event, select

from prover.accounts.admission import AccountGate
from prover.accounts.escrow import CachedEscrow, EscrowView, FixedEscrow
from prover.errors import (
    AccountLeafLimitError,
    AccountStateError,
    EscrowUnavailableError,
    InvalidRequestError,
    PrepaidLimitError,
    UnknownUserError,
)
from prover.ledger.schema import account_epochs, events, user_states
from prover.metering import UsageRequest
from tests.accounts import OPERATOR, overlapping_bursts, registry
from verifier.account import ETH, account_id_of, provider_id_of
from verifier.receipts import verify_chain

PAYER_A = bytes.fromhex("a1" * 20)
PAYER_B = bytes.fromhex("b2" * 20)
TOKEN = bytes.fromhex("c3" * 20)
KEY = bytes(range(32))
UNITS = 3 * 10 + 10 * 5  # gpt-4o: 10 input, 5 output


def reported(key, user, inp=10, out=5):
    return UsageRequest(key, user, "gpt-4o", input_tokens=inp, output_tokens=out)


def rows(meter, table):
    with meter.ledger.engine.begin() as conn:
        return conn.execute(select(table)).all()


@pytest.fixture
def setup(make_meter):
    """A meter whose database has two accounts, A (ETH) and B (a token), users a0..a2 and b0."""
    meter = make_meter()
    reg = registry(meter.ledger.engine, meter.provider_id)
    a = reg.register_account(payer=PAYER_A, asset=ETH, payer_x25519_public_key=KEY)
    b = reg.register_account(payer=PAYER_B, asset=TOKEN, payer_x25519_public_key=KEY)
    for user in ("a0", "a1", "a2"):
        reg.register_user(user, a.account_id)
    reg.register_user("b0", b.account_id)
    return meter, reg, a.account_id, b.account_id


def test_account_id_is_the_contracts(setup):
    meter, reg, a, _ = setup
    provider = provider_id_of(OPERATOR, meter.provider_id)
    assert a == account_id_of(provider, PAYER_A, ETH)
    assert reg.account_id(PAYER_A, TOKEN) != a  # another asset, another account


def test_unknown_user_is_refused_and_nothing_is_stored(setup):
    meter, *_ = setup
    with pytest.raises(UnknownUserError, match="not registered"):
        meter.record(reported("k1", "stranger"))
    out = meter.record_batch([reported("k2", "stranger"), reported("k3", "a0")])
    assert isinstance(out[0], UnknownUserError) and not isinstance(out[1], Exception)
    assert [r.user_id for r in rows(meter, events)] == ["a0"]
    assert {r.user_id for r in rows(meter, user_states)} == {"a0"}  # no row for the stranger
    # the refused key was never stored: it can be used again once the user is registered
    assert meter.ledger.receipts(1, "stranger") == []


def test_closed_account_refuses_usage(setup):
    meter, reg, a, _b = setup
    meter.record(reported("k1", "a0"))
    reg.close_account(a)
    with pytest.raises(AccountStateError, match="closed"):
        meter.record(reported("k2", "a1"))
    assert meter.record(reported("k3", "b0")).receipt.seq == 1  # other accounts unaffected
    assert meter.record(reported("k1", "a0")).replayed  # a retry of a stored event still works
    assert len(rows(meter, events)) == 2
    with pytest.raises(AccountStateError):
        reg.register_user("a9", a)
    with pytest.raises(AccountStateError, match="stay closed"):
        reg.register_account(payer=PAYER_A, asset=ETH, payer_x25519_public_key=KEY)


def test_a_user_never_moves_account(setup):
    _, reg, a, b = setup
    reg.register_user("a0", a, bytes(32 * [7]))  # same account: idempotent, sets the key
    with pytest.raises(AccountStateError, match="another billing account"):
        reg.register_user("a0", b)
    assert reg.user_account("a0") == a
    for bad in ("", "x" * 257, "nul\x00"):
        with pytest.raises(InvalidRequestError):
            reg.register_user(bad, a)
    with pytest.raises(UnknownUserError):
        reg.register_user("new", bytes(32))  # no such account


def test_the_admission_reads_only_users_it_has_not_seen(setup):
    meter, reg, a, _b = setup
    looked_up: list[list[str]] = []

    def watch(_conn, _cursor, statement, parameters, _context, _many):
        if "FROM account_users" in statement and "SELECT user_id, account_id" in statement:
            values = parameters.values() if isinstance(parameters, dict) else parameters
            looked_up.append(sorted(v for p in values for v in (p if isinstance(p, list)
                                                                 else [p])))

    event.listen(meter.ledger.engine, "before_cursor_execute", watch)
    try:
        meter.record_batch([reported("k1", "a0"), reported("k2", "a1")])
        meter.record_batch([reported("k3", "a0"), reported("k4", "a1")])  # both seen
        reg.register_user("a9", a)
        out = meter.record_batch([reported("k5", "a9"), reported("k6", "a0"),
                                  reported("k7", "stranger")])
    finally:
        event.remove(meter.ledger.engine, "before_cursor_execute", watch)
    assert looked_up == [["a0", "a1"], ["a9", "stranger"]]
    assert isinstance(out[2], UnknownUserError) and not isinstance(out[0], Exception)
    with pytest.raises(UnknownUserError):  # an unknown user is never remembered as known
        meter.record(reported("k8", "stranger"))


def test_usage_is_counted_per_account_and_epoch(setup):
    meter, reg, a, b = setup
    meter.record_batch([reported(f"k{i}", u) for i, u in enumerate(["a0", "a1", "a0", "b0"])])
    assert reg.usage(a) == {1: 3 * UNITS} and reg.usage(b) == {1: UNITS}
    users = {bytes(r.account_id): r.users for r in rows(meter, account_epochs)}
    assert users == {a: 2, b: 1}


def test_prepaid_limit_refuses_exactly_at_the_boundary(setup):
    meter, _, a, _b = setup
    escrow = FixedEscrow({a: 3 * UNITS + 5})
    meter.ledger.gate = AccountGate(escrow=escrow, headroom_units=5)
    for i in range(3):
        meter.record(reported(f"k{i}", "a0"))  # exactly up to available - headroom
    with pytest.raises(PrepaidLimitError, match="0 units of prepaid escrow left") as caught:
        meter.record(reported("k3", "a1"))
    assert caught.value.remaining_units == 0 and caught.value.account_id == a
    assert meter.record(reported("k4", "b0")).receipt.seq == 1  # B has no limit
    assert len(rows(meter, events)) == 4
    # the chain settles epoch 1 (lastEpochId = 1, its units now reserved): the view changes
    meter.ledger.close_epoch(1, next_rate_card_hash=meter.rate_card_hash, next_bit_size=32,
                             epoch_seconds=60)
    escrow.set(a, UNITS - 1, last_epoch_id=0)  # not yet submitted: epoch 1 still counts
    with pytest.raises(PrepaidLimitError, match="0 units"):
        meter.record(reported("k5", "a0"))
    escrow.set(a, UNITS + 5, last_epoch_id=1)  # submitted: only the open epoch counts
    assert meter.record(reported("k6", "a0")).receipt.epoch_id == 2
    with pytest.raises(PrepaidLimitError):
        meter.record(reported("k7", "a0"))


def test_prepaid_limit_remaining_units_are_named(setup):
    meter, _, a, _ = setup
    meter.ledger.gate = AccountGate(escrow=FixedEscrow({a: UNITS + 7}))
    out = meter.record_batch([reported("k1", "a0"), reported("k2", "a1"),
                              reported("k3", "a2", inp=1, out=0)])
    assert not isinstance(out[0], Exception)
    assert isinstance(out[1], PrepaidLimitError) and out[1].remaining_units == 7
    assert "7 units" in str(out[1])
    assert not isinstance(out[2], Exception)  # 3 units still fit after the refusal
    assert [r.user_id for r in rows(meter, events)] == ["a0", "a2"]


def test_concurrent_burst_cannot_overshoot_the_limit(make_meter, setup):
    meter, reg, a, _ = setup
    limit = 25 * UNITS
    meters = [make_meter() for _ in range(4)]
    for m in meters:
        m.ledger.gate = AccountGate(escrow=FixedEscrow({a: limit}))
    outcomes = overlapping_bursts(  # 20 events each, 80 in all, 25 fit
        meters, lambda m, n: reported(f"m{m}-{n}", f"a{n % 3}"))
    stored = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, PrepaidLimitError)]
    assert len(stored) == 25 and len(refused) == 55
    assert sum(r.units for r in rows(meter, events)) == limit == reg.usage(a)[1]
    for user in ("a0", "a1", "a2"):
        verify_chain(meter.ledger.receipts(1, user), provider_id=meter.provider_id)


def test_leaf_limit_per_account(setup):
    meter, *_ = setup
    meter.ledger.gate = AccountGate(max_leaves=2)
    meter.record(reported("k1", "a0"))
    meter.record(reported("k2", "a1"))
    with pytest.raises(AccountLeafLimitError, match="2 users"):
        meter.record(reported("k3", "a2"))
    assert meter.record(reported("k4", "a0")).receipt.seq == 2  # known users go on
    assert meter.record(reported("k5", "b0")).receipt.seq == 1


def test_cached_escrow_refreshes_after_ttl_and_on_invalidate():
    calls = []
    now = [0.0]

    def fetch(account_id):
        calls.append(account_id)
        return EscrowView(len(calls))

    cache = CachedEscrow(fetch, ttl_seconds=5, clock=lambda: now[0])
    assert cache.view(b"a").available_units == 1
    now[0] = 4.9
    assert cache.view(b"a").available_units == 1
    now[0] = 5.0
    assert cache.view(b"a").available_units == 2
    cache.invalidate(b"a")
    assert cache.view(b"a").available_units == 3


def test_cached_escrow_does_not_keep_a_read_that_an_invalidation_overtook():
    """An event that drops the entry while a read is under way: the read answers its caller
    but is not kept (it may predate the event); a failed read stores nothing."""
    calls = []
    cache: CachedEscrow

    def fetch(account_id):
        calls.append(account_id)
        if len(calls) == 1:
            cache.invalidate(account_id)  # the event follower, during the first read
        if len(calls) == 3:
            raise EscrowUnavailableError("the chain did not answer", account_id=account_id)
        return EscrowView(len(calls))

    cache = CachedEscrow(fetch, ttl_seconds=3_600)
    assert cache.view(b"a").available_units == 1  # answered, not kept
    assert cache.view(b"a").available_units == 2  # read again, kept
    assert cache.view(b"a").available_units == 2 and len(calls) == 2
    cache.invalidate()
    with pytest.raises(EscrowUnavailableError):
        cache.view(b"a")
    assert cache.view(b"a").available_units == 4 and len(calls) == 4  # nothing was kept


def test_escrow_view_from_contract_amounts():
    view = EscrowView.from_amounts(escrow=1000, reserved=300, withdrawal=200, unit_price=7,
                                   last_epoch_id=4)
    assert view == EscrowView(71, 4)
    assert EscrowView.from_amounts(escrow=10, reserved=30, withdrawal=0, unit_price=1,
                                   last_epoch_id=0).available_units == 0
