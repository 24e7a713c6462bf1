"""Initial ledger schema: epochs, per-user per-epoch state, events with their receipts.

Revision ID: v0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "v0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "epochs",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("window_start_ms", sa.BigInteger, nullable=False),
        sa.Column("window_end_ms", sa.BigInteger, nullable=True),
        sa.Column("planned_end_ms", sa.BigInteger, nullable=False),
        sa.Column("rate_card_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("bit_size", sa.SmallInteger, nullable=False),
        sa.CheckConstraint("state IN ('open', 'closing', 'closed')", name="ck_epochs_state"),
        sa.CheckConstraint("window_end_ms IS NULL OR window_end_ms >= window_start_ms",
                           name="ck_epochs_window"),
        sa.PrimaryKeyConstraint("id", name="pk_epochs"),
    )
    op.create_index("ix_epochs_one_open", "epochs", ["state"], unique=True,
                    sqlite_where=sa.text("state = 'open'"),
                    postgresql_where=sa.text("state = 'open'"))
    op.create_table(
        "user_states",
        sa.Column("epoch_id", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("total_units", sa.BigInteger, nullable=False),
        sa.Column("last_hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("epoch_id", "user_id", name="pk_user_states"),
        sa.ForeignKeyConstraint(["epoch_id"], ["epochs.id"],
                                name="fk_user_states_epoch_id_epochs"),
        sa.CheckConstraint("seq >= 0 AND total_units >= 0", name="ck_user_states_nonneg"),
    )
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("provider_id", sa.LargeBinary(32), nullable=False),
        sa.Column("key_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(32), nullable=False),
        sa.Column("epoch_id", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("encoding", sa.String(64), nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
        sa.Column("units", sa.BigInteger, nullable=False),
        sa.Column("total_units", sa.BigInteger, nullable=False),
        sa.Column("receipt_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("receipt", sa.LargeBinary, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(["epoch_id"], ["epochs.id"], name="fk_events_epoch_id_epochs"),
        sa.UniqueConstraint("provider_id", "key_digest", name="uq_events_provider_id_key_digest"),
        sa.UniqueConstraint("epoch_id", "user_id", "seq", name="uq_events_epoch_id_user_id_seq"),
    )


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("user_states")
    op.drop_index("ix_epochs_one_open", table_name="epochs")
    op.drop_table("epochs")
