"""The outbox: planning uncovered ranges, one transaction per run, publishing exactly once."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence

import psycopg2.extensions
import pytest

from finpipe_core.calendar import trading_days
from finpipe_core.contracts import FetchTask, make_task_id
from finpipe_core.db import connect, connection
from finpipe_core.settings import Settings
from finpipe_manager import outbox
from finpipe_manager.outbox import (
    emit_tasks,
    enqueue_tasks,
    make_producer,
    merge_ranges,
    plan_symbol_ranges,
    publish_pending,
    republish_stale,
    session_chunks,
    uncovered_ranges,
)
from finpipe_manager.universe import load_universe, sync_universe

D = dt.date
SAMPLE = ["AAPL", "FB", "GOOG", "IBM", "MSFT"]


class InjectedCrashError(RuntimeError):
    """Stands for the process dying between the DB commit and the publish."""


def crash(_tasks: Sequence[FetchTask]) -> None:
    raise InjectedCrashError("killed between commit and publish")


class TestPlanning:
    @pytest.mark.parametrize(
        ("ranges", "expected"),
        [
            ([], []),
            (
                [(D(2010, 1, 5), D(2010, 1, 8)), (D(2010, 1, 1), D(2010, 1, 4))],
                [(D(2010, 1, 1), D(2010, 1, 8))],
            ),
            (
                [(D(2010, 1, 1), D(2010, 1, 3)), (D(2010, 1, 5), D(2010, 1, 6))],
                [(D(2010, 1, 1), D(2010, 1, 3)), (D(2010, 1, 5), D(2010, 1, 6))],
            ),
            (
                [(D(2010, 1, 1), D(2010, 1, 31)), (D(2010, 1, 5), D(2010, 1, 6))],
                [(D(2010, 1, 1), D(2010, 1, 31))],
            ),
        ],
    )
    def test_merge_ranges(self, ranges: list, expected: list) -> None:
        assert merge_ranges(ranges) == expected

    @pytest.mark.parametrize(
        ("covered", "expected"),
        [
            ([], [(D(2010, 3, 1), D(2010, 3, 31))]),
            ([(D(2010, 3, 1), D(2010, 3, 31))], []),
            ([(D(2000, 1, 1), D(2020, 1, 1))], []),
            (
                [(D(2010, 3, 10), D(2010, 3, 12))],
                [(D(2010, 3, 1), D(2010, 3, 9)), (D(2010, 3, 13), D(2010, 3, 31))],
            ),
            (
                [(D(2010, 2, 1), D(2010, 3, 5)), (D(2010, 3, 20), D(2010, 4, 30))],
                [(D(2010, 3, 6), D(2010, 3, 19))],
            ),
        ],
    )
    def test_uncovered_ranges(self, covered: list, expected: list) -> None:
        assert uncovered_ranges(D(2010, 3, 1), D(2010, 3, 31), covered) == expected

    def test_chunks_snap_to_sessions_and_skip_empty_gaps(self) -> None:
        sessions = trading_days(D(2010, 3, 1), D(2010, 3, 31))
        gaps = [(D(2010, 3, 6), D(2010, 3, 7)), (D(2010, 3, 6), D(2010, 3, 19))]
        assert session_chunks(sessions, gaps[:1], 10) == []  # a weekend only
        assert session_chunks(sessions, gaps[1:], 3) == [
            (D(2010, 3, 8), D(2010, 3, 10)),
            (D(2010, 3, 11), D(2010, 3, 15)),
            (D(2010, 3, 16), D(2010, 3, 18)),
            (D(2010, 3, 19), D(2010, 3, 19)),
        ]

    def test_years_split_into_bounded_tasks(self) -> None:
        start, end = D(2000, 1, 3), D(2013, 12, 31)
        sessions = trading_days(start, end)
        chunks = plan_symbol_ranges(sessions, start, end, [], max_sessions=252)
        assert len(chunks) == -(-len(sessions) // 252)
        assert chunks[0][0] == start and chunks[-1][1] == end
        days = [d for a, b in chunks for d in trading_days(a, b)]
        assert days == sessions  # every session once, in order

    def test_force_ignores_coverage(self) -> None:
        sessions = trading_days(D(2010, 3, 1), D(2010, 3, 5))
        covered = [(D(2010, 3, 1), D(2010, 3, 5))]
        assert plan_symbol_ranges(sessions, D(2010, 3, 1), D(2010, 3, 5), covered) == []
        assert plan_symbol_ranges(sessions, D(2010, 3, 1), D(2010, 3, 5), covered, force=True) == [
            (D(2010, 3, 1), D(2010, 3, 5))
        ]


@pytest.fixture
def sample_db(clean_db: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
    sync_universe(clean_db, load_universe("sample"))
    return clean_db


def _rows(conn: psycopg2.extensions.connection, sql: str, *args: object) -> list[tuple]:
    with conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def _ranges(tasks: Sequence[FetchTask]) -> set[tuple[str, dt.date, dt.date]]:
    return {(t.symbol, t.start, t.end) for t in tasks}


@pytest.mark.integration
class TestEnqueue:
    def test_new_range_then_rerun_emits_nothing(
        self, sample_db: psycopg2.extensions.connection
    ) -> None:
        tasks = enqueue_tasks(sample_db, SAMPLE, D(2010, 3, 1), D(2010, 3, 12), requested_by="r1")
        assert _ranges(tasks) == {(s, D(2010, 3, 1), D(2010, 3, 12)) for s in SAMPLE}
        assert all(t.task_id == make_task_id(t.symbol, t.start, t.end) for t in tasks)
        assert (
            enqueue_tasks(sample_db, SAMPLE, D(2010, 3, 1), D(2010, 3, 12), requested_by="r2") == []
        )
        state = _rows(
            sample_db,
            "SELECT symbol, first_requested_date, last_requested_date FROM symbol_state "
            "ORDER BY symbol",
        )
        assert state == [(s, D(2010, 3, 1), D(2010, 3, 12)) for s in SAMPLE]

    def test_older_and_overlapping_ranges_emit_only_uncovered_days(
        self, sample_db: psycopg2.extensions.connection
    ) -> None:
        enqueue_tasks(sample_db, SAMPLE, D(2010, 3, 1), D(2010, 3, 12), requested_by="r1")
        older = enqueue_tasks(sample_db, SAMPLE, D(2010, 2, 1), D(2010, 3, 5), requested_by="r2")
        # 2010-02-15 is Presidents' Day; Feb 26 is the last session before the covered range.
        assert _ranges(older) == {(s, D(2010, 2, 1), D(2010, 2, 26)) for s in SAMPLE}
        later = enqueue_tasks(sample_db, SAMPLE, D(2010, 3, 10), D(2010, 3, 21), requested_by="r3")
        assert _ranges(later) == {(s, D(2010, 3, 15), D(2010, 3, 19)) for s in SAMPLE}
        state = _rows(
            sample_db,
            "SELECT DISTINCT first_requested_date, last_requested_date FROM symbol_state",
        )
        assert state == [(D(2010, 2, 1), D(2010, 3, 19))]

    def test_range_without_sessions_emits_nothing(
        self, sample_db: psycopg2.extensions.connection
    ) -> None:
        assert (
            enqueue_tasks(sample_db, SAMPLE, D(2010, 3, 6), D(2010, 3, 7), requested_by="weekend")
            == []
        )

    def test_failed_tasks_do_not_cover_and_are_revived(
        self, sample_db: psycopg2.extensions.connection
    ) -> None:
        first = enqueue_tasks(sample_db, ["IBM"], D(2010, 3, 1), D(2010, 3, 5), requested_by="r1")
        _rows(sample_db, "UPDATE tasks SET status = 'failed', error = 'boom' RETURNING 1")
        again = enqueue_tasks(sample_db, ["IBM"], D(2010, 3, 1), D(2010, 3, 5), requested_by="r2")
        assert [t.task_id for t in again] == [t.task_id for t in first]
        assert _rows(sample_db, "SELECT status, requested_by, error FROM tasks") == [
            ("pending", "r2", None)
        ]

    def test_force_emits_the_range_again_with_new_ids(
        self, sample_db: psycopg2.extensions.connection
    ) -> None:
        first = enqueue_tasks(sample_db, SAMPLE, D(2010, 3, 1), D(2010, 3, 5), requested_by="r1")
        forced = enqueue_tasks(
            sample_db, SAMPLE, D(2010, 3, 1), D(2010, 3, 5), requested_by="fix-1", force=True
        )
        assert _ranges(forced) == _ranges(first)
        assert all(t.force and t.requested_by == "fix-1" for t in forced)
        assert {t.task_id for t in forced}.isdisjoint(t.task_id for t in first)
        assert forced[0].task_id == make_task_id(
            forced[0].symbol, forced[0].start, forced[0].end, variant="fix-1"
        )
        assert _rows(sample_db, "SELECT count(*) FROM tasks WHERE force") == [(5,)]

    def test_bounded_tasks(self, sample_db: psycopg2.extensions.connection) -> None:
        tasks = enqueue_tasks(
            sample_db,
            ["AAPL"],
            D(2000, 1, 3),
            D(2013, 12, 31),
            requested_by="big",
            max_sessions=252,
        )
        assert len(tasks) == 14
        assert max(len(trading_days(t.start, t.end)) for t in tasks) <= 252

    def test_unknown_symbol_is_refused(self, sample_db: psycopg2.extensions.connection) -> None:
        with pytest.raises(ValueError, match="not in the universe"):
            enqueue_tasks(sample_db, ["ZZZZ"], D(2010, 3, 1), D(2010, 3, 5), requested_by="r")

    def test_two_overlapping_runs_never_emit_the_same_range(
        self, sample_db: psycopg2.extensions.connection, local_stack: Settings
    ) -> None:
        # A third connection holds the outbox lock, so both runs start waiting together.
        blocker = connect(local_stack)
        with blocker.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (outbox.OUTBOX_LOCK_KEY,))
        results: dict[str, list[FetchTask]] = {}
        errors: list[BaseException] = []

        def run(name: str, start: dt.date, end: dt.date) -> None:
            try:
                with connection(local_stack) as conn:
                    results[name] = enqueue_tasks(conn, SAMPLE, start, end, requested_by=name)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=("a", D(2010, 3, 1), D(2010, 3, 19))),
            threading.Thread(target=run, args=("b", D(2010, 3, 8), D(2010, 3, 31))),
        ]
        for t in threads:
            t.start()
        try:
            waiting = 0
            for _ in range(100):
                waiting = _rows(
                    sample_db,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                )[0][0]
                if waiting >= 2:
                    break
                threading.Event().wait(0.05)
            assert waiting >= 2
        finally:
            with blocker.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (outbox.OUTBOX_LOCK_KEY,))
            blocker.close()
        for t in threads:
            t.join(30)
        assert not errors
        days: dict[str, list[dt.date]] = {s: [] for s in SAMPLE}
        for task in results["a"] + results["b"]:
            days[task.symbol] += trading_days(task.start, task.end)
        for symbol in SAMPLE:
            assert sorted(days[symbol]) == trading_days(D(2010, 3, 1), D(2010, 3, 31)), symbol
        assert results["a"] and results["b"]


@pytest.mark.integration
class TestPublish:
    def test_emit_publishes_once_keyed_by_symbol(
        self,
        sample_db: psycopg2.extensions.connection,
        local_stack: Settings,
        topic_factory: Callable[..., str],
        read_topic: Callable[[str], list[FetchTask]],
    ) -> None:
        topic = topic_factory("outbox")
        producer = make_producer(local_stack)
        report = emit_tasks(
            sample_db, producer, topic, SAMPLE, D(2010, 3, 1), D(2010, 3, 5), requested_by="r1"
        )
        assert report.publish.ok and sorted(report.publish.published) == sorted(
            t.task_id for t in report.tasks
        )
        assert sorted(read_topic(topic), key=lambda t: t.task_id) == sorted(
            report.tasks, key=lambda t: t.task_id
        )
        assert _rows(sample_db, "SELECT DISTINCT status, attempts FROM tasks") == [("published", 1)]
        again = emit_tasks(
            sample_db, producer, topic, SAMPLE, D(2010, 3, 1), D(2010, 3, 5), requested_by="r2"
        )
        assert again.tasks == [] and again.publish.published == []
        assert len(read_topic(topic)) == 5

    def test_crash_between_commit_and_publish(
        self,
        sample_db: psycopg2.extensions.connection,
        local_stack: Settings,
        topic_factory: Callable[..., str],
        read_topic: Callable[[str], list[FetchTask]],
    ) -> None:
        topic = topic_factory("outbox")
        producer = make_producer(local_stack)
        with pytest.raises(InjectedCrashError):
            emit_tasks(
                sample_db,
                producer,
                topic,
                SAMPLE,
                D(2010, 3, 1),
                D(2010, 3, 5),
                requested_by="crashed",
                before_publish=crash,
            )
        assert _rows(sample_db, "SELECT DISTINCT status FROM tasks") == [("pending",)]
        assert read_topic(topic) == []
        # The next run has nothing new to store but publishes what the crash left behind.
        report = emit_tasks(
            sample_db, producer, topic, SAMPLE, D(2010, 3, 1), D(2010, 3, 5), requested_by="next"
        )
        assert report.tasks == [] and len(report.publish.published) == 5
        tasks = read_topic(topic)
        assert len(tasks) == len({t.task_id for t in tasks}) == 5
        assert {t.requested_by for t in tasks} == {"crashed"}
        assert publish_pending(sample_db, producer, topic).published == []
        assert len(read_topic(topic)) == 5

    def test_processor_status_is_not_overwritten(
        self,
        sample_db: psycopg2.extensions.connection,
        local_stack: Settings,
        topic_factory: Callable[..., str],
    ) -> None:
        topic = topic_factory("outbox")
        enqueue_tasks(sample_db, ["IBM"], D(2010, 3, 1), D(2010, 3, 5), requested_by="r")
        _rows(sample_db, "UPDATE tasks SET status = 'done' RETURNING 1")
        assert publish_pending(sample_db, make_producer(local_stack), topic).published == []
        assert _rows(sample_db, "SELECT status FROM tasks") == [("done",)]

    def test_republish_stale(
        self,
        sample_db: psycopg2.extensions.connection,
        local_stack: Settings,
        topic_factory: Callable[..., str],
        read_topic: Callable[[str], list[FetchTask]],
    ) -> None:
        topic = topic_factory("outbox")
        producer = make_producer(local_stack)
        emit_tasks(
            sample_db, producer, topic, SAMPLE, D(2010, 3, 1), D(2010, 3, 5), requested_by="r"
        )
        hour = dt.timedelta(hours=1)
        assert republish_stale(sample_db, producer, topic, older_than=hour).published == []
        _rows(
            sample_db,
            "UPDATE tasks SET published_at = now() - interval '3 hours' "
            "WHERE symbol IN ('AAPL', 'IBM') RETURNING 1",
        )
        _rows(sample_db, "UPDATE tasks SET status = 'done' WHERE symbol = 'IBM' RETURNING 1")
        report = republish_stale(sample_db, producer, topic, older_than=hour)
        assert [t.split(":")[0] for t in report.published] == ["AAPL"]
        assert _rows(sample_db, "SELECT symbol, attempts FROM tasks WHERE attempts > 1") == [
            ("AAPL", 2)
        ]
        assert republish_stale(sample_db, producer, topic, older_than=hour).published == []
        assert [t.symbol for t in read_topic(topic)].count("AAPL") == 2
        # A task published max_attempts times is left alone (the health check reports it).
        _rows(
            sample_db,
            "UPDATE tasks SET published_at = now() - interval '3 hours' "
            "WHERE symbol = 'AAPL' RETURNING 1",
        )
        assert (
            republish_stale(sample_db, producer, topic, older_than=hour, max_attempts=2).published
            == []
        )
