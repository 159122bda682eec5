"""Alembic environment: migrations run on the connection server.store hands in."""
from alembic import context

from server.store import metadata

config = context.config
connection = config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
