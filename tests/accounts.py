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

