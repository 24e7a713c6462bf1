"""Alembic environment of the zkmeter ledger, run programmatically by prover.ledger.migrate.

The caller passes an open SQLAlchemy connection in ``config.attributes["connection"]``; there is
no alembic.ini on disk and no URL is read here.
"""

from alembic import context

from prover.ledger.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through prover.ledger.migrate(), which passes a "
                       "connection")
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
