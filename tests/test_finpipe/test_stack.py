"""The local stack is idempotent and the migrations converge to one schema."""

from __future__ import annotations

import uuid

import pytest
from psycopg2 import sql

from finpipe import stack
from finpipe.stack.postgres import PostgresCluster
from finpipe_core.db import apply_migrations, connect, connection, pending_migrations
from finpipe_core.indicators import INDICATOR_COLUMNS
from finpipe_core.settings import Settings

pytestmark = pytest.mark.integration

SCHEMA_QUERY = """
SELECT 'column', table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
ORDER BY 1, 2
"""


def _schema(settings: Settings) -> list[tuple[str, str]]:
    with connection(settings) as conn, conn.cursor() as cur:
        cur.execute(SCHEMA_QUERY)
        return [
            row for row in cur.fetchall() if "_yoyo" not in row[1] and "yoyo_lock" not in row[1]
        ]


def test_second_up_changes_nothing(local_stack: Settings):
    report = stack.up(local_stack)
    assert report.changes == []


def test_status_reports_running_services(local_stack: Settings):
    state = stack.status(local_stack)
    assert state["postgres"].startswith("running")
    assert state["kafka"].startswith("running")
    assert local_stack.tasks_topic in state["kafka"]


@pytest.fixture
def scratch_database(local_stack: Settings):
    """A new empty database, dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    admin = PostgresCluster(local_stack).admin_connection()
    with admin.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(local_stack.pg_user)
            )
        )
    yield local_stack.model_copy(update={"pg_database": name})
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


def test_migrations_applied_twice_leave_the_same_schema(scratch_database: Settings):
    pending = pending_migrations(scratch_database)
    assert "0001_initial" in pending
    assert apply_migrations(scratch_database) == pending
    schema_once = _schema(scratch_database)
    assert apply_migrations(scratch_database) == []
    assert _schema(scratch_database) == schema_once
    assert pending_migrations(scratch_database) == []


def test_fresh_schema_equals_the_running_one(scratch_database: Settings, local_stack: Settings):
    apply_migrations(scratch_database)
    assert _schema(scratch_database) == _schema(local_stack)


def test_indicator_table_has_a_column_per_engine_output(local_stack: Settings):
    conn = connect(local_stack)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'indicators' ORDER BY ordinal_position"
        )
        columns = [r[0] for r in cur.fetchall()]
    conn.close()
    assert columns == ["symbol", "date", *INDICATOR_COLUMNS]


def test_down_stops_the_test_brokers_last() -> None:
    """``finpipe down`` recognises brokers by name (it stops them after their clients); the
    tests' nodes live outside the product, so their names must follow the product's rule."""
    from finpipe.stack.kafka import is_broker, kafka_single_node
    from finpipe.stack.settings import StackSettings
    from tests.fixtures.kafka_nodes import kafka_cluster_nodes, kafka_sasl_node

    settings = StackSettings(state_dir="/var/tmp/finpipe-layout-test")
    nodes = [kafka_single_node(settings), *kafka_cluster_nodes(settings)]
    nodes.append(kafka_sasl_node(settings))
    assert all(is_broker(node.name) for node in nodes), [node.name for node in nodes]
    assert not any(is_broker(name) for name in ("dagster-dev", "agent-1a2b3c-1", "processor-x"))
