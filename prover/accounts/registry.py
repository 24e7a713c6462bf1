"""The provider's register of billing accounts and of the users under them.

An account is (provider, payer, asset) with the payer's X25519 key, to which its epoch
statements are sealed; its id is the contract's (verifier/account.py), computed from the
provider's operator address and Ed25519 key. A gateway registers each user under one account
(with the user's X25519 key, to which its openings are sealed); a user never moves to another
account, so an epoch's per-account totals are a partition of its per-user totals. Closing an
account refuses its usage from then on (prover/accounts/admission.py); closed stays closed.
"""

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, insert, select, update

from prover.epoch.storage import EpochStore
from prover.errors import AccountStateError, InvalidRequestError, UnknownUserError
from prover.ledger.schema import (
    ACCOUNT_CLOSED,
    ACCOUNT_OPEN,
    account_epochs,
    account_users,
    accounts,
)
from prover.ledger.store import now_ms
from prover.metering import check_identifier
from verifier.account import AccountBlock
from verifier.receipts import MAX_USER_ID_BYTES


@dataclass(frozen=True, slots=True)
class Account:
    """One billing account as the provider keeps it."""

    account_id: bytes
    payer: bytes
    asset: bytes
    payer_x25519_public_key: bytes
    status: str

    def block(self, operator: bytes) -> AccountBlock:
        """The bundle's account block."""
        return AccountBlock(operator=operator, payer=self.payer, asset=self.asset)


def _account(row: Any) -> Account:
    return Account(account_id=bytes(row.account_id), payer=bytes(row.payer),
                   asset=bytes(row.asset),
                   payer_x25519_public_key=bytes(row.payer_x25519_public_key),
                   status=row.status)


def check_user_id(user_id: object) -> str:
    """A user id, validated as the meter validates it (prover.metering.check_identifier)."""
    check_identifier(user_id, "user_id", MAX_USER_ID_BYTES)
    return str(user_id)


def _check_bytes(value: object, name: str, length: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != length:
        raise InvalidRequestError(f"{name} must be {length} bytes")
    return value


class AccountRegistry:
    """Accounts and their users in the ledger's database (module docstring)."""

    def __init__(self, engine: Engine, *, operator: bytes, provider_key: bytes) -> None:
        self.engine = engine
        self.operator = _check_bytes(operator, "operator address", 20)
        self.provider_key = _check_bytes(provider_key, "provider key", 32)

    def account_id(self, payer: bytes, asset: bytes) -> bytes:
        """The contract's id of this provider's account for ``payer`` in ``asset``."""
        return AccountBlock(operator=self.operator, payer=payer,
                            asset=asset).account_id(self.provider_key)

    def register_account(self, *, payer: bytes, asset: bytes,
                         payer_x25519_public_key: bytes) -> Account:
        """Create the account (open), or update the payer key of an open one."""
        payer = _check_bytes(payer, "payer", 20)
        asset = _check_bytes(asset, "asset", 20)
        key = _check_bytes(payer_x25519_public_key, "payer_x25519_public_key", 32)
        account_id = self.account_id(payer, asset)
        with self.engine.begin() as conn:
            row = conn.execute(select(accounts).where(accounts.c.account_id == account_id)
                               .with_for_update()).first()
            if row is None:
                conn.execute(insert(accounts).values(
                    account_id=account_id, payer=payer, asset=asset,
                    payer_x25519_public_key=key, status=ACCOUNT_OPEN, opened_ms=now_ms()))
            elif row.status != ACCOUNT_OPEN:
                raise AccountStateError(f"billing account 0x{account_id.hex()} is closed; "
                                        "closed accounts stay closed")
            else:
                conn.execute(update(accounts).where(accounts.c.account_id == account_id)
                             .values(payer_x25519_public_key=key))
        return Account(account_id, payer, asset, key, ACCOUNT_OPEN)

    def close_account(self, account_id: bytes) -> Account:
        """Refuse the account's usage from now on (waits for ingest holding it)."""
        with self.engine.begin() as conn:
            row = conn.execute(select(accounts).where(accounts.c.account_id == account_id)
                               .with_for_update()).first()
            if row is None:
                raise UnknownUserError(f"no billing account 0x{account_id.hex()}")
            conn.execute(update(accounts).where(accounts.c.account_id == account_id)
                         .values(status=ACCOUNT_CLOSED, closed_ms=now_ms()))
        return replace(_account(row), status=ACCOUNT_CLOSED)

    def account(self, account_id: bytes) -> Account:
        """One account; UnknownUserError (NOT_FOUND) if there is none."""
        with self.engine.begin() as conn:
            row = conn.execute(select(accounts)
                               .where(accounts.c.account_id == account_id)).first()
        if row is None:
            raise UnknownUserError(f"no billing account 0x{account_id.hex()}")
        return _account(row)

    def accounts(self, account_ids: Iterable[bytes] | None = None) -> dict[bytes, Account]:
        """Accounts by id (all of them if ``account_ids`` is None)."""
        query = select(accounts)
        if account_ids is not None:
            query = query.where(accounts.c.account_id.in_(list(account_ids)))
        with self.engine.begin() as conn:
            return {bytes(r.account_id): _account(r) for r in conn.execute(query)}

    def register_user(self, user_id: str, account_id: bytes,
                      x25519_public_key: bytes | None = None) -> None:
        """Put the user under an open account (idempotent); with a key, register it too."""
        user_id = check_user_id(user_id)
        account_id = _check_bytes(account_id, "account_id", 32)
        if x25519_public_key is not None:
            _check_bytes(x25519_public_key, "x25519_public_key", 32)
        now = now_ms()
        with self.engine.begin() as conn:
            status = conn.execute(select(accounts.c.status)
                                  .where(accounts.c.account_id == account_id)
                                  .with_for_update(read=True)).scalar()
            if status is None:
                raise UnknownUserError(f"no billing account 0x{account_id.hex()}")
            if status != ACCOUNT_OPEN:
                raise AccountStateError(f"billing account 0x{account_id.hex()} is {status}; "
                                        "it takes no new users")
            current = conn.execute(select(account_users.c.account_id)
                                   .where(account_users.c.user_id == user_id)).scalar()
            if current is None:
                conn.execute(insert(account_users).values(user_id=user_id,
                                                          account_id=account_id,
                                                          registered_ms=now))
            elif bytes(current) != account_id:
                raise AccountStateError("the user already belongs to another billing account "
                                        "(a user never moves)")
        if x25519_public_key is not None:  # a new key, or the same again (else ALREADY_EXISTS:
            # only an operator's rotation replaces a key)
            EpochStore(self.engine).register_user_key(user_id, x25519_public_key)

    def user_account(self, user_id: str) -> bytes | None:
        """The account a user belongs to, if registered."""
        with self.engine.begin() as conn:
            value = conn.execute(select(account_users.c.account_id)
                                 .where(account_users.c.user_id == user_id)).scalar()
        return None if value is None else bytes(value)

    def accounts_of(self, user_ids: Iterable[str]) -> dict[str, bytes]:
        """The account of each registered user among ``user_ids``."""
        wanted = list(user_ids)
        out: dict[str, bytes] = {}
        with self.engine.begin() as conn:
            for start in range(0, len(wanted), 500):
                for row in conn.execute(select(account_users.c.user_id,
                                               account_users.c.account_id)
                                        .where(account_users.c.user_id.in_(
                                            wanted[start:start + 500]))):
                    out[row.user_id] = bytes(row.account_id)
        return out

    def users_of(self, account_id: bytes) -> list[str]:
        """Every user registered under an account, sorted."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(account_users.c.user_id)
                                .where(account_users.c.account_id == account_id)
                                .order_by(account_users.c.user_id)).all()
        return [r.user_id for r in rows]

    def usage(self, account_id: bytes) -> dict[int, int]:
        """Units metered per epoch for an account."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(account_epochs.c.epoch_id, account_epochs.c.units)
                                .where(account_epochs.c.account_id == account_id)).all()
        return {r.epoch_id: r.units for r in rows}
