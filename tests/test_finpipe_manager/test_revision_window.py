"""The revision window: corrections are distinct, deliberate tasks that never disturb the
outbox's exactly-once-per-range planning of backfills; the completion view counts revisions."""

from __future__ import annotations

import datetime as dt

import psycopg2.extensions
import pytest

from finpipe_core.calendar import trading_days
from finpipe_manager.completion import CompletionCursor, evaluate_completion
from finpipe_manager.outbox import enqueue_tasks
from finpipe_manager.revision_window import (
    correction_requester,
    enqueue_corrections,
    revision_window,
)
from finpipe_manager.revisions import list_revisions, revisions_per_symbol
from finpipe_manager.universe import load_universe, sync_universe

D = dt.date
SAMPLE = ["AAPL", "FB", "GOOG", "IBM", "MSFT"]


def test_window_is_the_sessions_before_the_day():
    # 2024-07-05 (Friday); 2024-07-04 is a holiday.
    assert revision_window(D(2024, 7, 5), 5) == (D(2024, 6, 27), D(2024, 7, 3))
    assert revision_window(D(2024, 7, 5), 1) == (D(2024, 7, 3), D(2024, 7, 3))
    assert revision_window(D(2024, 7, 5), 0) is None


@pytest.fixture
def sample_db(clean_db: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
    sync_universe(clean_db, load_universe("sample"))
    return clean_db


@pytest.mark.integration
class TestCorrections:
    def test_corrections_cover_only_requested_days_once_per_day(self, sample_db) -> None:
        conn = sample_db
        enqueue_tasks(conn, ["AAPL", "IBM"], D(2024, 6, 3), D(2024, 7, 3), requested_by="r1")
        enqueue_tasks(conn, ["MSFT"], D(2024, 7, 2), D(2024, 7, 3), requested_by="r1")
        tasks = enqueue_corrections(conn, SAMPLE, D(2024, 7, 5), window_sessions=5)
        ranges = {(t.symbol, t.start, t.end) for t in tasks}
        # FB and GOOG were never requested: no correction stands in for their backfill; MSFT
        # only from the first day it requested.
        assert ranges == {
            ("AAPL", D(2024, 6, 27), D(2024, 7, 3)),
            ("IBM", D(2024, 6, 27), D(2024, 7, 3)),
            ("MSFT", D(2024, 7, 2), D(2024, 7, 3)),
        }
        assert all(t.force and t.requested_by == correction_requester(D(2024, 7, 5)) for t in tasks)
        # The same day's schedule again: nothing new. The next day: a new correction.
        assert enqueue_corrections(conn, SAMPLE, D(2024, 7, 5), window_sessions=5) == []
        assert enqueue_corrections(conn, SAMPLE, D(2024, 7, 8), window_sessions=5)

    def test_backfills_stay_exactly_once_per_range(self, sample_db) -> None:
        conn = sample_db
        first = enqueue_tasks(conn, SAMPLE, D(2024, 6, 3), D(2024, 7, 3), requested_by="r1")
        enqueue_corrections(conn, SAMPLE, D(2024, 7, 5), window_sessions=5)
        # A backfill over the corrected days and beyond plans only the days never requested.
        later = enqueue_tasks(conn, SAMPLE, D(2024, 6, 1), D(2024, 7, 10), requested_by="r2")
        assert {(t.start, t.end) for t in later} == {(D(2024, 7, 5), D(2024, 7, 10))}
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM tasks WHERE NOT force")
            assert cur.fetchone()[0] == len(first) + len(later)
            cur.execute(
                "SELECT symbol, first_requested_date, last_requested_date "
                "FROM symbol_state ORDER BY symbol"
            )
            assert {r[1:] for r in cur.fetchall()} == {(D(2024, 6, 3), D(2024, 7, 10))}
        conn.rollback()


@pytest.mark.integration
def test_completed_days_count_their_revisions(sample_db) -> None:
    conn = sample_db
    day = D(2024, 7, 3)
    enqueue_tasks(conn, SAMPLE, day, day, requested_by="r1")
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE tasks SET status = 'done', completed_at = now() - interval '5 min'")
        cur.execute(
            "INSERT INTO revisions (symbol, date, kind, columns, old_values, new_values, "
            "rewrote_history, task_id) VALUES "
            "('AAPL', %(d)s, 'revised', '{volume}', '{\"volume\": 1}', '{\"volume\": 2}', true, "
            "'t1'), ('IBM', %(d)s, 'revised', '{adj_close}', '{\"adj_close\": 1}', "
            "'{\"adj_close\": 2}', false, 't2')",
            {"d": day},
        )
    tick = evaluate_completion(conn, CompletionCursor(), settle=dt.timedelta(0))
    assert [(d.day, d.revisions) for d in tick.days] == [(day, 2)]
    listed = list_revisions(conn, "AAPL")
    assert [(r.symbol, r.describe(), r.task_id) for r in listed] == [
        ("AAPL", "volume 1 -> 2", "t1")
    ]
    assert revisions_per_symbol(conn, SAMPLE) == {"AAPL": 1, "IBM": 1}
    assert trading_days(day, day) == [day]
