"""Test fixtures' billing accounts: register an account and put users under it.

Every user must belong to an open billing account before its usage is metered
(prover/accounts/); tests that meter usage enroll their users with :func:`enroll`.
"""

from collections.abc import Iterable, Mapping

from sqlalchemy import Engine

from prover.accounts.registry import AccountRegistry
from verifier.account import ETH

OPERATOR = bytes.fromhex("0f" * 20)
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
