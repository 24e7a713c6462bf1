"""Epoch close never signs a bundle that could get an honest provider slashed (issue 12):
only the settlement bit size, and (below) every proof checked before the signature."""

from dataclasses import replace

import pytest
from nacl.signing import SigningKey

from circuits.transcript import RangeProofContext
from prover.epoch.close import EpochCloseError, EpochInputs, MemoryLeafStore, close_epoch

SECRET = b"close integrity test master secret (32+ bytes)"
KEY = SigningKey(b"i" * 32)


def inputs(**changes) -> EpochInputs:
    ctx = RangeProofContext(chain_id=5, contract=b"\x07" * 20,
                            provider_id=bytes(KEY.verify_key), epoch_id=4)
    base = EpochInputs(ctx=ctx, window_start=10, window_end=20, rate_card_hash=b"\x01" * 32,
                       bit_size=32, totals={"alice": 12, "bob": 30}, min_leaves=4)
    return replace(base, **changes)


@pytest.mark.parametrize("n", [8, 16, 64])
def test_close_refuses_a_bit_size_the_contract_cannot_check(n):
    store = MemoryLeafStore()
    with pytest.raises(EpochCloseError, match=f"n = {n} cannot settle"):
        close_epoch(inputs(bit_size=n), secret=SECRET, signing_key=KEY, store=store)
    assert store.finished() == {}  # nothing proved, nothing stored
