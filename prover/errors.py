"""The error type of the metering layer (rate card, ledger, ingest, config) and its variants.

Transport code maps them to status codes; the suggested gRPC code is given for each. No
message of any of them ever contains prompt or completion text.
"""

from typing import Any


def _rebuild(cls: type, message: str, keywords: dict[str, Any]) -> Exception:
    """An error with keyword-only fields, unpickled (they cross the ingest process's pipe)."""
    error: Exception = cls(message, **keywords)
    return error


class MeteringError(Exception):
    """Base class of every error raised by the metering core."""


class InvalidRequestError(MeteringError, ValueError):
    """The request is malformed: missing or extra fields, bad types, negative or oversized
    counts, cached input above input, or a model no encoding is known for.
    gRPC: INVALID_ARGUMENT."""


class UnpricedModelError(InvalidRequestError):
    """The rate card has no price for this model. gRPC: INVALID_ARGUMENT."""


class IdempotencyConflictError(MeteringError):
    """The idempotency key was already used with a different payload. gRPC: ALREADY_EXISTS."""


class UnitsOverflowError(MeteringError):
    """The user's epoch total would reach 2^n (n = the range-proof bit size); nothing was
    stored. gRPC: RESOURCE_EXHAUSTED."""


class UnknownUserError(MeteringError, LookupError):
    """The user is not registered under a billing account (a gateway registers it first);
    nothing was stored. gRPC: NOT_FOUND."""


class AccountStateError(MeteringError):
    """The user's billing account is not open, or a registration contradicts the accounts
    (a user moved to another account, a closed account). gRPC: FAILED_PRECONDITION."""


class PrepaidLimitError(MeteringError):
    """The usage would take the account past its unreserved escrow (open epoch plus unsettled
    epochs, less the headroom); nothing was stored. ``remaining_units`` is what the account can
    still be billed. gRPC: RESOURCE_EXHAUSTED."""

    def __init__(self, message: str, *, account_id: bytes, remaining_units: int) -> None:
        super().__init__(message)
        self.account_id = account_id
        self.remaining_units = remaining_units

    def __reduce__(self) -> tuple[Any, ...]:  # pickled by the ingest process
        return (_rebuild, (type(self), str(self), {"account_id": self.account_id,
                                                   "remaining_units": self.remaining_units}))


class EscrowUnavailableError(MeteringError):
    """The account's escrow could not be read (the chain did not answer in time, or answered
    garbage), so its usage is refused rather than admitted unpaid; nothing was stored.
    gRPC: UNAVAILABLE (retry later)."""

    def __init__(self, message: str, *, account_id: bytes) -> None:
        super().__init__(message)
        self.account_id = account_id

    def __reduce__(self) -> tuple[Any, ...]:  # pickled by the ingest process
        return (_rebuild, (type(self), str(self), {"account_id": self.account_id}))


class AccountLeafLimitError(MeteringError):
    """The account already has the most users one epoch can settle (MAX_LEAVES); a new
    user's first event of the epoch is refused. gRPC: RESOURCE_EXHAUSTED."""


class RateCardError(MeteringError, ValueError):
    """A rate card file is malformed: bad TOML, unknown keys, non-integer or negative prices."""


class EpochStateError(MeteringError):
    """An epoch operation does not fit the epoch's state (closing an epoch that is not open,
    a snapshot of an open epoch, a rate card other than the open epoch's).
    gRPC: FAILED_PRECONDITION."""


class LedgerError(MeteringError):
    """The database failed, or kept conflicting after the retries. gRPC: UNAVAILABLE."""


class ConfigError(MeteringError, ValueError):
    """The configuration is invalid: a missing or placeholder secret, an unusable setting."""


class UserKeyExistsError(MeteringError):
    """The user already has another registered X25519 key; only an operator's rotation
    replaces it (from the next epoch). gRPC: ALREADY_EXISTS."""
