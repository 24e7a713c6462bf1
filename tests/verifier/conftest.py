"""Golden bundles made by the real epoch pipeline (prover.epoch.close)."""

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from circuits.transcript import RangeProofContext
from prover.epoch.close import EpochInputs, MemoryLeafStore, close_epoch
from prover.epoch.executor import ProcessExecutor

PROVIDER_SEED = b"zkmeter test provider seed 32 b!"
MASTER_SECRET = b"zkmeter test master secret, 32 bytes at least"


def make_epoch(users: dict[str, int], *, epoch_id: int = 5, executor=None, keys=None):
    signing_key = SigningKey(PROVIDER_SEED)
    ctx = RangeProofContext(chain_id=31337, contract=bytes.fromhex("11" * 20),
                            provider_id=bytes(signing_key.verify_key), epoch_id=epoch_id)
    inputs = EpochInputs(ctx=ctx, window_start=1_700_000_000, window_end=1_700_003_600,
                         rate_card_hash=bytes.fromhex("ab" * 32), bit_size=32, totals=users)
    return close_epoch(inputs, secret=MASTER_SECRET, signing_key=signing_key,
                       store=MemoryLeafStore(), executor=executor, user_keys=keys)


@pytest.fixture(scope="session")
def user_keys():
    return {f"user-{i}": PrivateKey.generate() for i in range(11)}


@pytest.fixture(scope="session")
def small_epoch(user_keys):
    users = {f"user-{i}": 1_000 * i + 7 for i in range(11)}
    return make_epoch(users, keys={u: bytes(k.public_key) for u, k in user_keys.items()})


@pytest.fixture(scope="session")
def small_bundle_json(small_epoch):
    return small_epoch.bundle.to_json()


@pytest.fixture(scope="session")
def large_epoch():
    with ProcessExecutor(2) as executor:
        return make_epoch({f"u{i:04d}": i * 3 for i in range(1024)}, executor=executor)
