"""Alembic environment: always run programmatically by `bridge.store.db.migrate` on a live connection."""

from alembic import context

from bridge.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
