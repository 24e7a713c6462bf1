"""Test fixtures' billing accounts: register an account and put users under it.

Every user must belong to an open billing account before its usage is metered
(prover/accounts/); tests that meter usage enroll their users with :func:`enroll`.
"""

from collections.abc import Iterable, Mapping

from sqlalchemy import Engine

from prover.accounts.registry import AccountRegistry
from verifier.account import ETH

# ZKMETER_OPERATOR_ADDRESS's default: services built from default settings derive the same
# account ids (a test of a real operator passes its own address)
OPERATOR = bytes(20)
PAYER = bytes.fromhex("a1" * 20)
PAYER_KEY = bytes(range(1, 33))  # an X25519 public key nobody opens in these tests
# The user ids the metering tests use (fixtures enroll them all under one account).
STANDARD_USERS = ("alice", "bob", "carol", "dave", "user-ä", "a", "b", "c", "solo",
                  *(f"user-{i}" for i in range(100)))


def registry(engine: Engine, provider_key: bytes, operator: bytes = OPERATOR) -> AccountRegistry:
    """The account register of a test ledger."""
    return AccountRegistry(engine, operator=operator, provider_key=provider_key)


def enroll(engine: Engine, provider_key: bytes, users: Iterable[str], *, payer: bytes = PAYER,
           asset: bytes = ETH, payer_key: bytes = PAYER_KEY,
           keys: Mapping[str, bytes] | None = None, operator: bytes = OPERATOR) -> bytes:
    """Open (or reuse) the account of ``payer`` in ``asset`` and register ``users`` under it
    (with their X25519 keys from ``keys``); returns the account id."""
    reg = registry(engine, provider_key, operator)
    account = reg.register_account(payer=payer, asset=asset, payer_x25519_public_key=payer_key)
    for user in users:
        reg.register_user(user, account.account_id, (keys or {}).get(user))
    return account.account_id


def uninterrupted_close(service, epoch_id: int, account_id: bytes, signing_key, *,
                        min_leaves: int | None = None):
    """The bundle and payer statement an uninterrupted, in-memory, inline close of one
    account's part of ``epoch_id`` makes from what the ledger holds: the reference a resumed
    or raced close must equal byte for byte (close_epoch is deterministic)."""
    from prover.epoch.close import EpochInputs, MemoryLeafStore, close_epoch
    from prover.epoch.derive import master_secret
    from prover.epoch.executor import InlineExecutor
    from verifier.statement import make_statement

    ledger = service.ledger
    info = ledger.epoch(epoch_id)
    account = service.accounts.account(account_id)
    users = {u: v for u, v in ledger.totals(epoch_id).items()
             if service.accounts.user_account(u) == account_id}
    inputs = EpochInputs(ctx=service.context(epoch_id, account_id),
                         window_start=info.window_start_ms, window_end=info.window_end_ms,
                         rate_card_hash=info.rate_card_hash, bit_size=info.bit_size,
                         totals=users,
                         min_leaves=service.params.min_leaves if min_leaves is None
                         else min_leaves,
                         account=account.block(service.params.operator))
    closed = close_epoch(inputs, secret=master_secret(signing_key), signing_key=signing_key,
                         store=MemoryLeafStore(), executor=InlineExecutor())
    heads = ledger.chain_heads(epoch_id)
    statement = make_statement(closed.bundle, [
        (p.job.tag, p.user_id, p.job.value, p.job.blinding,
         bytes(32) if p.user_id is None else heads[p.user_id]) for p in closed.planned],
        signing_key)
    return closed.bundle, statement



def overlapping_bursts(meters, request, *, per_meter: int = 20, batch: int = 4):
    """Each meter records ``per_meter`` requests (``request(meter_index, n)``) in batches of
    ``batch``, all starting together on their own threads; returns every outcome (stored or
    the error) and raises unless the bursts really overlapped in time."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(len(meters))
    spans = []

    def burst(index):
        barrier.wait()
        start = time.monotonic()
        out = []
        for j in range(0, per_meter, batch):
            out += meters[index].record_batch([request(index, j + i) for i in range(batch)])
        spans.append((start, time.monotonic()))
        return out

    with ThreadPoolExecutor(len(meters)) as pool:
        outcomes = [o for result in pool.map(burst, range(len(meters))) for o in result]
    first, second = sorted(spans)[:2]
    if not second[0] < first[1]:
        raise AssertionError("the bursts did not overlap: the test proves nothing")
    return outcomes
