"""ZkMeterSettlement v2 as its attackers would use it, on py-evm and on anvil (--hardfork
prague): who can take what from whom. Each test names the attack it shows failing; the
economics behind them are in docs/contracts.md."""

import secrets
from dataclasses import dataclass

import pytest

from circuits.constants import CURVE_ORDER, FIELD_MODULUS
from prover.chain import DEFAULT_PARAMS, ETH, KIND_RANGE, ChainClient, LeafInput, SettlementError
from tests.contracts.helpers import answer, challenge, make_epoch, submit
from verifier.chain import DemandStatus, EpochStatus, account_id_of, provider_id_of

BOND = 10**18
UNIT_PRICE = 1_000_000
WINDOW = 3_600
ESCROW = 10**17
VALUES = [5, 7, 0, 100, 2**32 - 1, 3, 4, 9]


@dataclass
class World:
    """A deployed settlement with one provider and one ETH account funded by ``payer``."""

    client: ChainClient
    operator: str
    payer: str
    key: bytes
    provider_id: bytes
    account_id: bytes

    def actor(self, i: int) -> str:
        return self.client.w3.eth.accounts[i]


def _world(client: ChainClient, *, bond: int = BOND, escrow: int = ESCROW) -> World:
    operator, payer = client.account, client.w3.eth.accounts[1]
    key = secrets.token_bytes(32)
    client.register_provider(key, bond=bond, unit_price=UNIT_PRICE, challenge_window=WINDOW)
    pid = client.provider_id_for(key)
    client.open_account(pid, sender=payer)
    aid = client.account_id_for(pid, payer=payer)
    if escrow:
        client.deposit(aid, escrow, sender=payer)
    return World(client, operator, payer, key, pid, aid)


@pytest.fixture
def world(client) -> World:
    return _world(client)


@pytest.fixture
def tworld(tester_client) -> World:
    return _world(tester_client)


def _refused(name):
    """pytest.raises for one custom error, by name."""
    return pytest.raises(SettlementError, match=rf"^{name}\(")


def _spent(receipt) -> int:
    return receipt.gasUsed * receipt.effectiveGasPrice


def _eth(client, who) -> int:
    return client.w3.eth.get_balance(who)


# ------------------------------------------------------------------ the honest path


def test_honest_epoch_reserves_then_pays_exactly(world):
    w, c = world, world.client
    epoch = make_epoch(c, w.account_id, 1, VALUES)
    submit(c, epoch)
    payment = sum(VALUES) * UNIT_PRICE
    record = c.epoch(w.account_id, 1)
    assert record.status is EpochStatus.PENDING and record.merkle_root == epoch.root
    assert record.total == sum(VALUES) and record.leaf_count == 8
    account = c.billing_account(w.account_id)
    assert account.reserved == payment and account.available == ESCROW - payment
    assert c.provider(w.provider_id).locked_bond == payment

    with _refused("EpochNotFinalizable"):
        c.finalize(w.account_id, 1)
    c.advance_time(WINDOW + 1)
    with _refused("ChallengeWindowClosed"):
        challenge(c, epoch, 0)
    c.finalize(w.account_id, 1, sender=w.actor(3))  # anyone may finalize
    assert c.epoch(w.account_id, 1).status is EpochStatus.FINALIZED
    account = c.billing_account(w.account_id)
    assert (account.escrow, account.reserved) == (ESCROW - payment, 0)
    provider = c.provider(w.provider_id)
    assert (provider.locked_bond, provider.pending_epochs, provider.bond) == (0, 0, BOND)
    assert c.earnings(w.provider_id) == payment
    with pytest.raises(SettlementError) as info:
        c.finalize(w.account_id, 1)
    assert info.value.name == "EpochNotPending" and info.value.args_[2] == EpochStatus.FINALIZED

    to = w.actor(7)
    before = _eth(c, to)
    c.withdraw_earnings(w.provider_id, to=to)  # withdrawEarnings(to): paid to any address
    assert _eth(c, to) - before == payment
    with _refused("NothingToWithdraw"):
        c.withdraw_earnings(w.provider_id)
    with _refused("NotOperator"):
        c.withdraw_earnings(w.provider_id, sender=w.payer)


def test_epochs_of_an_account_settle_in_order(tworld):
    w, c = tworld, tworld.client
    first, second = make_epoch(c, w.account_id, 3, [1, 2]), make_epoch(c, w.account_id, 7, [4])
    submit(c, first)
    submit(c, second)
    assert c.epoch(w.account_id, 7).prev_epoch_id == 3
    with _refused("EpochIdNotIncreasing"):
        submit(c, make_epoch(c, w.account_id, 7, [1]))
    c.advance_time(WINDOW + 1)
    with pytest.raises(SettlementError) as info:  # the settler cannot pick which is paid
        c.finalize(w.account_id, 7)
    assert info.value.name == "PreviousEpochPending" and info.value.args_[1:] == (7, 3)
    c.finalize(w.account_id, 3)
    c.finalize(w.account_id, 7)
    assert c.earnings(w.provider_id) == 7 * UNIT_PRICE


# ---------------------------------------------------- accounts: no pooled escrow


def test_one_payers_escrow_never_pays_for_another(client):
    w = _world(client)
    c = w.client
    token = c.deploy_test_token()
    payer_b = w.actor(2)
    c.open_account(w.provider_id, asset=token, sender=payer_b)
    account_b = c.account_id_for(w.provider_id, payer=payer_b, asset=token)
    assert c.billing_account(account_b).asset.lower() == token.lower()

    # B has not funded its account: A's rich escrow must not cover B's users
    epoch_b = make_epoch(c, account_b, 1, [10, 20])
    with pytest.raises(SettlementError) as info:
        submit(c, epoch_b)
    assert info.value.name == "InsufficientEscrow" and info.value.args_[1:] == (30 * UNIT_PRICE, 0)

    c.mint_test_token(token, payer_b, 10**9)
    c.approve_token(token, 10**9, sender=payer_b)
    c.deposit(account_b, 30 * UNIT_PRICE, sender=payer_b)
    submit(c, epoch_b)
    epoch_a = make_epoch(c, w.account_id, 1, [1, 1])
    submit(c, epoch_a)
    c.advance_time(WINDOW + 1)
    c.finalize(w.account_id, 1)
    c.finalize(account_b, 1)
    assert c.billing_account(w.account_id).escrow == ESCROW - 2 * UNIT_PRICE
    assert c.billing_account(account_b).escrow == 0
    assert c.earnings(w.provider_id, token) == 30 * UNIT_PRICE
    assert c.earnings(w.provider_id) == 2 * UNIT_PRICE
    c.withdraw_earnings(w.provider_id, asset=token)
    assert c.token_balance(token, w.operator) == 30 * UNIT_PRICE


def test_accounts_are_the_payers_own(tworld):
    w, c = tworld, tworld.client
    stranger = w.actor(5)
    with _refused("NotPayer"):
        c.deposit(w.account_id, 1, sender=stranger)
    with _refused("NotPayer"):
        c.request_withdrawal(w.account_id, 1, sender=stranger)
    with _refused("AccountExists"):
        c.open_account(w.provider_id, sender=w.payer)
    with _refused("UnknownProvider"):
        c.open_account(secrets.token_bytes(32), sender=stranger)
    with _refused("InvalidAsset"):  # an ERC-20 account needs a contract
        c.open_account(w.provider_id, asset=w.actor(6), sender=stranger)
    with _refused("UnknownAccount"):
        submit(c, make_epoch(c, secrets.token_bytes(32), 1, [1]))
    # the ids are what the contract derives
    onchain = c.settlement.functions.accountIdOf(w.provider_id, w.payer, ETH).call()
    assert bytes(onchain) == w.account_id == account_id_of(w.provider_id, w.payer, ETH)


def test_payer_exits_after_notice_with_only_unreserved_escrow(world):
    w, c = world, world.client
    submit(c, make_epoch(c, w.account_id, 1, [50]))
    reserved = 50 * UNIT_PRICE
    with _refused("WithdrawalNotReady"):
        c.complete_withdrawal(w.account_id, sender=w.payer)
    c.request_withdrawal(w.account_id, ESCROW, sender=w.payer)
    account = c.billing_account(w.account_id)
    assert account.withdrawal_amount == ESCROW and account.available == 0
    notice = max(DEFAULT_PARAMS.withdrawal_notice, WINDOW)
    now = c.w3.eth.get_block("latest")["timestamp"]
    assert account.withdrawal_at >= now + notice - 1
    with _refused("WithdrawalNotReady"):  # the provider sees the request before it lands
        c.complete_withdrawal(w.account_id, sender=w.payer)
    c.advance_time(notice + 1)
    before = _eth(c, w.actor(8))
    c.complete_withdrawal(w.account_id, to=w.actor(8), sender=w.payer)
    assert _eth(c, w.actor(8)) - before == ESCROW - reserved  # the reserved part stays
    account = c.billing_account(w.account_id)
    assert (account.escrow, account.reserved, account.withdrawal_amount) == (reserved, reserved, 0)
    c.finalize(w.account_id, 1)  # the provider is still paid what it served
    assert c.earnings(w.provider_id) == reserved


def test_requested_withdrawal_can_be_cancelled_and_is_bounded(tworld):
    w, c = tworld, tworld.client
    with _refused("InvalidAmount"):
        c.request_withdrawal(w.account_id, ESCROW + 1, sender=w.payer)
    c.request_withdrawal(w.account_id, 10, sender=w.payer)
    c.request_withdrawal(w.account_id, 0, sender=w.payer)
    assert c.billing_account(w.account_id).withdrawal_amount == 0
    c.advance_time(10**6)
    with _refused("WithdrawalNotReady"):
        c.complete_withdrawal(w.account_id, sender=w.payer)


def test_pending_epoch_expires_unpaid(tworld):
    w, c = tworld, tworld.client
    submit(c, make_epoch(c, w.account_id, 1, [9]))
    c.advance_time(WINDOW + DEFAULT_PARAMS.epoch_expiry + 1)
    c.finalize(w.account_id, 1, sender=w.payer)
    assert c.epoch(w.account_id, 1).status is EpochStatus.EXPIRED
    account = c.billing_account(w.account_id)
    assert (account.escrow, account.reserved) == (ESCROW, 0)
    assert c.earnings(w.provider_id) == 0 and c.provider(w.provider_id).locked_bond == 0


# ------------------------------------------------- submission limits and floors


def test_submit_refusals(world):
    w, c = world, world.client
    epoch = make_epoch(c, w.account_id, 5, [1, 2, 3, 4])
    leaves = epoch.leaves

    def send(*, epoch_id=5, total=epoch.total, blinding=epoch.total_blinding, leaves=leaves,
             sender=None):
        return c.submit_epoch(w.account_id, epoch_id, total=total, total_blinding=blinding,
                              leaves=leaves, sender=sender)

    with pytest.raises(SettlementError) as info:
        send(sender=w.payer)
    assert info.value.name == "NotOperator"
    with _refused("TotalMismatch"):
        send(total=epoch.total + 1)
    with _refused("TotalMismatch"):
        send(blinding=(epoch.total_blinding + 1) % CURVE_ORDER)
    with _refused("ScalarNotInField"):
        send(blinding=CURVE_ORDER + 1)
    with _refused("InvalidLeafCount"):
        send(leaves=leaves[:3])
    with _refused("InvalidLeafCount"):
        send(leaves=[])
    with pytest.raises(SettlementError) as info:  # more than any 4 leaves can hold
        send(total=4 * (2**32 - 1) + 1)
    assert info.value.name == "TotalOutOfRange" and info.value.args_[1] == 4 * (2**32 - 1)
    # the same tag twice (a duplicated user), or out of order
    with pytest.raises(SettlementError) as info:
        send(leaves=[leaves[0], leaves[0], *leaves[2:]])
    assert info.value.name == "TagsNotIncreasing" and info.value.args_ == (1,)
    with _refused("TagsNotIncreasing"):
        send(leaves=[leaves[1], leaves[0], *leaves[2:]])

    # compressed commitments: the wrong parity is another point; x >= p or off the curve
    flipped = LeafInput(leaves[1].tag, leaves[1].commitment[:32]
                        + (FIELD_MODULUS - int.from_bytes(leaves[1].commitment[32:], "big"))
                        .to_bytes(32, "big"), leaves[1].proof_hash)
    with _refused("TotalMismatch"):
        send(leaves=[leaves[0], flipped, *leaves[2:]])
    x = int.from_bytes(leaves[1].commitment[:32], "big")
    big_x = LeafInput(leaves[1].tag, (x + FIELD_MODULUS).to_bytes(32, "big")
                      + leaves[1].commitment[32:], leaves[1].proof_hash)
    with pytest.raises(SettlementError) as info:
        send(leaves=[leaves[0], big_x, *leaves[2:]])
    assert info.value.name == "InvalidCommitment" and info.value.args_ == (1,)
    off = next(v for v in range(1, 50)
               if pow((v**3 + 3) % FIELD_MODULUS, (FIELD_MODULUS - 1) // 2, FIELD_MODULUS) != 1)
    off_curve = LeafInput(leaves[2].tag, off.to_bytes(32, "big") + bytes(32), leaves[2].proof_hash)
    with pytest.raises(SettlementError) as info:
        send(leaves=[*leaves[:2], off_curve, leaves[3]])
    assert info.value.name == "InvalidCommitment" and info.value.args_ == (2,)

    send()
    with pytest.raises(SettlementError) as info:
        send()
    assert info.value.name == "EpochIdNotIncreasing" and info.value.args_[1:] == (5, 5)
    with _refused("EpochIdNotIncreasing"):
        send(epoch_id=4)


def test_max_leaves_is_enforced_before_any_work(tworld):
    w, c = tworld, tworld.client
    assert c.settlement.functions.MAX_LEAVES().call() == 1024
    leaf = LeafInput(bytes(32), bytes(64), bytes(32))
    with pytest.raises(SettlementError) as info:
        c.submit_epoch(w.account_id, 1, total=0, total_blinding=0, leaves=[leaf] * 2048)
    assert info.value.name == "InvalidLeafCount" and info.value.args_ == (2048,)


def test_protocol_floors(tester_client):
    c = tester_client
    key = secrets.token_bytes(32)
    with pytest.raises(SettlementError) as info:  # a 1-wei bond
        c.register_provider(key, bond=1, unit_price=1, challenge_window=WINDOW)
    assert info.value.name == "InvalidParameter" and info.value.args_ == (1, 1)
    with pytest.raises(SettlementError) as info:  # a 1-second window
        c.register_provider(key, bond=BOND, unit_price=1, challenge_window=1)
    assert info.value.name == "InvalidParameter" and info.value.args_ == (3, 1)
    with _refused("InvalidParameter"):
        c.register_provider(key, bond=BOND, unit_price=0, challenge_window=WINDOW)
    with _refused("InvalidParameter"):
        c.register_provider(bytes(32), bond=BOND, unit_price=1, challenge_window=WINDOW)
    for bad in (DEFAULT_PARAMS.__class__(**{**DEFAULT_PARAMS.to_json(), "min_bond": 0}),
                DEFAULT_PARAMS.__class__(**{**DEFAULT_PARAMS.to_json(),
                                            "withdrawal_notice": 10})):
        with _refused("InvalidParams"):
            ChainClient(c.w3).deploy(bad)


def test_bond_must_cover_the_payment_at_stake(tester_client):
    c = tester_client
    price = 10**15  # 1,000 units are worth the whole bond
    key = secrets.token_bytes(32)
    c.register_provider(key, bond=BOND, unit_price=price, challenge_window=WINDOW)
    pid = c.provider_id_for(key)
    payer = c.w3.eth.accounts[1]
    c.open_account(pid, sender=payer)
    aid = c.account_id_for(pid, payer=payer)
    c.deposit(aid, 2 * BOND, sender=payer)
    submit(c, make_epoch(c, aid, 1, [250, 250, 250, 250]))  # locks the whole bond
    assert c.provider(pid).locked_bond == BOND
    with pytest.raises(SettlementError) as info:
        submit(c, make_epoch(c, aid, 2, [1]))
    assert info.value.name == "InsufficientBond"
    assert info.value.args_[1:] == (price, BOND, BOND)
    c.add_bond(pid, price)
    submit(c, make_epoch(c, aid, 2, [1]))


# ------------------------------------------------------- range challenges and slashing


def test_bad_proof_slashes_whole_bond_split_and_voids_every_pending_epoch(client):
    w = _world(client)
    c = w.client
    # a second payer whose honest pending epoch is voided with the provider
    payer_b = w.actor(2)
    c.open_account(w.provider_id, sender=payer_b)
    account_b = c.account_id_for(w.provider_id, payer=payer_b)
    c.deposit(account_b, ESCROW, sender=payer_b)
    submit(c, make_epoch(c, account_b, 1, [3, 4]))
    bad = make_epoch(c, w.account_id, 7, VALUES, bad={2: "overflow"})
    submit(c, bad)  # the sum still opens: only the range proof can catch it
    assert c.epoch(w.account_id, 7).total == sum(VALUES) - VALUES[2] + 2**32

    challenger = w.actor(4)
    with _refused("RangeProofValid"):  # the good leaves stand
        challenge(c, bad, 3, sender=challenger)
    challenge(c, bad, 2, sender=challenger)
    assert c.epoch(w.account_id, 7).status is EpochStatus.REJECTED
    assert c.epoch(account_b, 1).status is EpochStatus.REJECTED  # voided with the provider
    provider = c.provider(w.provider_id)
    assert (provider.bond, provider.locked_bond, provider.pending_epochs) == (0, 0, 0)
    assert c.balance_of(challenger) == BOND // 10
    assert c.balance_of(w.payer) == BOND * 4 // 10
    assert c.total_burned() == BOND // 2
    assert c.billing_account(w.account_id).reserved == 0

    # B's reservation is released (not paid) by finalize; A's epoch cannot be finalized
    c.finalize(account_b, 1)
    assert c.billing_account(account_b).reserved == 0 and c.earnings(w.provider_id) == 0
    c.advance_time(WINDOW + 1)
    with _refused("EpochNotPending"):
        c.finalize(w.account_id, 7)
    with _refused("EpochNotPending"):
        challenge(c, bad, 2)

    # frozen until it re-bonds: later fraud cannot be submitted, let alone finalized
    with _refused("InsufficientBond"):
        submit(c, make_epoch(c, w.account_id, 8, [1, 2]))
    c.add_bond(w.provider_id, BOND)
    submit(c, make_epoch(c, w.account_id, 8, [1, 2]))
    assert c.provider(w.provider_id).generation == 1

    before = _eth(c, challenger)
    receipt = c.withdraw(sender=challenger)
    assert _eth(c, challenger) - before + _spent(receipt) == BOND // 10
    assert c.balance_of(challenger) == 0


def test_challenge_needs_an_earlier_commitment_so_copies_fail(tworld):
    w, c = tworld, tworld.client
    bad = make_epoch(c, w.account_id, 1, [1, 2], bad={1: "context"})
    submit(c, bad)
    honest, copier = w.actor(4), w.actor(5)
    salt = secrets.token_bytes(32)
    with _refused("NoChallengeCommitment"):  # a reveal without a commitment
        challenge(c, bad, 1, sender=honest, salt=salt)
    c.commit_challenge(KIND_RANGE, w.account_id, 1, 1, salt, sender=honest)
    # a front-runner copying the revealed call verbatim has no commitment of its own
    with _refused("NoChallengeCommitment"):
        challenge(c, bad, 1, sender=copier, salt=salt)
    challenge(c, bad, 1, sender=honest, salt=salt)
    assert c.balance_of(honest) == BOND // 10 and c.balance_of(copier) == 0
    assert c.epoch(w.account_id, 1).status is EpochStatus.REJECTED


def test_an_honest_leaf_survives_a_challenge(world):
    w, c = world, world.client
    epoch = make_epoch(c, w.account_id, 1, VALUES)
    submit(c, epoch)
    for index in (0, 4):  # 2^32 - 1 at index 4: the top of the range
        with _refused("RangeProofValid"):
            challenge(c, epoch, index, sender=w.actor(4))
    assert c.provider(w.provider_id).bond == BOND


def test_challenge_refusals(tworld):
    w, c = tworld, tworld.client
    epoch = make_epoch(c, w.account_id, 1, [1, 2, 3, 4])
    submit(c, epoch)
    args = dict(tag=epoch.tags[0], commitment=epoch.commitments[0], proof=epoch.proofs[0])
    with _refused("EpochNotFound"):
        c.challenge(w.account_id, 2, leaf_index=0, path=epoch.path(0), **args)
    with _refused("InvalidMerkleProof"):  # a proof that is not the committed one
        c.challenge(w.account_id, 1, leaf_index=0, path=epoch.path(0),
                    **{**args, "proof": epoch.proofs[1]})
    with _refused("InvalidMerkleProof"):  # a path of the wrong length
        c.challenge(w.account_id, 1, leaf_index=0, path=epoch.path(0)[:1], **args)
    with _refused("LeafIndexOutOfRange"):
        c.challenge(w.account_id, 1, leaf_index=4, path=epoch.path(0), **args)


def test_operator_contract_cannot_exit_its_bond_through_a_self_challenge(client,
                                                                          harness_artifacts):
    """The "free bond exit": a contract operator submits a junk epoch, challenges it and
    withdraws in one transaction. Now the reveal needs a commitment from an earlier block,
    and a self-slash returns at most the challenger's and the payer's shares (50 %)."""
    from tests.contracts.helpers import deploy_harness

    c = client
    op = deploy_harness(c, harness_artifacts, "OperatorContract")
    s = c.settlement
    key = secrets.token_bytes(32)
    c._send(op.functions.exec(s.address, s.encode_abi(
        "registerProvider", [key, UNIT_PRICE, WINDOW])), value=BOND)
    pid = provider_id_of(op.address, key)
    # the operator is its own payer too, to collect the payer's share as well
    c._send(op.functions.exec(s.address, s.encode_abi("openAccount", [pid, ETH])))
    aid = account_id_of(pid, op.address, ETH)
    c._send(op.functions.exec(s.address, s.encode_abi("deposit", [aid, ESCROW])), value=ESCROW)
    junk = make_epoch(c, aid, 1, [1, 2], bad={0: "overflow"})
    leaves = [leaf.to_abi() for leaf in junk.leaves]
    salt = secrets.token_bytes(32)
    commitment = s.functions.challengeCommitment(KIND_RANGE, op.address, aid, 1, 0,
                                                 salt).call()
    reveal = s.encode_abi("challengeRangeProof", [
        aid, 1, 0, junk.tags[0], int.from_bytes(junk.commitments[0][:32], "big"),
        int.from_bytes(junk.commitments[0][32:], "big"), junk.proofs[0], junk.path(0), salt])
    calls = [s.encode_abi("submitEpoch", [aid, 1, junk.total, junk.total_blinding, leaves]),
             s.encode_abi("commitChallenge", [commitment]), reveal,
             s.encode_abi("withdraw", [])]
    with _refused("NoChallengeCommitment"):
        c._send(op.functions.execMany(s.address, calls), gas=5_000_000)
    assert c.provider(pid).bond == BOND  # nothing happened

    # over several blocks it can slash itself, and gets back only half of its bond
    committed = c._send(op.functions.execMany(s.address, calls[:2]), gas=5_000_000)
    c._await_block_after(committed.blockNumber)  # the reveal runs in a later block
    c._send(op.functions.execMany(s.address, [reveal, s.encode_abi("withdraw", [])]),
            gas=5_000_000)
    assert c.provider(pid).bond == 0
    assert _eth(c, op.address) == BOND // 2  # 10 % challenger + 40 % payer; 50 % burned
    assert c.total_burned() == BOND // 2


# ------------------------------------------------------------- data availability


def _demand(c, epoch, index, *, sender):
    return c.demand_data(epoch.account_id, epoch.epoch_id, index, sender=sender)


def test_withheld_leaf_is_demanded_unanswered_and_slashed(client):
    w = _world(client)
    c = w.client
    epoch = make_epoch(c, w.account_id, 1, VALUES)  # its proofs are never published
    submit(c, epoch)
    demander = w.actor(4)
    bond = DEFAULT_PARAMS.demand_bond
    _demand(c, epoch, 5, sender=demander)
    assert c.demand(w.account_id, 1, 5).status is DemandStatus.OPEN
    assert c.epoch(w.account_id, 1).open_demands == 1
    c.advance_time(WINDOW + 1)
    with pytest.raises(SettlementError) as info:  # finalize waits for the demand
        c.finalize(w.account_id, 1)
    assert info.value.name == "DemandsOpen"
    c.resolve_demand(w.account_id, 1, 5, sender=w.actor(6))  # anyone, once the deadline passed
    assert c.epoch(w.account_id, 1).status is EpochStatus.REJECTED
    assert c.demand(w.account_id, 1, 5).status is DemandStatus.RESOLVED
    assert c.balance_of(demander) == bond + BOND // 10  # its bond back and the share
    assert c.balance_of(w.actor(6)) == 0
    assert c.balance_of(w.payer) == BOND * 4 // 10
    assert c.billing_account(w.account_id).reserved == 0
    with _refused("EpochNotPending"):
        c.finalize(w.account_id, 1)


def test_answered_demand_pays_the_answerer_and_reopens_the_window(client):
    w = _world(client)
    c = w.client
    epoch = make_epoch(c, w.account_id, 1, VALUES)
    submit(c, epoch)
    demander = w.actor(4)
    _demand(c, epoch, 2, sender=demander)
    deadline = c.demand(w.account_id, 1, 2).deadline
    with pytest.raises(SettlementError) as info:
        c.resolve_demand(w.account_id, 1, 2)
    assert info.value.name == "DemandNotExpired" and info.value.args_[3] == deadline
    with _refused("InvalidMerkleProof"):  # another leaf's data is no answer
        c.answer_demand(w.account_id, 1, leaf_index=2, tag=epoch.tags[3],
                        commitment=epoch.commitments[3], proof=epoch.proofs[3],
                        path=epoch.path(2))
    c.advance_time(WINDOW - 60)
    receipt = answer(c, epoch, 2)  # the operator answers
    answered_at = c.w3.eth.get_block(receipt.blockNumber)["timestamp"]
    record = c.epoch(w.account_id, 1)
    assert record.open_demands == 0 and record.ready_at == answered_at + WINDOW
    assert c.balance_of(w.operator) == DEFAULT_PARAMS.demand_bond  # the demander paid
    assert c.demand(w.account_id, 1, 2).status is DemandStatus.ANSWERED
    with _refused("DemandExists"):  # an answered leaf cannot be demanded again
        _demand(c, epoch, 2, sender=demander)
    # the settler reads the answer back from the chain, byte for byte
    got = c.answered_leaf(w.account_id, 1, 2)
    assert got is not None and (got.tag, got.commitment, got.proof) == (
        epoch.tags[2], epoch.commitments[2], epoch.proofs[2])
    c.advance_time(120)  # past the original window, inside the reopened one
    with _refused("EpochNotFinalizable"):
        c.finalize(w.account_id, 1)
    c.advance_time(WINDOW)
    c.finalize(w.account_id, 1)
    assert c.earnings(w.provider_id) == sum(VALUES) * UNIT_PRICE


def test_answered_bad_proof_can_then_be_challenged(tworld):
    w, c = tworld, tworld.client
    epoch = make_epoch(c, w.account_id, 1, [1, 2], bad={1: "overflow"})
    submit(c, epoch)
    _demand(c, epoch, 1, sender=w.actor(4))
    answer(c, epoch, 1)
    got = c.answered_leaf(w.account_id, 1, 1)
    c.advance_time(WINDOW - 10)  # the original window is over, the reopened one is not
    c.challenge(w.account_id, 1, leaf_index=1, tag=got.tag, commitment=got.commitment,
                proof=got.proof, path=got.path, sender=w.actor(5))
    assert c.epoch(w.account_id, 1).status is EpochStatus.REJECTED
    assert c.balance_of(w.actor(5)) == BOND // 10


def test_demand_refusals_and_refund(tworld):
    w, c = tworld, tworld.client
    epoch = make_epoch(c, w.account_id, 1, [1, 2, 3, 4], bad={0: "context"})
    submit(c, epoch)
    demander = w.actor(4)
    with _refused("LeafIndexOutOfRange"):
        _demand(c, epoch, 4, sender=demander)
    salt = secrets.token_bytes(32)
    c.commit_challenge(2, w.account_id, 1, 1, salt, sender=demander)
    with _refused("InvalidAmount"):  # the bond is exact
        c._send(c.settlement.functions.demandData(w.account_id, 1, 1, salt), sender=demander,
                value=1)
    _demand(c, epoch, 1, sender=demander)
    with _refused("DemandExists"):
        _demand(c, epoch, 1, sender=w.actor(5))
    with _refused("DemandNotOpen"):
        c.resolve_demand(w.account_id, 1, 2)
    # the epoch is rejected for another reason: the open demand is refunded, not slashed
    challenge(c, epoch, 0, sender=w.actor(5))
    c.resolve_demand(w.account_id, 1, 1)
    assert c.demand(w.account_id, 1, 1).status is DemandStatus.REFUNDED
    assert c.balance_of(demander) == DEFAULT_PARAMS.demand_bond
    c.advance_time(WINDOW + 1)
    with _refused("EpochNotPending"):
        _demand(c, epoch, 2, sender=demander)


def test_demand_after_window_and_late_answer_are_refused(tworld):
    w, c = tworld, tworld.client
    epoch = make_epoch(c, w.account_id, 1, [1, 2])
    submit(c, epoch)
    _demand(c, epoch, 0, sender=w.actor(4))
    c.advance_time(DEFAULT_PARAMS.response_window + 1)
    with _refused("DemandExpired"):
        answer(c, epoch, 0)
    with _refused("ChallengeWindowClosed"):
        _demand(c, epoch, 1, sender=w.actor(4))


# ------------------------------------------------------------ provider life cycle


def test_provider_ids_cannot_be_squatted(tworld):
    w, c = tworld, tworld.client
    squatter = w.actor(9)
    c.register_provider(w.key, bond=BOND, unit_price=1, challenge_window=WINDOW,
                        sender=squatter)  # the same signing key gives the squatter its own id
    squatted = c.provider_id_for(w.key, operator=squatter)
    assert squatted != w.provider_id
    assert c.provider(w.provider_id).operator == w.operator
    assert c.provider(w.provider_id).signing_key == w.key
    assert c.provider_id_for(w.key) == bytes(
        c.settlement.functions.providerIdOf(w.operator, w.key).call())
    with _refused("ProviderAlreadyRegistered"):
        c.register_provider(w.key, bond=BOND, unit_price=1, challenge_window=WINDOW)


def test_operator_transfer_is_two_step(tworld):
    w, c = tworld, tworld.client
    new = w.actor(6)
    c.transfer_operator(w.provider_id, new)
    with _refused("NotPendingOperator"):
        c.accept_operator(w.provider_id, sender=w.actor(7))
    assert c.provider(w.provider_id).operator == w.operator  # not until accepted
    c.accept_operator(w.provider_id, sender=new)
    assert c.provider(w.provider_id).operator.lower() == new.lower()
    with _refused("NotOperator"):
        submit(c, make_epoch(c, w.account_id, 1, [1]))
    submit(c, make_epoch(c, w.account_id, 1, [1]), sender=new)


def test_bond_exits_after_cooldown_with_nothing_pending(tworld):
    w, c = tworld, tworld.client
    submit(c, make_epoch(c, w.account_id, 1, [1]))
    with _refused("UnbondNotReady"):
        c.withdraw_bond(w.provider_id)
    c.request_unbond(w.provider_id)
    with _refused("ProviderExiting"):
        submit(c, make_epoch(c, w.account_id, 2, [1]))
    c.advance_time(DEFAULT_PARAMS.bond_cooldown + 1)
    with _refused("EpochsPending"):
        c.withdraw_bond(w.provider_id)
    c.finalize(w.account_id, 1)
    to = w.actor(8)
    before = _eth(c, to)
    c.withdraw_bond(w.provider_id, to=to)
    assert _eth(c, to) - before == BOND and c.provider(w.provider_id).bond == 0
    c.add_bond(w.provider_id, BOND)  # it may come back: the exit is over
    submit(c, make_epoch(c, w.account_id, 2, [1]))


def test_unbond_can_be_cancelled(tworld):
    w, c = tworld, tworld.client
    with _refused("UnbondNotReady"):
        c.cancel_unbond(w.provider_id)
    c.request_unbond(w.provider_id)
    c.cancel_unbond(w.provider_id)
    submit(c, make_epoch(c, w.account_id, 1, [1]))


# ---------------------------------------------------------------------- tokens


def _token_world(c, harness_artifacts, name):
    from tests.contracts.helpers import deploy_harness

    w = _world(c, escrow=0)
    token = deploy_harness(c, harness_artifacts, name)
    payer = w.actor(2)
    c.open_account(w.provider_id, asset=token.address, sender=payer)
    aid = c.account_id_for(w.provider_id, payer=payer, asset=token.address)
    c._send(token.functions.mint(payer, 10**12))
    c.approve_token(token.address, 10**12, sender=payer)
    return w, token, payer, aid


def test_fee_on_transfer_token_is_refused(client, harness_artifacts):
    c = client
    _, _, payer, aid = _token_world(c, harness_artifacts, "FeeOnTransferToken")
    with pytest.raises(SettlementError) as info:
        c.deposit(aid, 10_000, sender=payer)
    assert info.value.name == "UnsupportedToken" and info.value.args_[1:] == (10_000, 9_900)
    assert c.billing_account(aid).escrow == 0


def test_rebasing_token_is_refused_after_it_shrinks(client, harness_artifacts):
    c = client
    _, token, payer, aid = _token_world(c, harness_artifacts, "RebasingToken")
    c.deposit(aid, 10_000, sender=payer)
    c._send(token.functions.rebaseDown(c.settlement.address, 1))
    with _refused("UnsupportedToken"):
        c.deposit(aid, 10_000, sender=payer)


def test_token_that_calls_back_cannot_reenter(client, harness_artifacts):
    c = client
    _, token, payer, aid = _token_world(c, harness_artifacts, "ReentrantToken")
    c.deposit(aid, 5_000, sender=payer)
    c.request_withdrawal(aid, 5_000, sender=payer)
    c.advance_time(DEFAULT_PARAMS.withdrawal_notice + 1)
    # during the next deposit's transferFrom the token calls completeWithdrawal
    s = c.settlement
    c._send(token.functions.arm(s.address, s.encode_abi("completeWithdrawal", [aid, payer])))
    c.deposit(aid, 1_000, sender=payer)  # the hook's call failed; the deposit went through
    reverted = bytes(token.functions.lastRevert().call())
    guard = c.w3.keccak(text="ReentrancyGuardReentrantCall()")[:4]
    assert reverted[:4] == guard
    account = c.billing_account(aid)
    assert account.escrow == 6_000 and account.withdrawal_amount == 5_000
    c.complete_withdrawal(aid, sender=payer)
    assert c.billing_account(aid).escrow == 1_000
