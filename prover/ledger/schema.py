"""The ledger's tables (SQLAlchemy Core). Migrations in prover/migrations/ create exactly this.

No column holds prompt or completion text: events keep counts, digests and the signed receipt,
whose text digests are salted and whose salt travels only to the user.
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    text,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

EPOCH_OPEN = "open"
EPOCH_CLOSING = "closing"
EPOCH_CLOSED = "closed"

# An auto-increment 64-bit key (SQLite only auto-increments INTEGER PRIMARY KEY).
BigId = BigInteger().with_variant(Integer(), "sqlite")

epochs = Table(
    "epochs", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("state", String(8), nullable=False),
    Column("window_start_ms", BigInteger, nullable=False),
    Column("window_end_ms", BigInteger, nullable=True),
    Column("planned_end_ms", BigInteger, nullable=False),
    Column("rate_card_hash", LargeBinary(32), nullable=False),
    Column("bit_size", SmallInteger, nullable=False),
    CheckConstraint("state IN ('open', 'closing', 'closed')", name="state"),
    CheckConstraint("window_end_ms IS NULL OR window_end_ms >= window_start_ms", name="window"),
    # At most one open epoch (a partial unique index; SQLite and PostgreSQL both have them).
    Index("ix_epochs_one_open", "state", unique=True,
          sqlite_where=text("state = 'open'"), postgresql_where=text("state = 'open'")),
)

user_states = Table(
    "user_states", metadata,
    Column("epoch_id", BigInteger, ForeignKey("epochs.id"), nullable=False),
    Column("user_id", String(256), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("total_units", BigInteger, nullable=False),
    Column("last_hash", LargeBinary(32), nullable=False),
    PrimaryKeyConstraint("epoch_id", "user_id"),
    CheckConstraint("seq >= 0 AND total_units >= 0", name="nonneg"),
)

events = Table(
    "events", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("provider_id", LargeBinary(32), nullable=False),
    Column("key_digest", LargeBinary(32), nullable=False),
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("epoch_id", BigInteger, ForeignKey("epochs.id"), nullable=False),
    Column("user_id", String(256), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("model", String(256), nullable=False),
    Column("encoding", String(64), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("total_units", BigInteger, nullable=False),
    Column("receipt_hash", LargeBinary(32), nullable=False),
    Column("receipt", LargeBinary, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    # The idempotency key is unique per provider (only its keccak digest is stored).
    UniqueConstraint("key_digest", "provider_id"),  # key first: lookups narrow on it (v0003)
    UniqueConstraint("epoch_id", "user_id", "seq"),
)

# --- epoch close and publication (migration v0002) ------------------------------------------

# Users' X25519 public keys: sealed openings are encrypted to them.
user_keys = Table(
    "user_keys", metadata,
    Column("user_id", String(256), primary_key=True),
    Column("x25519_public_key", LargeBinary(32), nullable=False),
    Column("registered_ms", BigInteger, nullable=False),
    # an operator's rotation (migration v0004): the next key, sealing epochs >= next_from_epoch
    Column("next_x25519_public_key", LargeBinary(32), nullable=True),
    Column("next_from_epoch", BigInteger, nullable=True),
)

# --- billing accounts (migration v0006; prover/accounts/) --------------------------------

ACCOUNT_OPEN = "open"
ACCOUNT_CLOSED = "closed"

# One row per billing account (provider, payer, asset); the id is the contract's.
accounts = Table(
    "accounts", metadata,
    Column("account_id", LargeBinary(32), primary_key=True),
    Column("payer", LargeBinary(20), nullable=False),
    Column("asset", LargeBinary(20), nullable=False),
    Column("payer_x25519_public_key", LargeBinary(32), nullable=False),
    Column("status", String(8), nullable=False),
    Column("opened_ms", BigInteger, nullable=False),
    Column("closed_ms", BigInteger, nullable=True),
    CheckConstraint("status IN ('open', 'closed')", name="status"),
)

# Every user belongs to exactly one account, for good.
account_users = Table(
    "account_users", metadata,
    Column("user_id", String(256), primary_key=True),
    Column("account_id", LargeBinary(32), ForeignKey("accounts.account_id"), nullable=False),
    Column("registered_ms", BigInteger, nullable=False),
    Index("ix_account_users_account", "account_id"),
)

# Per account and epoch: units metered and users with usage (kept by the ingest transaction;
# the prepaid limit and the leaf limit read them under the account's row lock).
account_epochs = Table(
    "account_epochs", metadata,
    Column("account_id", LargeBinary(32), ForeignKey("accounts.account_id"), nullable=False),
    Column("epoch_id", BigInteger, ForeignKey("epochs.id"), nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("users", Integer, nullable=False),
    PrimaryKeyConstraint("account_id", "epoch_id"),
    CheckConstraint("units >= 0 AND users >= 0", name="nonneg"),
)

# One row per account with usage in a closing epoch: its bundle and sealed payer statement.
account_bundles = Table(
    "account_bundles", metadata,
    Column("epoch_id", BigInteger, ForeignKey("epochs.id"), nullable=False),
    Column("account_id", LargeBinary(32), ForeignKey("accounts.account_id"), nullable=False),
    Column("leaves_total", Integer, nullable=False),
    Column("merkle_root", LargeBinary(32), nullable=True),
    Column("total_units", BigInteger, nullable=True),
    Column("bundle_json", LargeBinary, nullable=True),
    Column("statement", LargeBinary, nullable=True),
    PrimaryKeyConstraint("epoch_id", "account_id"),
)

# One row per epoch whose close has started: progress, then the published bundle.
epoch_closes = Table(
    "epoch_closes", metadata,
    Column("epoch_id", BigInteger, ForeignKey("epochs.id"), primary_key=True),
    Column("leaves_total", Integer, nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("finished_ms", BigInteger, nullable=True),
    Column("merkle_root", LargeBinary(32), nullable=True),
    Column("total_units", BigInteger, nullable=True),
    Column("bundle_json", LargeBinary, nullable=True),
    # The close's parameters, fixed when it starts (migration v0005; NULL for older closes).
    Column("min_leaves", Integer, nullable=True),
    Column("chain_id", String(78), nullable=True),  # decimal: chain ids go up to 2^256
    Column("contract", LargeBinary(20), nullable=True),
)

# Every finished leaf, saved as soon as it is proved (a crashed close resumes from here).
epoch_leaves = Table(
    "epoch_leaves", metadata,
    Column("epoch_id", BigInteger, ForeignKey("epochs.id"), nullable=False),
    Column("tag", LargeBinary(32), nullable=False),
    Column("commitment", LargeBinary(64), nullable=False),
    Column("proof", LargeBinary, nullable=False),
    Column("account_id", LargeBinary(32), nullable=True),  # v0006; NULL before accounts
    PrimaryKeyConstraint("epoch_id", "tag"),
)

# Published sealed openings (one per leaf, all the same length) and, for users without a
# registered key, the plaintext opening served only over the authenticated gRPC API.
epoch_openings = Table(
    "epoch_openings", metadata,
    Column("epoch_id", BigInteger, ForeignKey("epochs.id"), nullable=False),
    Column("tag", LargeBinary(32), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("user_id", String(256), nullable=True),
    Column("opening", LargeBinary, nullable=True),
    # when the plaintext opening is deleted (ZKMETER_PLAINTEXT_OPENING_RETENTION_DAYS; v0004)
    Column("opening_expires_ms", BigInteger, nullable=True),
    Column("account_id", LargeBinary(32), nullable=True),  # v0006; NULL before accounts
    PrimaryKeyConstraint("epoch_id", "tag"),
    Index("ix_epoch_openings_user", "epoch_id", "user_id"),
)

TABLES = (epochs, user_states, events, user_keys, epoch_closes, epoch_leaves, epoch_openings,
          accounts, account_users, account_epochs, account_bundles)


def sqlite_in(values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """An SQLite IN list of named parameters for ``values``: the names (``:v0, :v1, ...``,
    from the count alone) and their values; the statement text never holds a value."""
    return (", ".join(f":v{i}" for i in range(len(values))),
            {f"v{i}": value for i, value in enumerate(values)})
