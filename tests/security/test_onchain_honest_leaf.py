"""An honest provider can never be slashed (issue 12): leaves made by the prover's own
pipeline (derivations, executor) at the one bit size it accepts, n = 32, survive an
on-chain range-proof challenge, on py-evm and on anvil."""

import secrets

import pytest

from circuits import merkle
from circuits.transcript import RangeProofContext
from prover.chain import SettlementError
from prover.epoch.close import EpochInputs, plan
from prover.epoch.executor import InlineExecutor
from tests.contracts import helpers
from tests.contracts.helpers import challenge, submit
from verifier.bundle import Leaf, failing_proofs

BOND = 10**18
SECRET = b"on-chain honest leaf test master secret, 32+ bytes"


def pipeline_epoch(client, account_id: bytes, epoch_id: int, totals: dict[str, int]):
    """The leaves `epoch close` derives and proves for ``totals``, bound to ``account_id``
    (the subject the contract verifies proofs under), in tag order."""
    ctx = RangeProofContext(chain_id=client.chain_id,
                            contract=bytes.fromhex(client.settlement.address[2:]),
                            provider_id=account_id, epoch_id=epoch_id)
    inputs = EpochInputs(ctx=ctx, window_start=0, window_end=3_600_000,
                         rate_card_hash=bytes(32), bit_size=32, totals=totals, min_leaves=4)
    planned = sorted(plan(inputs, SECRET), key=lambda p: p.job.tag)
    results = {r.tag: r for batch in InlineExecutor().run(ctx, 32, [p.job for p in planned])
               for r in batch}
    leaves = [Leaf(p.job.tag, results[p.job.tag].commitment, results[p.job.tag].proof)
              for p in planned]
    assert [leaf.commitment for leaf in leaves] == [p.commitment for p in planned]
    assert failing_proofs(ctx, 32, [(leaf.proof, leaf.commitment) for leaf in leaves]) == []
    epoch = helpers.TestEpoch(account_id, epoch_id, [p.job.value for p in planned],
                      [p.job.blinding for p in planned], [leaf.tag for leaf in leaves],
                      [leaf.commitment for leaf in leaves], [leaf.proof for leaf in leaves])
    epoch.tree = merkle.levels([leaf.hash() for leaf in leaves])
    return epoch


def test_pipeline_leaves_survive_a_challenge(client):
    payer, challenger = client.w3.eth.accounts[1], client.w3.eth.accounts[4]
    key = secrets.token_bytes(32)
    client.register_provider(key, bond=BOND, unit_price=1, challenge_window=3_600)
    provider_id = client.provider_id_for(key)
    client.open_account(provider_id, sender=payer)
    account_id = client.account_id_for(provider_id, payer=payer)
    client.deposit(account_id, 10**17, sender=payer)
    epoch = pipeline_epoch(client, account_id, 1, {"alice": 2**32 - 1, "bob": 0, "carol": 77})
    submit(client, epoch)
    for index in range(len(epoch.tags)):  # every leaf, padding included
        with pytest.raises(SettlementError, match=r"^RangeProofValid\("):
            challenge(client, epoch, index, sender=challenger)
    assert client.provider(provider_id).bond == BOND
