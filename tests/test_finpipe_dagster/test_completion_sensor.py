"""Completion sensor scenarios against the real PostgreSQL; the test plays the processors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import psycopg2.extensions
import pytest

from finpipe_core.calendar import trading_days
from finpipe_dagster.partitions import trading_day_partitions
from finpipe_dagster.resources import PostgresResource
from finpipe_dagster.sensors import build_completion_sensor
from finpipe_manager.completion import CompletionCursor, intersect_ranges
from finpipe_manager.outbox import enqueue_tasks
from finpipe_manager.universe import load_universe, sync_universe

D = dt.date
SAMPLE = ["AAPL", "FB", "GOOG", "IBM", "MSFT"]
NOT_FB = ["AAPL", "GOOG", "IBM", "MSFT"]
WEEK1 = [d.isoformat() for d in trading_days(D(2010, 3, 1), D(2010, 3, 5))]
WEEK2 = [d.isoformat() for d in trading_days(D(2010, 3, 8), D(2010, 3, 12))]


class TestPure:
    def test_intersect_ranges(self) -> None:
        a = [(D(2010, 1, 1), D(2010, 1, 10)), (D(2010, 1, 20), D(2010, 1, 31))]
        b = [(D(2010, 1, 5), D(2010, 1, 25))]
        assert intersect_ranges(a, b) == [
            (D(2010, 1, 5), D(2010, 1, 10)),
            (D(2010, 1, 20), D(2010, 1, 25)),
        ]
        assert intersect_ranges(a, []) == []

    def test_cursor_is_a_small_json_dict(self) -> None:
        cursor = CompletionCursor(
            dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
            "AAPL:x",
            ((D(2010, 1, 1), D(2010, 2, 1)),),
        )
        text = cursor.to_json()
        assert len(text) < 200 and isinstance(json.loads(text), dict)
        assert CompletionCursor.from_json(text) == cursor
        assert CompletionCursor.from_json(None) == CompletionCursor()


@dataclass
class Tick:
    """What one evaluation reported: the materialisations it stored and its cursor."""

    asset_events: list[dg.AssetMaterialization]
    cursor: str | None
    skip_reason: object


def _partitions(result: Tick, asset: str) -> list[str]:
    return [
        e.partition
        for e in result.asset_events
        if isinstance(e, dg.AssetMaterialization) and e.asset_key == dg.AssetKey(asset)
    ]


@pytest.mark.integration
class TestScenarios:
    @pytest.fixture
    def tasks_db(self, clean_db: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
        """The sample universe with tasks for two weeks of March 2010, one task per week."""
        sync_universe(clean_db, load_universe("sample"))
        enqueue_tasks(
            clean_db,
            SAMPLE,
            D(2010, 3, 1),
            D(2010, 3, 12),
            requested_by="backfill",
            max_sessions=5,
        )
        return clean_db

    @pytest.fixture
    def evaluate(self) -> Callable[..., Tick]:
        """One sensor evaluation, with the materialisations it wrote to the instance."""
        instance = dg.DagsterInstance.ephemeral()
        seen = 0

        def run(cursor: str | None, **options: object) -> Tick:
            nonlocal seen
            sensor = build_completion_sensor(**options)
            with dg.build_sensor_context(
                cursor=cursor, instance=instance, resources={"postgres": PostgresResource()}
            ) as context:
                result = sensor(context)
            assert not result.asset_events  # written in batches by the sensor itself
            records = sorted(
                (
                    record
                    for key in ("stock_prices", "stock_indicators")
                    for record in instance.fetch_materializations(
                        dg.AssetKey(key), limit=10_000, ascending=True
                    ).records
                ),
                key=lambda record: record.storage_id,
            )
            events = [r.asset_materialization for r in records[seen:]]
            seen = len(records)
            return Tick(events, result.cursor, result.skip_reason)

        return run

    def test_nothing_finished(self, tasks_db: object, evaluate: Callable) -> None:
        result = evaluate(None)
        assert result.asset_events == []
        assert result.skip_reason is not None
        assert evaluate(result.cursor).asset_events == []

    def test_reports_only_days_every_symbol_finished(
        self,
        tasks_db: psycopg2.extensions.connection,
        evaluate: Callable,
        finish_tasks: Callable[..., int],
    ) -> None:
        # Week 1 done for four symbols: not complete yet.
        assert finish_tasks(tasks_db, symbols=NOT_FB, end=D(2010, 3, 5)) == 4
        first = evaluate(None)
        assert first.asset_events == []
        # FB has no data in 2010 (the sample starts in 2012): no_data finishes it too.
        finish_tasks(tasks_db, symbols=["FB"], end=D(2010, 3, 5), status="no_data")
        second = evaluate(first.cursor)
        assert _partitions(second, "stock_prices") == WEEK1
        assert _partitions(second, "stock_indicators") == WEEK1
        # Idempotent: the returned cursor reports nothing new.
        third = evaluate(second.cursor)
        assert third.asset_events == [] and third.cursor == second.cursor
        # Week 2 finished by everyone: only week 2 is reported.
        finish_tasks(tasks_db, start=D(2010, 3, 8))
        fourth = evaluate(third.cursor)
        assert _partitions(fourth, "stock_prices") == WEEK2
        assert evaluate(fourth.cursor).asset_events == []
        # Every event is for an existing partition of the external assets.
        keys = set(trading_day_partitions.get_partition_keys())
        assert set(WEEK1 + WEEK2) <= keys

    def test_a_failed_symbol_holds_the_day_back(
        self,
        tasks_db: psycopg2.extensions.connection,
        evaluate: Callable,
        finish_tasks: Callable[..., int],
    ) -> None:
        finish_tasks(tasks_db, symbols=NOT_FB, end=D(2010, 3, 5))
        with tasks_db, tasks_db.cursor() as cur:
            cur.execute(
                "UPDATE tasks SET status = 'failed', completed_at = now() - interval '5 min' "
                "WHERE symbol = 'FB' AND end_date = '2010-03-05'"
            )
        assert evaluate(None).asset_events == []

    def test_inactive_symbols_are_not_awaited(
        self,
        tasks_db: psycopg2.extensions.connection,
        evaluate: Callable,
        finish_tasks: Callable[..., int],
    ) -> None:
        with tasks_db, tasks_db.cursor() as cur:
            cur.execute("UPDATE symbols SET active = false WHERE symbol = 'FB'")
        finish_tasks(tasks_db, symbols=NOT_FB, end=D(2010, 3, 5))
        assert _partitions(evaluate(None), "stock_prices") == WEEK1

    def test_metadata_rows_symbols_and_lag(
        self,
        tasks_db: psycopg2.extensions.connection,
        evaluate: Callable,
        finish_tasks: Callable[..., int],
    ) -> None:
        with tasks_db, tasks_db.cursor() as cur:
            for symbol in ("AAPL", "IBM", "MSFT"):
                cur.execute(
                    "INSERT INTO prices (symbol, date, open, high, low, close, adj_close, volume)"
                    " VALUES (%s, '2010-03-01', 1, 2, 0.5, 1.5, 1.5, 100)",
                    (symbol,),
                )
            cur.execute("INSERT INTO indicators (symbol, date) VALUES ('AAPL', '2010-03-01')")
            cur.execute(
                "INSERT INTO revisions (symbol, date, kind, columns, old_values, new_values, "
                "rewrote_history) VALUES ('IBM', '2010-03-01', 'revised', '{volume}', "
                "'{\"volume\": 100}', '{\"volume\": 120}', true)"
            )
        finish_tasks(tasks_db, end=D(2010, 3, 5), age=dt.timedelta(minutes=2))
        result = evaluate(None)
        first_prices, first_indicators = result.asset_events[0], result.asset_events[1]
        assert first_prices.asset_key == dg.AssetKey("stock_prices")
        assert first_prices.partition == "2010-03-01"
        assert first_prices.metadata["rows"].value == 3
        assert first_prices.metadata["symbols"].value == 5
        assert first_indicators.metadata["rows"].value == 1
        assert first_prices.metadata["revisions"].value == 1
        assert result.asset_events[2].metadata["revisions"].value == 0
        lag = first_prices.metadata["lag_seconds"].value
        close = dt.datetime(2010, 3, 1, 21, 0, tzinfo=dt.UTC)  # 16:00 New York
        assert lag == pytest.approx((dt.datetime.now(dt.UTC) - close).total_seconds(), abs=180)
        assert result.asset_events[2].metadata["rows"].value == 0  # 2010-03-02

    def test_work_per_tick_is_capped(
        self,
        tasks_db: psycopg2.extensions.connection,
        evaluate: Callable,
        finish_tasks: Callable[..., int],
    ) -> None:
        finish_tasks(tasks_db)
        ticks: list[list[str]] = []
        cursor = None
        for _ in range(6):
            result = evaluate(cursor, max_dates=3)
            cursor = result.cursor
            ticks.append(_partitions(result, "stock_prices"))
            assert len(result.asset_events) <= 6
        assert [len(t) for t in ticks] == [3, 3, 3, 1, 0, 0]
        assert [d for tick in ticks for d in tick] == WEEK1 + WEEK2  # each day once, in order
        assert len(cursor) < 300

    def test_writing_stops_at_the_time_budget_and_resumes(
        self,
        tasks_db: psycopg2.extensions.connection,
        evaluate: Callable,
        finish_tasks: Callable[..., int],
    ) -> None:
        """With no time left after the first batch (two days here), a tick writes one batch
        and the cursor keeps the rest for the next ticks: each day once, in order."""
        finish_tasks(tasks_db)
        ticks: list[list[str]] = []
        cursor = None
        for _ in range(7):
            result = evaluate(cursor, write_budget=0, event_batch=4)
            cursor = result.cursor
            ticks.append(_partitions(result, "stock_prices"))
        assert [len(t) for t in ticks] == [2, 2, 2, 2, 2, 0, 0]
        assert [d for tick in ticks for d in tick] == WEEK1 + WEEK2

    def test_tasks_read_per_tick_are_capped(
        self,
        tasks_db: psycopg2.extensions.connection,
        evaluate: Callable,
        finish_tasks: Callable[..., int],
    ) -> None:
        finish_tasks(tasks_db)
        reported: list[str] = []
        cursor = None
        for _ in range(12):
            result = evaluate(cursor, max_tasks=1)
            cursor = result.cursor
            reported += _partitions(result, "stock_prices")
        assert sorted(reported) == WEEK1 + WEEK2 and len(reported) == len(set(reported))

    def test_recent_completions_wait_to_settle(
        self,
        tasks_db: psycopg2.extensions.connection,
        evaluate: Callable,
        finish_tasks: Callable[..., int],
    ) -> None:
        finish_tasks(tasks_db, end=D(2010, 3, 5), age=dt.timedelta(0))
        waiting = evaluate(None, settle_seconds=60)
        assert waiting.asset_events == []
        assert _partitions(evaluate(waiting.cursor, settle_seconds=0), "stock_prices") == WEEK1

    def test_a_forced_refetch_reports_its_days_again(
        self,
        tasks_db: psycopg2.extensions.connection,
        evaluate: Callable,
        finish_tasks: Callable[..., int],
    ) -> None:
        finish_tasks(tasks_db, end=D(2010, 3, 5), age=dt.timedelta(minutes=10))
        first = evaluate(None)
        assert _partitions(first, "stock_prices") == WEEK1
        enqueue_tasks(
            tasks_db, ["IBM"], D(2010, 3, 3), D(2010, 3, 3), requested_by="fix", force=True
        )
        finish_tasks(tasks_db, symbols=["IBM"], age=dt.timedelta(minutes=1), end=D(2010, 3, 3))
        assert _partitions(evaluate(first.cursor), "stock_prices") == ["2010-03-03"]
