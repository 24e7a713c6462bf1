"""User-key rotation by the operator: the next key and the first epoch it seals.

A registered key is never replaced in place (RegisterUserKey refuses another key with
ALREADY_EXISTS); an operator's RotateUserKey stores the new key here with the epoch it takes
effect from, so the epoch that is open keeps the key it had. Also: a retention clock for
keyless users' plaintext openings (``epoch_openings.opening_expires_ms``).

Revision ID: v0004
Revises: v0003
"""

import sqlalchemy as sa
from alembic import op

revision = "v0004"
down_revision = "v0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user_keys") as batch:
        batch.add_column(sa.Column("next_x25519_public_key", sa.LargeBinary(32), nullable=True))
        batch.add_column(sa.Column("next_from_epoch", sa.BigInteger, nullable=True))
    with op.batch_alter_table("epoch_openings") as batch:
        batch.add_column(sa.Column("opening_expires_ms", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("epoch_openings") as batch:
        batch.drop_column("opening_expires_ms")
    with op.batch_alter_table("user_keys") as batch:
        batch.drop_column("next_from_epoch")
        batch.drop_column("next_x25519_public_key")
