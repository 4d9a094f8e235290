"""Schema migrations, applied with yoyo-migrations (SQL files in ./migrations).

yoyo records applied migrations in its own table and takes a lock while applying, so two
processes starting together apply each migration once.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from yoyo import get_backend, read_migrations
from yoyo.migrations import get_migration_hash

from finpipe_core.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Migrations whose file was renamed after release (old id -> new id). Two files were numbered
# 0003; a database that applied them under their old names keeps them applied under the new.
RENAMED = {"0003_roles": "0004_roles", "0004_dead_letters": "0005_dead_letters"}


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
        renamed = {old: new for old, new in RENAMED.items() if _applied(backend, old)}
        return [
            m.id
            for m in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))
            if m.id not in renamed.values()
        ]
    finally:
        backend.connection.close()


def apply_migrations(settings: Settings | None = None) -> list[str]:
    """Apply every pending migration; return the ids applied (empty when up to date)."""
    backend = get_backend(_database_url(settings or get_settings()))
    try:
        with backend.lock():
            _carry_renamed(backend)
            todo = backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))
            applied = [m.id for m in todo]
            backend.apply_migrations(todo)
        return applied
    finally:
        backend.connection.close()


def _applied(backend, migration_id: str) -> bool:
    if backend.migration_table not in backend.list_tables():
        return False
    cursor = backend.execute(
        f"SELECT 1 FROM {backend.migration_table_quoted} WHERE migration_hash = :hash",
        {"hash": get_migration_hash(migration_id)},
    )
    return cursor.fetchone() is not None


def _carry_renamed(backend) -> None:
    """Record migrations applied under an old file name as applied under the new one."""
    for old, new in RENAMED.items():
        if _applied(backend, old) and not _applied(backend, new):
            with backend.transaction():
                backend.execute(
                    f"UPDATE {backend.migration_table_quoted} SET migration_hash = :new_hash, "
                    "migration_id = :new WHERE migration_hash = :old_hash",
                    {
                        "new_hash": get_migration_hash(new),
                        "new": new,
                        "old_hash": get_migration_hash(old),
                    },
                )
