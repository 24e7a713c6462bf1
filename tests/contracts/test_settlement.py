"""ZkMeterSettlement end to end, on the embedded py-evm chain and on a real anvil node."""

import secrets

import pytest

from circuits.constants import CURVE_ORDER, FIELD_MODULUS
from prover.chain import LeafInput, SettlementError
from tests.contracts.helpers import challenge, make_epoch, submit
from verifier.chain import EpochStatus

BOND = 10**18
UNIT_PRICE = 1_000_000
WINDOW = 3_600
VALUES = [5, 7, 0, 100, 2**32 - 1, 3, 4, 9]


def _provider(client, *, operator=None):
    pid = secrets.token_bytes(32)
    client.register_provider(pid, bond=BOND, unit_price=UNIT_PRICE, challenge_window=WINDOW,
                             sender=operator)
    client.deposit(pid, 10**19, sender=client.w3.eth.accounts[1])
    return pid


def _refused(name):
    """pytest.raises for one custom error, by name."""
    return pytest.raises(SettlementError, match=rf"^{name}\(")


def _eth_spent(client, receipt):
    return receipt.gasUsed * receipt.effectiveGasPrice


def test_honest_epoch_settles_and_pays_exactly(client):
    pid = _provider(client)
    epoch = make_epoch(client, pid, 1, VALUES)
    submit(client, epoch)
    record = client.epoch(pid, 1)
    assert record.status is EpochStatus.PENDING
    assert record.merkle_root == epoch.root and record.total == sum(VALUES)
    assert record.leaf_count == 8

    with _refused("EpochNotFinalizable"):
        client.finalize(pid, 1)
    escrow_before = client.provider(pid).escrow
    client.advance_time(WINDOW + 1)
    with _refused("ChallengeWindowClosed"):
        challenge(client, epoch, 0)
    client.finalize(pid, 1, sender=client.w3.eth.accounts[3])  # anyone may finalize
    payment = sum(VALUES) * UNIT_PRICE
    provider = client.provider(pid)
    assert client.epoch(pid, 1).status is EpochStatus.FINALIZED
    assert provider.earnings == payment
    assert provider.escrow == escrow_before - payment
    assert provider.bond == BOND

    with pytest.raises(SettlementError) as info:
        client.finalize(pid, 1)
    assert info.value.name == "EpochNotPending"
    assert info.value.args_[2] == EpochStatus.FINALIZED

    operator = client.account
    before = client.w3.eth.get_balance(operator)
    receipt = client.withdraw_earnings(pid)
    after = client.w3.eth.get_balance(operator)
    assert after - before + _eth_spent(client, receipt) == payment
    with _refused("NothingToWithdraw"):
        client.withdraw_earnings(pid)


def test_bad_proof_is_challenged_rejected_and_slashed(client):
    pid = _provider(client)
    epoch = make_epoch(client, pid, 7, VALUES, bad={2: "overflow"})
    submit(client, epoch)  # the sum still opens: only the range proof can catch it
    assert client.epoch(pid, 7).total == sum(VALUES) - VALUES[2] + 2**32

    challenger = client.w3.eth.accounts[2]
    with _refused("RangeProofValid"):  # the good leaves stand
        challenge(client, epoch, 3, sender=challenger)
    challenge(client, epoch, 2, sender=challenger)
    assert client.epoch(pid, 7).status is EpochStatus.REJECTED
    assert client.provider(pid).bond == 0
    assert client.balance_of(challenger) == BOND

    with _refused("EpochNotPending"):
        challenge(client, epoch, 2)
    client.advance_time(WINDOW + 1)
    with _refused("EpochNotPending"):
        client.finalize(pid, 7)
    with _refused("NoBond"):
        submit(client, make_epoch(client, pid, 8, [1, 2]))

    before = client.w3.eth.get_balance(challenger)
    receipt = client.withdraw(sender=challenger)
    assert client.w3.eth.get_balance(challenger) - before + _eth_spent(client, receipt) == BOND
    assert client.balance_of(challenger) == 0


def test_proof_for_another_epoch_is_a_bad_proof(tester_client):
    client = tester_client
    pid = _provider(client)
    epoch = make_epoch(client, pid, 3, [1, 2], bad={1: "context"})
    submit(client, epoch)
    challenge(client, epoch, 1)
    assert client.epoch(pid, 3).status is EpochStatus.REJECTED


def test_submit_refusals(client):
    pid = _provider(client)
    epoch = make_epoch(client, pid, 5, [1, 2, 3, 4])
    leaves = epoch.leaves

    def send(*, epoch_id=5, total=epoch.total, blinding=epoch.total_blinding, leaves=leaves,
             sender=None):
        return client.submit_epoch(pid, epoch_id, total=total, total_blinding=blinding,
                                   leaves=leaves, sender=sender)

    stranger = client.w3.eth.accounts[4]
    with pytest.raises(SettlementError) as info:
        send(sender=stranger)
    assert info.value.name == "NotOperator" and info.value.args_[1].lower() == stranger.lower()
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

    c = leaves[1].commitment
    x, y = int.from_bytes(c[:32], "big"), int.from_bytes(c[32:], "big")
    off_curve = (x.to_bytes(32, "big") + ((y + 1) % FIELD_MODULUS).to_bytes(32, "big"))
    with pytest.raises(SettlementError) as info:
        send(leaves=[leaves[0], LeafInput(leaves[1].tag, off_curve, leaves[1].proof_hash),
                     *leaves[2:]])
    assert info.value.name == "PointNotOnCurve" and info.value.args_ == (x, (y + 1) % FIELD_MODULUS)
    # x + p encodes the same residue: only the range check can refuse it
    non_canonical = (x + FIELD_MODULUS).to_bytes(32, "big") + c[32:]
    with pytest.raises(SettlementError) as info:
        send(leaves=[leaves[0], LeafInput(leaves[1].tag, non_canonical, leaves[1].proof_hash),
                     *leaves[2:]])
    assert info.value.name == "CoordinateNotInField" and info.value.args_ == (x + FIELD_MODULUS,)
    with _refused("PointNotOnCurve"):  # the identity is not a commitment
        send(leaves=[LeafInput(leaves[0].tag, bytes(64), leaves[0].proof_hash), *leaves[1:]])

    send()
    with pytest.raises(SettlementError) as info:
        send()
    assert info.value.name == "EpochIdNotIncreasing" and info.value.args_[1:] == (5, 5)
    with _refused("EpochIdNotIncreasing"):
        send(epoch_id=4)


def test_challenge_refusals(client):
    pid = _provider(client)
    epoch = make_epoch(client, pid, 1, [1, 2, 3, 4])
    submit(client, epoch)
    with _refused("EpochNotFound"):
        client.challenge(pid, 2, leaf_index=0, tag=epoch.tags[0],
                         commitment=epoch.commitments[0], proof=epoch.proofs[0],
                         path=epoch.path(0))
    with _refused("InvalidMerkleProof"):  # a proof that is not the committed one
        client.challenge(pid, 1, leaf_index=0, tag=epoch.tags[0],
                         commitment=epoch.commitments[0], proof=epoch.proofs[1],
                         path=epoch.path(0))
    with _refused("InvalidMerkleProof"):  # a path of the wrong length
        client.challenge(pid, 1, leaf_index=0, tag=epoch.tags[0],
                         commitment=epoch.commitments[0], proof=epoch.proofs[0],
                         path=epoch.path(0)[:1])
    with _refused("LeafIndexOutOfRange"):
        client.challenge(pid, 1, leaf_index=4, tag=epoch.tags[0],
                         commitment=epoch.commitments[0], proof=epoch.proofs[0],
                         path=epoch.path(0))


def test_registration_and_deposit_refusals(tester_client):
    client = tester_client
    pid = _provider(client)
    with _refused("ProviderAlreadyRegistered"):
        client.register_provider(pid, bond=1, unit_price=1, challenge_window=1)
    with _refused("InvalidParameter"):
        client.register_provider(secrets.token_bytes(32), bond=0, unit_price=1,
                                 challenge_window=1)
    with _refused("InvalidParameter"):
        client.register_provider(secrets.token_bytes(32), bond=1, unit_price=1,
                                 challenge_window=2**24)
    with _refused("UnknownProvider"):
        client.deposit(secrets.token_bytes(32), 1)
    with _refused("NotOperator"):
        client.add_bond(pid, 1, sender=client.w3.eth.accounts[5])
    with _refused("NothingToWithdraw"):
        client.withdraw(sender=client.w3.eth.accounts[6])


def test_finalize_needs_escrow(tester_client):
    client = tester_client
    pid = secrets.token_bytes(32)
    client.register_provider(pid, bond=BOND, unit_price=UNIT_PRICE, challenge_window=10)
    epoch = make_epoch(client, pid, 1, [10, 20])
    submit(client, epoch)
    client.advance_time(11)
    with pytest.raises(SettlementError) as info:
        client.finalize(pid, 1)
    assert info.value.name == "InsufficientEscrow"
    assert info.value.args_[1:] == (30 * UNIT_PRICE, 0)
    client.deposit(pid, 30 * UNIT_PRICE)
    client.finalize(pid, 1)
    assert client.provider(pid).escrow == 0
