"""Billing accounts: accounts, users under accounts, per-account epoch usage and bundles.

Leaves and openings gain the account they belong to (NULL for epochs closed before
accounts existed).

Revision ID: v0006
Revises: v0005
"""

import sqlalchemy as sa
from alembic import op

revision = "v0006"
down_revision = "v0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.LargeBinary(32), nullable=False),
        sa.Column("payer", sa.LargeBinary(20), nullable=False),
        sa.Column("asset", sa.LargeBinary(20), nullable=False),
        sa.Column("payer_x25519_public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("opened_ms", sa.BigInteger, nullable=False),
        sa.Column("closed_ms", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("account_id", name="pk_accounts"),
        sa.CheckConstraint("status IN ('open', 'closed')", name="ck_accounts_status"),
    )
    op.create_table(
        "account_users",
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("account_id", sa.LargeBinary(32), nullable=False),
        sa.Column("registered_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_account_users"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.account_id"],
                                name="fk_account_users_account_id_accounts"),
    )
    op.create_index("ix_account_users_account", "account_users", ["account_id"])
    op.create_table(
        "account_epochs",
        sa.Column("account_id", sa.LargeBinary(32), nullable=False),
        sa.Column("epoch_id", sa.BigInteger, nullable=False),
        sa.Column("units", sa.BigInteger, nullable=False),
        sa.Column("users", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "epoch_id", name="pk_account_epochs"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.account_id"],
                                name="fk_account_epochs_account_id_accounts"),
        sa.ForeignKeyConstraint(["epoch_id"], ["epochs.id"],
                                name="fk_account_epochs_epoch_id_epochs"),
        sa.CheckConstraint("units >= 0 AND users >= 0", name="ck_account_epochs_nonneg"),
    )
    op.create_table(
        "account_bundles",
        sa.Column("epoch_id", sa.BigInteger, nullable=False),
        sa.Column("account_id", sa.LargeBinary(32), nullable=False),
        sa.Column("leaves_total", sa.Integer, nullable=False),
        sa.Column("merkle_root", sa.LargeBinary(32), nullable=True),
        sa.Column("total_units", sa.BigInteger, nullable=True),
        sa.Column("bundle_json", sa.LargeBinary, nullable=True),
        sa.Column("statement", sa.LargeBinary, nullable=True),
        sa.PrimaryKeyConstraint("epoch_id", "account_id", name="pk_account_bundles"),
        sa.ForeignKeyConstraint(["epoch_id"], ["epochs.id"],
                                name="fk_account_bundles_epoch_id_epochs"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.account_id"],
                                name="fk_account_bundles_account_id_accounts"),
    )
    with op.batch_alter_table("epoch_leaves") as batch:
        batch.add_column(sa.Column("account_id", sa.LargeBinary(32), nullable=True))
    with op.batch_alter_table("epoch_openings") as batch:
        batch.add_column(sa.Column("account_id", sa.LargeBinary(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("epoch_openings") as batch:
        batch.drop_column("account_id")
    with op.batch_alter_table("epoch_leaves") as batch:
        batch.drop_column("account_id")
    op.drop_table("account_bundles")
    op.drop_table("account_epochs")
    op.drop_index("ix_account_users_account", table_name="account_users")
    op.drop_table("account_users")
    op.drop_table("accounts")
