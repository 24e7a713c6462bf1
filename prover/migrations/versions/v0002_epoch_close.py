"""Epoch close and publication: user keys, close progress and bundles, leaves, openings.

Revision ID: v0002
Revises: v0001
"""

import sqlalchemy as sa
from alembic import op

revision = "v0002"
down_revision = "v0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_keys",
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("x25519_public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("registered_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_keys"),
    )
    op.create_table(
        "epoch_closes",
        sa.Column("epoch_id", sa.BigInteger, nullable=False),
        sa.Column("leaves_total", sa.Integer, nullable=False),
        sa.Column("started_ms", sa.BigInteger, nullable=False),
        sa.Column("finished_ms", sa.BigInteger, nullable=True),
        sa.Column("merkle_root", sa.LargeBinary(32), nullable=True),
        sa.Column("total_units", sa.BigInteger, nullable=True),
        sa.Column("bundle_json", sa.LargeBinary, nullable=True),
        sa.PrimaryKeyConstraint("epoch_id", name="pk_epoch_closes"),
        sa.ForeignKeyConstraint(["epoch_id"], ["epochs.id"],
                                name="fk_epoch_closes_epoch_id_epochs"),
    )
    op.create_table(
        "epoch_leaves",
        sa.Column("epoch_id", sa.BigInteger, nullable=False),
        sa.Column("tag", sa.LargeBinary(32), nullable=False),
        sa.Column("commitment", sa.LargeBinary(64), nullable=False),
        sa.Column("proof", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("epoch_id", "tag", name="pk_epoch_leaves"),
        sa.ForeignKeyConstraint(["epoch_id"], ["epochs.id"],
                                name="fk_epoch_leaves_epoch_id_epochs"),
    )
    op.create_table(
        "epoch_openings",
        sa.Column("epoch_id", sa.BigInteger, nullable=False),
        sa.Column("tag", sa.LargeBinary(32), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("opening", sa.LargeBinary, nullable=True),
        sa.PrimaryKeyConstraint("epoch_id", "tag", name="pk_epoch_openings"),
        sa.ForeignKeyConstraint(["epoch_id"], ["epochs.id"],
                                name="fk_epoch_openings_epoch_id_epochs"),
    )
    op.create_index("ix_epoch_openings_user", "epoch_openings", ["epoch_id", "user_id"])


def downgrade() -> None:
    op.drop_index("ix_epoch_openings_user", table_name="epoch_openings")
    for table in ("epoch_openings", "epoch_leaves", "epoch_closes", "user_keys"):
        op.drop_table(table)
