"""Migrations on a real scratch database: a database that applied the two files once numbered
0003 under their old names keeps them applied under the new names, and nothing runs twice."""

from __future__ import annotations

import psycopg2.extensions
import pytest
from yoyo.migrations import get_migration_hash

from finpipe_core.db import apply_migrations, connection, pending_migrations
from finpipe_core.db.migrate import RENAMED
from finpipe_core.settings import Settings

pytestmark = pytest.mark.integration


def _applied_ids(settings: Settings) -> list[str]:
    with connection(settings) as conn, conn.cursor() as cur:
        cur.execute("SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")
        return [row[0] for row in cur.fetchall()]


def _rename_back(conn: psycopg2.extensions.connection) -> None:
    """Record the renamed migrations under their old ids, as a database migrated before."""
    with conn, conn.cursor() as cur:
        for old, new in RENAMED.items():
            cur.execute(
                "UPDATE _yoyo_migration SET migration_id = %s, migration_hash = %s "
                "WHERE migration_id = %s",
                (old, get_migration_hash(old), new),
            )


def test_renamed_migrations_stay_applied(pipeline_factory) -> None:
    settings = pipeline_factory().settings  # a fresh database with every migration applied
    with connection(settings) as conn:
        _rename_back(conn)
    old_ids = _applied_ids(settings)
    assert set(RENAMED) <= set(old_ids)

    assert pending_migrations(settings) == []
    # Re-running 0004_roles or 0005_dead_letters would fail (CREATE TABLE dead_letters exists).
    assert apply_migrations(settings) == []
    ids = _applied_ids(settings)
    assert set(RENAMED.values()) <= set(ids)
    assert not set(RENAMED) & set(ids)
    assert len(ids) == len(old_ids)
