"""Prepaid limits: what an account's escrow can still pay for, in units.

The settlement contract holds each account's escrow. What a meter may still bill against is
the unreserved, unrequested part, in units of the account's fixed unit price:

    available = (escrow - reserved - withdrawalAmount) // unitPrice

``reserved`` already covers every epoch submitted on-chain (up to ``lastEpochId``), so the
meter adds the units of its own epochs the chain has not seen yet: the open epoch and every
closed epoch after ``lastEpochId``. Usage is admitted while

    unsettled_units + units <= available - headroom

(prover/accounts/admission.py checks it under the account's row lock). An
:class:`EscrowSource` answers ``view(account_id)``; None means "no limit" (a meter without a
chain, an account :class:`FixedEscrow` does not list). A view with ``opened`` False is an
account the chain does not know: it has no escrow, so all its usage is refused. A source that
cannot answer raises :class:`~prover.errors.EscrowUnavailableError`, and the account's usage
is refused (never admitted unpaid). The core imports no web3: the chain-backed source
(prover/accounts/chain_escrow.py) only implements this protocol.
"""

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EscrowView:
    """One account's escrow as last read: available units and the last submitted epoch;
    ``opened`` False: the chain has no such account (no escrow, nothing available)."""

    available_units: int
    last_epoch_id: int = 0
    opened: bool = True

    @classmethod
    def from_amounts(cls, *, escrow: int, reserved: int, withdrawal: int, unit_price: int,
                     last_epoch_id: int) -> "EscrowView":
        """From the contract's ``getAccount`` fields (amounts in the asset's smallest unit)."""
        if unit_price <= 0:
            return cls(0, last_epoch_id)
        free = max(escrow - reserved - withdrawal, 0)
        return cls(free // unit_price, last_epoch_id)


class EscrowSource(Protocol):
    """Where the meter learns each account's escrow (module docstring)."""

    def view(self, account_id: bytes) -> EscrowView | None:
        """The account's escrow view, or None if the account has no prepaid limit; raises
        EscrowUnavailableError if the escrow cannot be read now."""


class FixedEscrow:
    """Limits set by the operator (off-chain prepaid credit, or a chain-less deployment):
    ``account_id -> available units``; accounts not listed have no limit."""

    def __init__(self, limits: Mapping[bytes, int] | None = None) -> None:
        self._views = {account: EscrowView(units) for account, units in (limits or {}).items()}
        self._lock = threading.Lock()

    def set(self, account_id: bytes, available_units: int, last_epoch_id: int = 0) -> None:
        """Set (or replace) an account's limit."""
        with self._lock:
            self._views[account_id] = EscrowView(available_units, last_epoch_id)

    def remove(self, account_id: bytes) -> None:
        """The account has no limit any more."""
        with self._lock:
            self._views.pop(account_id, None)

    def view(self, account_id: bytes) -> EscrowView | None:
        with self._lock:
            return self._views.get(account_id)


class CachedEscrow:
    """A cache in front of a slower source (the chain): entries live ``ttl_seconds`` and
    are dropped at once by :meth:`invalidate` (called on the contract's account events).

    A read that was under way while an invalidation happened is returned to its caller but
    not kept (it may predate the event): the next view reads again. A fetch that raises
    stores nothing."""

    def __init__(self, fetch: Callable[[bytes], EscrowView | None], *, ttl_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must be >= 0")
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[bytes, tuple[float, EscrowView | None]] = {}
        self._generation = 0  # bumped by every invalidation
        self._lock = threading.Lock()

    def view(self, account_id: bytes) -> EscrowView | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(account_id)
            generation = self._generation
        if entry is not None and now - entry[0] < self._ttl:
            return entry[1]
        value = self._fetch(account_id)
        with self._lock:
            if self._generation == generation:
                self._entries[account_id] = (now, value)
        return value

    def invalidate(self, account_id: bytes | None = None) -> None:
        """Forget one account's entry (or every entry)."""
        with self._lock:
            self._generation += 1
            if account_id is None:
                self._entries.clear()
            else:
                self._entries.pop(account_id, None)
