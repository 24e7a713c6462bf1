"""Admission of usage into the ledger: the user's account, its state, its limits.

Runs inside the ledger's append transaction (prover/ledger/store.py), after the per-user
state rows are locked and before any event is sealed, so that a refused event stores nothing
and a receipt is never issued for usage that cannot be billed:

1. every user of the batch must be registered under an account (else UnknownUserError);
2. the batch's accounts are locked in id order: ``FOR UPDATE`` when the account has a
   prepaid limit or the batch brings a user's first event of the epoch, ``FOR SHARE``
   otherwise (on SQLite, ``BEGIN IMMEDIATE`` already serializes every writer); the account
   must be ``open`` (else AccountStateError);
3. a user's first event of the epoch needs a free leaf: at most ``max_leaves`` users per
   account and epoch (else AccountLeafLimitError);
4. with an escrow view (prover/accounts/escrow.py), the account's units of the open epoch and
   of every epoch after the chain's ``lastEpochId``, plus this event, must stay within
   ``available - headroom`` (else PrepaidLimitError naming the remaining units); an account
   the chain does not know has no escrow (PrepaidLimitError, 0 units); an escrow that cannot
   be read refuses the account's events (EscrowUnavailableError), never admits them.

Escrow reads are slow on a cache miss (a chain round trip), so :meth:`AccountGate.prefetch`
warms them before the transaction for the users whose account this gate has already seen (a
user never moves account): the read inside the transaction is then a cache hit and no
database lock waits on the chain.

The row lock is taken before the usage is read (PostgreSQL's READ COMMITTED gives each
statement a fresh snapshot), so two concurrent bursts on one account see each other's
committed units and cannot overshoot. The admitted units and new users are added to
``account_epochs`` in the same transaction.
"""

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from prover.accounts.escrow import EscrowSource, EscrowView
from prover.errors import (
    AccountLeafLimitError,
    AccountStateError,
    ConfigError,
    EscrowUnavailableError,
    MeteringError,
    PrepaidLimitError,
    UnknownUserError,
)
from prover.ledger.schema import (
    ACCOUNT_OPEN,
    sqlite_in,
)

MAX_LEAVES = 1024  # the contract's MAX_LEAVES: leaves of one account's epoch
_KNOWN_USERS = 200_000  # user -> account entries prefetch remembers
_PG_USER_ACCOUNTS = ("SELECT user_id, account_id FROM account_users "
                     "WHERE user_id = ANY(%(users)b::text[])")
_SQLITE_USER_ACCOUNTS = "SELECT user_id, account_id FROM account_users WHERE user_id IN ({names})"
# Every ingest transaction runs these: driver-level text, built once (a statement built per
# batch cost more than running it: SQLAlchemy makes its cache key, and ``excluded`` an alias
# with proxies of every column, each time; a Core select built once still made its cache key
# on every execution, about 100 us each).
_PG_STATUS = "SELECT account_id, status FROM accounts WHERE account_id = %(id)s"
_PG_STATUS_FOR_SHARE = _PG_STATUS + " FOR SHARE"
_PG_STATUS_FOR_UPDATE = _PG_STATUS + " FOR UPDATE"
_SQLITE_STATUSES = "SELECT account_id, status FROM accounts WHERE account_id IN ({names})"
_USAGE_COLUMNS = "SELECT account_id, epoch_id, units, users FROM account_epochs "
_PG_USAGE = (_USAGE_COLUMNS
             + "WHERE account_id = ANY(%(ids)b::bytea[]) AND epoch_id >= %(oldest)s")
_SQLITE_USAGE = _USAGE_COLUMNS + "WHERE account_id IN ({names}) AND epoch_id >= :oldest"
_UPSERT_USAGE = ("INSERT INTO account_epochs (account_id, epoch_id, units, users) "
                 "VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (account_id, epoch_id) DO UPDATE SET "
                 "units = account_epochs.units + excluded.units, "
                 "users = account_epochs.users + excluded.users")
_ADD_USAGE = {"postgresql": _UPSERT_USAGE.format(p="%s"), "sqlite": _UPSERT_USAGE.format(p="?")}


@dataclass(slots=True)
class _Account:
    status: str
    users: int  # users with usage in the open epoch
    unsettled: int  # units of epochs the chain has not seen (the open one included)
    view: EscrowView | None
    unreadable: EscrowUnavailableError | None = None  # the escrow could not be read
    added_units: int = 0
    added_users: int = 0


@dataclass(slots=True)
class BatchAdmission:
    """The accounts of one append transaction (module docstring)."""

    gate: "AccountGate"
    epoch_id: int
    user_accounts: dict[str, bytes]
    accounts: dict[bytes, _Account] = field(default_factory=dict)

    def admit(self, user_id: str, units: int, *, first_event: bool) -> MeteringError | None:
        """None if the event may be sealed (and count it), else the refusal."""
        account_id = self.user_accounts.get(user_id)
        if account_id is None:
            return UnknownUserError(
                "user_id is not registered under a billing account (register the user first)")
        account = self.accounts[account_id]
        if account.status != ACCOUNT_OPEN:
            return AccountStateError(f"billing account 0x{account_id.hex()} is "
                                     f"{account.status}; usage refused")
        if account.unreadable is not None:
            return EscrowUnavailableError(str(account.unreadable), account_id=account_id)
        if first_event and account.users + account.added_users >= self.gate.max_leaves:
            return AccountLeafLimitError(
                f"billing account 0x{account_id.hex()} already has {self.gate.max_leaves} "
                "users with usage this epoch (the most one settlement takes)")
        if account.view is not None and not account.view.opened:
            return PrepaidLimitError(
                f"billing account 0x{account_id.hex()} is not open on-chain (no escrow); "
                "usage refused", account_id=account_id, remaining_units=0)
        if account.view is not None:
            remaining = (account.view.available_units - self.gate.headroom_units
                         - account.unsettled - account.added_units)
            if units > remaining:
                return PrepaidLimitError(
                    f"billing account 0x{account_id.hex()} has {max(remaining, 0)} units of "
                    f"prepaid escrow left; this event needs {units}",
                    account_id=account_id, remaining_units=max(remaining, 0))
        account.added_units += units
        if first_event:
            account.added_users += 1
        return None

    def registered(self, users: Sequence[str]) -> list[str]:
        """The users of ``users`` that belong to an account (the others are refused)."""
        return [u for u in users if u in self.user_accounts]

    def lock(self, conn: Connection, *, first_users: set[str]) -> None:
        """Lock the batch's accounts and read their usage (module docstring, step 2)."""
        wanted = sorted(set(self.user_accounts.values()))
        if not wanted:
            return
        escrow = self.gate.escrow
        views: dict[bytes, EscrowView | None] = {}
        unreadable: dict[bytes, EscrowUnavailableError] = {}
        for account_id in wanted:
            try:
                views[account_id] = escrow.view(account_id) if escrow is not None else None
            except EscrowUnavailableError as exc:
                views[account_id], unreadable[account_id] = None, exc
        exclusive = {self.user_accounts[u] for u in first_users if u in self.user_accounts}
        exclusive |= {a for a, v in views.items() if v is not None}
        status: dict[bytes, str] = {}
        postgres = conn.dialect.name == "postgresql"
        if postgres:  # one row at a time, in id order: no deadlock
            for account_id in wanted:
                lock = _PG_STATUS_FOR_UPDATE if account_id in exclusive else _PG_STATUS_FOR_SHARE
                row = conn.exec_driver_sql(lock, {"id": account_id}).first()
                if row is not None:
                    status[account_id] = row.status
        else:  # BEGIN IMMEDIATE: this transaction is the only writer
            names, values = sqlite_in(wanted)
            status = {bytes(r.account_id): r.status for r in conn.exec_driver_sql(
                _SQLITE_STATUSES.format(names=names), values)}
        epoch_id = self.epoch_id
        oldest = min([epoch_id] + [v.last_epoch_id + 1 for v in views.values()
                                   if v is not None])
        usage: dict[bytes, list[int]] = {a: [0, 0] for a in wanted}
        if postgres:
            used_rows = conn.exec_driver_sql(_PG_USAGE, {"ids": wanted, "oldest": oldest})
        else:
            names, values = sqlite_in(wanted)
            used_rows = conn.exec_driver_sql(_SQLITE_USAGE.format(names=names),
                                             {**values, "oldest": oldest})
        for used in used_rows:
            account_id = bytes(used.account_id)
            view = views[account_id]
            if used.epoch_id == epoch_id:
                usage[account_id][0] = used.users
            if view is not None and used.epoch_id > view.last_epoch_id:
                usage[account_id][1] += used.units
        for account_id in wanted:
            self.accounts[account_id] = _Account(
                status=status.get(account_id, "missing"), users=usage[account_id][0],
                unsettled=usage[account_id][1], view=views[account_id],
                unreadable=unreadable.get(account_id))

    def flush(self, conn: Connection) -> None:
        """Add the admitted units and users to ``account_epochs``."""
        rows = [(a, self.epoch_id, x.added_units, x.added_users)
                for a, x in sorted(self.accounts.items()) if x.added_units or x.added_users]
        if rows:
            conn.exec_driver_sql(_ADD_USAGE[conn.dialect.name], rows)


class AccountGate:
    """Admission settings of one ledger: the escrow source, headroom and leaf limit."""

    def __init__(self, *, escrow: EscrowSource | None = None, headroom_units: int = 0,
                 max_leaves: int = MAX_LEAVES) -> None:
        if type(headroom_units) is not int or headroom_units < 0:
            raise ConfigError("the escrow headroom must be a non-negative integer of units")
        if type(max_leaves) is not int or not 1 <= max_leaves <= MAX_LEAVES:
            raise ConfigError(f"max_leaves must be in [1, {MAX_LEAVES}]")
        self.escrow = escrow
        self.headroom_units = headroom_units
        self.max_leaves = max_leaves
        self._user_accounts: dict[str, bytes] = {}  # seen by begin(); users never move

    def prefetch(self, users: Sequence[str]) -> None:
        """Read the escrow of the known accounts of ``users`` now, outside any transaction
        (module docstring); an unreadable escrow is left for the admission to refuse."""
        if self.escrow is None:
            return
        known = self._user_accounts
        for account_id in sorted({known[u] for u in users if u in known}):
            with contextlib.suppress(EscrowUnavailableError):  # admission refuses its events
                self.escrow.view(account_id)

    def begin(self, conn: Connection, *, epoch_id: int,
              users: Sequence[str]) -> "BatchAdmission":
        """Look the batch's users up (module docstring, step 1); no lock yet. Only users
        not seen before are read: a user never moves to another account."""
        known = self._user_accounts
        user_accounts = {u: known[u] for u in users if u in known}
        unseen = [u for u in users if u not in user_accounts]
        rows: list[Any] = []
        if unseen and conn.dialect.name == "postgresql":  # one array parameter, one plan
            rows = list(conn.exec_driver_sql(_PG_USER_ACCOUNTS, {"users": unseen}).all())
        elif unseen:
            for start in range(0, len(unseen), 500):
                names, values = sqlite_in(unseen[start:start + 500])
                rows += conn.exec_driver_sql(_SQLITE_USER_ACCOUNTS.format(names=names),
                                             values).all()
        for user_id, account_id in rows:
            user_accounts[user_id] = bytes(account_id)
        if len(self._user_accounts) > _KNOWN_USERS:
            self._user_accounts.clear()
        self._user_accounts.update(user_accounts)
        return BatchAdmission(self, epoch_id, user_accounts)
