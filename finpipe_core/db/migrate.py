"""Schema migrations, applied with yoyo-migrations (SQL files in ./migrations).

yoyo records applied migrations in its own table and takes a lock while applying, so two
processes starting together apply each migration once.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from yoyo import get_backend, read_migrations

from finpipe_core.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _database_url(settings: Settings) -> str:
    password = ""
    if settings.pg_password is not None:
        password = ":" + quote(settings.pg_password.get_secret_value(), safe="")
    return (
        f"postgresql://{quote(settings.pg_user, safe='')}{password}"
        f"@{settings.pg_host}:{settings.pg_port}/{settings.pg_database}"
    )


def pending_migrations(settings: Settings | None = None) -> list[str]:
    """Ids of the migrations not yet applied."""
    backend = get_backend(_database_url(settings or get_settings()))
    try:
        return [m.id for m in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))]
    finally:
        backend.connection.close()


def apply_migrations(settings: Settings | None = None) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date)."""
    backend = get_backend(_database_url(settings or get_settings()))
    try:
        with backend.lock():
            todo = backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))
            applied = [m.id for m in todo]
            backend.apply_migrations(todo)
        return applied
    finally:
        backend.connection.close()
