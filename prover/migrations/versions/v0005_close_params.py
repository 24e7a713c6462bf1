"""A close's parameters, fixed when it starts: min leaves, chain id, contract.

A resumed close uses the stored padding floor (``ZKMETER_MIN_LEAVES`` may have changed since)
and refuses to run if the chain id or the contract the proofs are bound to changed, naming
what changed (prover/epoch/service.py). Nullable: closes started before this revision have no
stored parameters and are checked against their stored ``leaves_total`` instead.

Revision ID: v0005
Revises: v0004
"""

import sqlalchemy as sa
from alembic import op

revision = "v0005"
down_revision = "v0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("epoch_closes") as batch:
        batch.add_column(sa.Column("min_leaves", sa.Integer, nullable=True))
        batch.add_column(sa.Column("chain_id", sa.String(78), nullable=True))
        batch.add_column(sa.Column("contract", sa.LargeBinary(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("epoch_closes") as batch:
        for name in ("contract", "chain_id", "min_leaves"):
            batch.drop_column(name)
