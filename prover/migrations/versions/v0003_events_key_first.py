"""Idempotency-key lookups by key first: UNIQUE (key_digest, provider_id).

v0001 made the key unique per provider as (provider_id, key_digest). A ledger serves one
provider, so every row has the same provider_id and a batch's lookup
``provider_id = ? AND key_digest = ANY(?)`` could not narrow on the index's first column
(PostgreSQL scanned every event of the provider). Same uniqueness, columns swapped.

Revision ID: v0003
Revises: v0002
"""

from alembic import op

revision = "v0003"
down_revision = "v0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("uq_events_provider_id_key_digest", type_="unique")
        batch.create_unique_constraint("uq_events_key_digest_provider_id",
                                       ["key_digest", "provider_id"])


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("uq_events_key_digest_provider_id", type_="unique")
        batch.create_unique_constraint("uq_events_provider_id_key_digest",
                                       ["provider_id", "key_digest"])
