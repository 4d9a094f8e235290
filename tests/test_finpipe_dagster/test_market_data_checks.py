"""Asset checks on stock_indicators and the health check of stock_prices, on real tables."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import dagster as dg
import psycopg2.extensions
import pytest
from psycopg2.extras import execute_values

from finpipe_core.calendar import trading_days
from finpipe_core.indicators import INDICATOR_COLUMNS, LOOKBACK
from finpipe_dagster.checks import (
    no_calendar_gaps,
    no_nan_after_warmup,
    rsi_in_range,
    symbols_healthy,
)
from finpipe_dagster.definitions import defs
from finpipe_dagster.resources import KafkaProducerResource, ManagerResource, PostgresResource
from finpipe_dagster.sensors import build_stuck_tasks_sensor
from finpipe_manager import quality
from finpipe_manager.health import (
    find_calendar_gaps,
    find_nan_after_warmup,
    find_rsi_out_of_range,
    pipeline_health,
)
from finpipe_manager.outbox import enqueue_tasks
from finpipe_manager.universe import load_universe, sync_universe

pytestmark = pytest.mark.integration

D = dt.date
DAYS = trading_days(D(2010, 1, 4), D(2011, 3, 31))  # > 200 sessions: past every warm-up


def _insert(
    conn: psycopg2.extensions.connection,
    symbol: str,
    days: Sequence[dt.date],
    value: float = 50.0,
    warmup: bool = True,
) -> None:
    """Indicator rows as the processor writes them: NaN before each column's warm-up ends."""
    columns = list(INDICATOR_COLUMNS)
    rows = [
        (symbol, day, *(math.nan if warmup and i < LOOKBACK[c] else value for c in columns))
        for i, day in enumerate(days)
    ]
    with conn, conn.cursor() as cur:
        execute_values(
            cur, f"INSERT INTO indicators (symbol, date, {', '.join(columns)}) VALUES %s", rows
        )


def _set(conn: psycopg2.extensions.connection, sql: str, *args: object) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(sql, args)


@pytest.fixture
def postgres() -> PostgresResource:
    return PostgresResource()


class TestIndicatorChecks:
    def test_clean_history_passes_every_check(
        self, clean_db: psycopg2.extensions.connection
    ) -> None:
        _insert(clean_db, "AAPL", DAYS)
        _insert(clean_db, "IBM", DAYS[100:])
        assert find_calendar_gaps(clean_db) == {"symbols": 2, "bad": {}}
        assert find_rsi_out_of_range(clean_db)["bad"] == {}
        assert find_nan_after_warmup(clean_db, LOOKBACK)["bad"] == {}
        result = defs.resolve_job_def("market_data_checks_job").execute_in_process()
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == {
            "no_calendar_gaps",
            "rsi_in_range",
            "no_nan_after_warmup",
            "symbols_healthy",
            *quality.CHECKS,
        }
        assert all(e.passed for e in evaluations)

    def test_empty_table_passes(self, clean_db: psycopg2.extensions.connection) -> None:
        assert find_calendar_gaps(clean_db) == {"symbols": 0, "bad": {}}
        assert find_nan_after_warmup(clean_db, LOOKBACK)["bad"] == {}

    def test_gap_against_the_calendar(
        self, clean_db: psycopg2.extensions.connection, postgres: PostgresResource
    ) -> None:
        _insert(clean_db, "AAPL", DAYS[:50] + DAYS[53:])
        _insert(clean_db, "IBM", DAYS)
        _set(clean_db, "INSERT INTO indicators (symbol, date) VALUES ('IBM', '2010-07-04')")
        bad = find_calendar_gaps(clean_db)["bad"]
        assert bad["AAPL"]["missing"] == 3
        assert bad["AAPL"]["first_missing"] == [d.isoformat() for d in DAYS[50:53]]
        assert bad["IBM"] == {"missing": 0, "first_missing": [], "not_sessions": ["2010-07-04"]}
        result = no_calendar_gaps(postgres=postgres)
        assert not result.passed
        assert result.metadata["symbols_with_gaps"].value == 2

    @pytest.mark.parametrize(("value", "bad"), [(-0.5, True), (100.01, True), (100.0, False)])
    def test_rsi_range(
        self,
        clean_db: psycopg2.extensions.connection,
        postgres: PostgresResource,
        value: float,
        bad: bool,
    ) -> None:
        _insert(clean_db, "AAPL", DAYS[:40])
        _set(clean_db, "UPDATE indicators SET rsi_14 = %s WHERE date = %s", value, DAYS[30])
        assert rsi_in_range(postgres=postgres).passed is not bad

    def test_nan_after_warmup(
        self, clean_db: psycopg2.extensions.connection, postgres: PostgresResource
    ) -> None:
        _insert(clean_db, "AAPL", DAYS)
        # NaN inside sma_200's warm-up is expected; after it, and NULL in MACD, is not.
        _set(clean_db, "UPDATE indicators SET sma_200 = 'NaN' WHERE date = %s", DAYS[150])
        assert find_nan_after_warmup(clean_db, LOOKBACK)["bad"] == {}
        _set(clean_db, "UPDATE indicators SET sma_200 = 'NaN' WHERE date = %s", DAYS[250])
        _set(clean_db, "UPDATE indicators SET macd = NULL WHERE date = %s", DAYS[LOOKBACK["macd"]])
        found = find_nan_after_warmup(clean_db, LOOKBACK)
        assert found["bad"] == {"sma_200": 1, "macd": 1}
        result = no_nan_after_warmup(postgres=postgres)
        assert not result.passed and result.metadata["rows_with_nan"].value == 2

    def test_unknown_engine_column_is_reported_not_queried(
        self, clean_db: psycopg2.extensions.connection
    ) -> None:
        _insert(clean_db, "AAPL", DAYS[:30])
        found = find_nan_after_warmup(clean_db, {**LOOKBACK, "new_indicator": 5})
        assert found["missing_columns"] == ["new_indicator"] and found["bad"] == {}


class TestHealth:
    @pytest.fixture
    def sample_db(self, clean_db: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
        sync_universe(clean_db, load_universe("sample"))
        enqueue_tasks(
            clean_db, ["AAPL", "IBM", "MSFT"], D(2010, 3, 1), D(2010, 3, 5), requested_by="r"
        )
        return clean_db

    def test_failed_tasks_and_parked_symbols_fail_the_check(
        self, sample_db: psycopg2.extensions.connection, postgres: PostgresResource
    ) -> None:
        manager = ManagerResource()
        assert symbols_healthy(postgres=postgres, manager=manager).passed
        _set(
            sample_db, "UPDATE tasks SET status = 'failed', error = 'HTTP 404' WHERE symbol = 'IBM'"
        )
        _set(
            sample_db,
            "UPDATE symbol_state SET status = 'parked', error = 'bad bar' WHERE symbol = 'MSFT'",
        )
        result = symbols_healthy(postgres=postgres, manager=manager)
        assert not result.passed
        assert result.metadata["failed_tasks"].value == 1
        assert result.metadata["unhealthy_symbols"].value == 1
        # A later finished task over the same range supersedes the failure.
        enqueue_tasks(sample_db, ["IBM"], D(2010, 3, 1), D(2010, 3, 5), requested_by="retry")
        _set(sample_db, "UPDATE tasks SET status = 'done' WHERE symbol = 'IBM'")
        health = pipeline_health(sample_db, timeout=dt.timedelta(hours=1))
        assert health.failed_tasks == 0 and len(health.unhealthy_symbols) == 1

    def test_stuck_sensor_reports_health_on_change_only(
        self, sample_db: psycopg2.extensions.connection
    ) -> None:
        sensor = build_stuck_tasks_sensor(timeout=dt.timedelta(hours=1))
        resources = {
            "postgres": PostgresResource(),
            "kafka": KafkaProducerResource(),
            "manager": ManagerResource(),
        }
        instance = dg.DagsterInstance.ephemeral()

        def tick(cursor: str | None) -> dg.SensorResult:
            with dg.build_sensor_context(
                cursor=cursor, instance=instance, resources=resources
            ) as context:
                return sensor(context)

        first = tick(None)
        [healthy] = first.asset_events
        assert isinstance(healthy, dg.AssetCheckEvaluation)
        assert healthy.check_name == "symbols_healthy" and healthy.passed
        second = tick(first.cursor)
        assert second.asset_events == []
        _set(
            sample_db,
            "UPDATE symbol_state SET status = 'failed', error = 'delisted' WHERE symbol = 'FB'",
        )
        third = tick(second.cursor)
        [unhealthy] = third.asset_events
        assert not unhealthy.passed
        assert unhealthy.metadata["symbols"].value == [
            {"symbol": "FB", "status": "failed", "error": "delisted"}
        ]
        assert tick(third.cursor).asset_events == []
