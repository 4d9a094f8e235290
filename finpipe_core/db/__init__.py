"""PostgreSQL access shared by the workers and the Dagster side: connections and migrations."""

from finpipe_core.db.connection import connect, connection
from finpipe_core.db.migrate import apply_migrations, pending_migrations

__all__ = ["apply_migrations", "connect", "connection", "pending_migrations"]
