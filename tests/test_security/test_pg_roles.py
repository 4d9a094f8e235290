"""PostgreSQL least privilege (migration 0004_roles): each group role can do exactly what its
process does, through finpipe's own code, and is refused everything else with
``InsufficientPrivilege``.

The end-to-end SASL test (test_kafka_sasl.py) also runs a real processor subprocess as a
finpipe_processor login; here the manager's, processor's, agent's and reader's code paths are
exercised directly, including the rarer processor paths (history rewrite, parking, unpark).
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
import yaml
from psycopg.conninfo import make_conninfo
from psycopg2 import sql
from pydantic import SecretStr

from finpipe.stack.postgres import PostgresCluster
from finpipe_core import contracts
from finpipe_core.calendar import trading_days
from finpipe_core.contracts import BarBatch
from finpipe_core.db.migrate import MIGRATIONS_DIR
from finpipe_manager.outbox import enqueue_tasks, publish_pending, republish_stale
from finpipe_manager.universe import UniverseEntry, sync_universe
from workers.processor.batch import BatchWriter, InputMessage
from workers.processor.parking import unpark

pytestmark = [
    pytest.mark.integration,
    # exchange_calendars (the trading calendar) under pandas 3.
    pytest.mark.filterwarnings(
        "ignore:.*returning an ndarray that drops timezone:pandas.errors.Pandas4Warning"
    ),
]

TABLES = (
    "symbols",
    "symbol_state",
    "tasks",
    "prices",
    "indicators",
    "indicator_state",
    "consumer_offsets",
    "parked_bars",
)
D = dt.date


def _denied(conn: psycopg2.extensions.connection, statement: str, params: Any = None) -> None:
    """``statement`` fails with InsufficientPrivilege (and the transaction is rolled back)."""
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
            cur.execute(statement, params)
    finally:
        conn.rollback()


def _allowed(conn: psycopg2.extensions.connection, statement: str, params: Any = None) -> None:
    """``statement`` succeeds; its effect is rolled back."""
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
    finally:
        conn.rollback()


class _Producer:
    """Delivers every produced task at flush (the outbox's Producer protocol)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self._pending: list[Any] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.sent.append((topic, key))
        self._pending.append(on_delivery)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        for callback in self._pending:
            callback(None, None)
        self._pending.clear()
        return 0


def _bars(symbol: str, days: list[dt.date], shift: float = 0.0, task: str = "t") -> bytes:
    close = [100.0 + i + shift for i in range(len(days))]
    return contracts.encode(
        BarBatch(
            schema_version=contracts.SCHEMA_VERSION,
            task_id=f"{task}-{symbol}",
            symbol=symbol,
            start=days[0],
            end=days[-1],
            status="ok",
            source="test",
            dates=days,
            open=close,
            high=[c + 1 for c in close],
            low=[c - 1 for c in close],
            close=close,
            adj_close=close,
            volume=[1000.0] * len(days),
            dividends=[0.0] * len(days),
            splits=[0.0] * len(days),
        )
    )


def _sessions(n: int) -> list[dt.date]:
    start = D(2020, 1, 2)
    return trading_days(start, start + dt.timedelta(days=2 * n))[:n]


# --- the roles themselves --------------------------------------------------------------------
def test_group_roles_cannot_log_in_or_administer(secure_db):
    conn = secure_db.connect("owner", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
            "FROM pg_roles WHERE rolname LIKE 'finpipe\\_%' ORDER BY rolname"
        )
        roles = {r[0]: r[1:] for r in cur.fetchall()}
    assert set(roles) == {"finpipe_agent", "finpipe_manager", "finpipe_processor", "finpipe_reader"}
    assert all(flags == (False,) * 5 for flags in roles.values()), roles


def test_migration_0004_roles_is_idempotent(secure_db):
    """Roles are cluster-wide: running the migration again (as for every scratch database of
    the tests, or twice by hand) raises nothing. Rolled back: its grants predate later
    migrations (0007 revokes one), so committing them would undo those here."""
    text = (MIGRATIONS_DIR / "0004_roles.sql").read_text()
    conn = secure_db.connect("owner")
    try:
        with conn.cursor() as cur:
            cur.execute(text)
            cur.execute(text)
    finally:
        conn.rollback()


def test_migrations_run_as_an_owner_without_createrole(local_stack):
    """The production path (e.g. CloudNativePG's app owner has no CREATEROLE): roles created
    by an administrator, the owner made a member of finpipe_agent; the migrations then need
    no role privilege. Without that membership they stop with a clear error."""
    from finpipe_core.db import apply_migrations

    admin = PostgresCluster(local_stack).admin_connection()
    tag = uuid.uuid4().hex[:8]
    owner, database = f"fp_test_owner_{tag}", f"finpipe_test_sec_owner_{tag}"
    settings = local_stack.model_copy(update={"pg_user": owner, "pg_database": database})
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEROLE").format(sql.Identifier(owner)))
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(owner)
                )
            )
        with pytest.raises(
            psycopg2.errors.InsufficientPrivilege, match=r"finpipe_agent|permission denied"
        ):
            apply_migrations(settings)
        with admin.cursor() as cur:
            cur.execute(sql.SQL("GRANT finpipe_agent TO {}").format(sql.Identifier(owner)))
        applied = apply_migrations(settings)
        assert "0004_roles" in applied
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(owner)))
        admin.close()


def test_a_login_outside_the_groups_cannot_connect(secure_db, local_stack):
    admin = PostgresCluster(local_stack).admin_connection()
    stranger = f"fp_test_stranger_{uuid.uuid4().hex[:8]}"
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(stranger)))
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
            psycopg2.connect(
                host=local_stack.pg_host,
                port=local_stack.pg_port,
                dbname=secure_db.name,
                user=stranger,
                connect_timeout=10,
            )
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(stranger)))
        admin.close()


# --- manager ---------------------------------------------------------------------------------
def test_manager_runs_the_outbox_universe_and_checks(secure_db):
    conn = secure_db.connect("manager")
    entries = [UniverseEntry("MGRA", "A"), UniverseEntry("MGRB", "B")]
    sync_universe(conn, entries, deactivate_missing=False)
    tasks = enqueue_tasks(
        conn,
        ["MGRA", "MGRB"],
        D(2021, 1, 4),
        D(2021, 3, 31),
        requested_by="role-test",
        max_sessions=30,
    )
    assert len(tasks) >= 4
    producer = _Producer()
    report = publish_pending(conn, producer, "tasks")
    assert sorted(report.published) == sorted(t.task_id for t in tasks)
    assert republish_stale(conn, _Producer(), "tasks", older_than=dt.timedelta(0)).ok
    sync_universe(conn, entries[:1])  # deactivates MGRB: UPDATE symbols

    # What the Dagster sensors and asset checks read.
    from finpipe_manager.completion import CompletionCursor, evaluate_completion
    from finpipe_manager.health import (
        find_calendar_gaps,
        find_nan_after_warmup,
        find_rsi_out_of_range,
        pipeline_health,
    )

    find_calendar_gaps(conn)
    find_rsi_out_of_range(conn)
    find_nan_after_warmup(conn, {"rsi_14": 14})
    pipeline_health(conn, timeout=dt.timedelta(hours=1))
    evaluate_completion(conn, CompletionCursor())


def test_manager_cannot_write_market_data_or_delete(secure_db):
    conn = secure_db.connect("manager")
    _denied(
        conn,
        "INSERT INTO prices (symbol, date, open, high, low, close, adj_close, volume)"
        " VALUES ('MGRA', '2021-01-04', 1, 1, 1, 1, 1, 1)",
    )
    _denied(conn, "UPDATE indicators SET rsi_14 = 50")
    _denied(conn, "DELETE FROM tasks")
    _denied(conn, "TRUNCATE tasks")
    _denied(conn, "UPDATE symbol_state SET status = 'ok', last_processed_date = now()")
    _denied(conn, "SELECT * FROM consumer_offsets")
    _denied(
        conn,
        'INSERT INTO parked_bars (symbol, topic, partition, "offset", value) '
        "VALUES ('MGRA', 't', 0, 0, '')",
    )
    _denied(conn, "CREATE TABLE public.manager_probe (x int)")
    _denied(conn, "DROP TABLE prices")


# --- processor -------------------------------------------------------------------------------
def test_processor_applies_rewrites_parks_and_unparks(secure_db):
    conn = secure_db.connect("processor")
    days = _sessions(40)
    topic, group = "data", "processors"
    first = [InputMessage(topic, 0, 0, b"PRCA", _bars("PRCA", days[:30]))]
    result = BatchWriter(conn, group, 900_000).apply(first)
    conn.commit()
    assert result.bars_stored == 30 and not result.dead_letters

    batch = [
        # Revised values inside the stored history: the rewrite path (DELETE indicators).
        InputMessage(topic, 0, 1, b"PRCA", _bars("PRCA", days[20:40], shift=0.5, task="t2")),
        # A bad message parks its symbol ...
        InputMessage(topic, 1, 0, b"PRCB", b"\x00 not json"),
        # ... and the symbol's next message is held in parked_bars (bigserial id).
        InputMessage(topic, 1, 1, b"PRCB", _bars("PRCB", days[:10])),
    ]
    result = BatchWriter(conn, group, 900_000).apply(batch)
    conn.commit()
    assert len(result.dead_letters) == 1 and result.parked == 1

    assert unpark(secure_db.settings_for("processor"), "PRCB") == 1

    owner = secure_db.connect("owner")
    with owner.cursor() as cur:
        cur.execute("SELECT symbol, count(*) FROM prices GROUP BY 1 ORDER BY 1")
        assert cur.fetchall() == [("PRCA", 40), ("PRCB", 10)]
        cur.execute("SELECT count(*) FROM parked_bars")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT status FROM symbol_state WHERE symbol = 'PRCB'")
        assert cur.fetchone() == ("ok",)
        cur.execute("SELECT topic, partition, next_offset FROM consumer_offsets ORDER BY 1, 2")
        assert cur.fetchall() == [(topic, 0, 2), (topic, 1, 2)]
    owner.rollback()


def test_processor_cannot_change_requests_universe_or_delete_data(secure_db):
    conn = secure_db.connect("processor")
    _denied(conn, "UPDATE tasks SET attempts = 99")
    _denied(conn, "UPDATE tasks SET force = true, requested_by = 'x'")
    _denied(
        conn,
        "INSERT INTO tasks (task_id, symbol, start_date, end_date, force) "
        "VALUES ('x', 'PRCA', '2020-01-02', '2020-01-02', true)",
    )
    _denied(conn, "DELETE FROM tasks")
    _denied(conn, "UPDATE symbols SET active = true")
    _denied(conn, "UPDATE symbol_state SET last_requested_date = '2030-01-01'")
    _denied(conn, "DELETE FROM prices")
    _denied(conn, "TRUNCATE indicators")
    _denied(conn, "CREATE TABLE public.processor_probe (x int)")
    _denied(conn, "ALTER TABLE prices ADD COLUMN x int")
    # Tasks are the manager's: a processor moves one forward, never creates one.
    _denied(
        conn,
        "INSERT INTO tasks (task_id, symbol, start_date, end_date, status, bars) "
        "VALUES ('p', 'PRCA', '2020-01-02', '2020-01-02', 'done', 1)",
    )
    _allowed(conn, "UPDATE tasks SET status = 'done', bars = 1, completed_at = now()")


# --- agent -----------------------------------------------------------------------------------
def test_agents_share_the_rate_limit_budget_and_nothing_else(secure_db):
    """Two agent logins use one pre-created budget table (pyrate-limiter runs its CREATE
    TABLE/INDEX IF NOT EXISTS and LOCK TABLE as each of them)."""
    from workers.sources.ratelimit import PostgresRateLimiter

    limiters = [
        PostgresRateLimiter(
            secure_db.libpq_conninfo(kind), requests_per_minute=3, requests_per_hour=None
        )
        for kind in ("agent", "agent2")
    ]
    try:
        waits = [limiters[i % 2].try_acquire() for i in range(4)]
    finally:
        for limiter in limiters:
            limiter.close()
    assert waits[:3] == [0.0, 0.0, 0.0] and waits[3] > 0, waits

    owner = secure_db.connect("owner")
    with owner.cursor() as cur:
        cur.execute("SELECT count(*) FROM finpipe_ratelimit.ratelimit___finpipe_yfinance")
        assert cur.fetchone() == (3,)
        cur.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ratelimit%'")
        assert cur.fetchone() == (1,), "an agent created a budget table of its own"
    owner.rollback()

    conn = secure_db.connect("agent")
    for table in TABLES:
        _denied(conn, sql.SQL("SELECT * FROM public.{} LIMIT 1").format(sql.Identifier(table)))
    _denied(conn, "CREATE TABLE public.agent_probe (x int)")
    _denied(conn, "CREATE TEMP TABLE agent_probe (x int)")


# --- reader ----------------------------------------------------------------------------------
@pytest.mark.parametrize("table", TABLES)
def test_reader_reads_and_cannot_write(secure_db, table):
    conn = secure_db.connect("reader")
    ident = sql.Identifier(table)
    _allowed(conn, sql.SQL("SELECT * FROM {} LIMIT 1").format(ident))
    _denied(conn, sql.SQL("INSERT INTO {} DEFAULT VALUES").format(ident))
    _denied(
        conn,
        sql.SQL("UPDATE {} SET symbol = symbol").format(ident)
        if table != "consumer_offsets"
        else sql.SQL("UPDATE {} SET topic = topic").format(ident),
    )
    _denied(conn, sql.SQL("DELETE FROM {}").format(ident))
    _denied(conn, sql.SQL("TRUNCATE {}").format(ident))


def test_reader_sees_tables_added_later_but_others_do_not(secure_db):
    """ALTER DEFAULT PRIVILEGES: a later migration's table is readable by the reader at once;
    writers get nothing until that migration grants it."""
    owner = secure_db.connect("owner")
    table = f"later_{uuid.uuid4().hex[:6]}"
    with owner.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(table)))
    owner.commit()
    try:
        _allowed(
            secure_db.connect("reader"), sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))
        )
        _denied(
            secure_db.connect("processor"),
            sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)),
        )
    finally:
        with owner.cursor() as cur:
            cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        owner.commit()


# --- the roles as CloudNativePG creates them (helm-values/cloudnative-pg.yaml) ---------------
REPO = Path(__file__).resolve().parents[2]
GROUP_ROLES_BY_NAME = {
    "finpipe_manager": "manager",
    "finpipe_processor": "processor",
    "finpipe_agent": "agent",
    "finpipe_reader": "reader",
}


def _cnpg_cluster() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "helm-values" / "cloudnative-pg.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "Cluster")


def _agent_pgoptions() -> str:
    """PGOPTIONS of the agent pods, as the chart renders them from its values files."""
    values = [
        yaml.safe_load((REPO / p).read_text())
        for p in ("charts/finpipe-workers/values.yaml", "helm-values/finpipe-workers.yaml")
    ]
    extra = [e for v in values for e in v["workers"]["agent"].get("extraEnv", [])]
    (value,) = {e["value"] for e in extra if e["name"] == "PGOPTIONS"}
    return value


def _create_managed_role(
    cur: Any, role: dict[str, Any], name: str, password: str, rename: dict[str, str]
) -> bool:
    """What CloudNativePG's role reconciler does for one `managed.roles` entry (defaults:
    NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT); False when the role already existed."""
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    created = cur.fetchone() is None
    if created:
        login = sql.SQL("LOGIN" if role.get("login") else "NOLOGIN")
        flags = sql.SQL(" ").join(
            sql.SQL(f)
            for f in (
                "SUPERUSER" if role.get("superuser") else "NOSUPERUSER",
                "CREATEDB" if role.get("createdb") else "NOCREATEDB",
                "CREATEROLE" if role.get("createrole") else "NOCREATEROLE",
                "INHERIT" if role.get("inherit", True) else "NOINHERIT",
            )
        )
        if role.get("passwordSecret"):
            cur.execute(
                sql.SQL("CREATE ROLE {} {} {} PASSWORD %s").format(
                    sql.Identifier(name), login, flags
                ),
                (password,),
            )
        else:
            cur.execute(sql.SQL("CREATE ROLE {} {} {}").format(sql.Identifier(name), login, flags))
    for group in role.get("inRoles", []):
        cur.execute(
            sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(rename.get(group, group)), sql.Identifier(name)
            )
        )
    return created


def test_cloudnative_pg_managed_roles_migrate_and_each_login_does_its_job(local_stack):
    """The production path end to end: the roles exactly as helm-values/cloudnative-pg.yaml
    declares them (login users renamed per test run; the group roles are cluster-wide and
    keep their names), the database owned by the bootstrap owner without CREATEROLE, the
    migrations applied by that owner, then each login user does its process's work and is
    refused the rest. A missing group role, membership or grant fails here."""
    from finpipe_core.db import apply_migrations
    from workers.sources.ratelimit import PostgresRateLimiter

    cluster = _cnpg_cluster()["spec"]
    roles = [r for r in cluster["managed"]["roles"] if r.get("ensure", "present") == "present"]
    owner_name = cluster["bootstrap"]["initdb"]["owner"]
    tag = uuid.uuid4().hex[:8]
    rename = {r["name"]: f"{r['name']}_t{tag}" for r in roles if r.get("login")}
    passwords = {name: uuid.uuid4().hex for name in rename.values()}
    database = f"finpipe_test_cnpg_{tag}"
    admin = PostgresCluster(local_stack).admin_connection()
    created: list[str] = []
    conns: list[Any] = []

    def login(declared: str, options: str | None = None) -> Any:
        name = rename[declared]
        kwargs = local_stack.model_copy(
            update={
                "pg_user": name,
                "pg_database": database,
                "pg_password": SecretStr(passwords[name]),
            }
        ).pg_connect_kwargs()
        if options:
            kwargs["options"] = options
        conn = psycopg2.connect(**kwargs, connect_timeout=10)
        conns.append(conn)
        return conn

    try:
        with admin.cursor() as cur:
            # Group roles first, then logins (CloudNativePG grants memberships after creating).
            for role in sorted(roles, key=lambda r: bool(r.get("login"))):
                name = rename.get(role["name"], role["name"])
                if _create_managed_role(cur, role, name, passwords.get(name, ""), rename):
                    created.append(name)
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(rename[owner_name])
                )
            )
            cur.execute(
                "SELECT rolcreaterole FROM pg_roles WHERE rolname = %s", (rename[owner_name],)
            )
            assert cur.fetchone() == (False,)

        owner = local_stack.model_copy(
            update={"pg_user": rename[owner_name], "pg_database": database}
        )
        assert "0004_roles" in apply_migrations(owner)

        # Each login is a member of exactly one finpipe group role: its process kind.
        kinds: dict[str, str] = {}
        for role in roles:
            if role.get("login") and role["name"] not in (owner_name, "dagster"):
                (group,) = role["inRoles"]
                assert group in GROUP_ROLES_BY_NAME, role
                kinds[GROUP_ROLES_BY_NAME[group]] = role["name"]
        assert set(kinds) == {"manager", "processor", "agent", "reader"}, kinds

        manager = login(kinds["manager"])
        _allowed(manager, "INSERT INTO symbols (symbol, name, active) VALUES ('CNPGM', 'x', true)")
        _denied(
            manager, "INSERT INTO prices (symbol, date, close) VALUES ('CNPGM', '2020-01-02', 1)"
        )
        _denied(manager, "DELETE FROM tasks")

        processor = login(kinds["processor"])
        _allowed(processor, "CREATE TEMP TABLE staging_probe (x int)")
        _allowed(processor, "SELECT * FROM consumer_offsets LIMIT 1")
        _denied(processor, "UPDATE symbols SET active = true")

        reader = login(kinds["reader"])
        _allowed(reader, "SELECT * FROM prices LIMIT 1")
        _denied(reader, "INSERT INTO symbols (symbol) VALUES ('CNPGR')")

        # The agent: the shared budget through pyrate-limiter, with the search_path the
        # chart's PGOPTIONS gives the agent pods (CloudNativePG cannot set it per role).
        agent_name = rename[kinds["agent"]]
        conninfo = make_conninfo(
            "",
            **local_stack.model_copy(
                update={
                    "pg_user": agent_name,
                    "pg_database": database,
                    "pg_password": SecretStr(passwords[agent_name]),
                }
            ).pg_connect_kwargs(),
            options=_agent_pgoptions(),
        )
        limiter = PostgresRateLimiter(conninfo, requests_per_minute=2, requests_per_hour=None)
        try:
            waits = [limiter.try_acquire() for _ in range(3)]
        finally:
            limiter.close()
        assert waits[:2] == [0.0, 0.0] and waits[2] > 0, waits
        agent = login(kinds["agent"], options=_agent_pgoptions())
        _denied(agent, "SELECT * FROM public.prices LIMIT 1")
    finally:
        for conn in conns:
            conn.close()
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
            for name in reversed(created):
                if name in rename.values():
                    cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        admin.close()
