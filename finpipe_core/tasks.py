"""The fetch-task lifecycle and every query on the ``tasks`` table.

A task is one symbol's date range, created by the manager (outbox) and carried through Kafka::

    pending --publish--> published --agent result, not the last chunk--> fetched
       ^                    |  \\--last chunk stored--> done | no_data | failed
       |                    '--stale: published again (attempts + 1)
       '--the same range asked for again after it failed

Only the manager creates rows; processors move a row forward when they store its results, in
the transaction that stores them. The statuses are the table's CHECK constraint (migration 0001).
Functions take a cursor and leave the transaction to the caller: each runs inside the
transaction of the work it belongs to (an outbox claim, a processor batch).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from psycopg2.extras import execute_values


class TaskStatus(StrEnum):
    PENDING = "pending"  # stored by the manager, not yet on Stock_topic
    PUBLISHED = "published"  # on Stock_topic, no result stored yet
    FETCHED = "fetched"  # some of its chunks stored, not the last one
    DONE = "done"  # every bar stored
    NO_DATA = "no_data"  # the source has no bars in the range
    FAILED = "failed"  # the source refused; asking for the range again revives it


# Finished: the range is settled; completion reports the days these cover.
FINISHED: Final = (TaskStatus.DONE, TaskStatus.NO_DATA)
# Not yet picked up by an agent: the stuck-task sensor publishes these again.
UNPUBLISHED_OR_WAITING: Final = (TaskStatus.PENDING, TaskStatus.PUBLISHED)
# Not finished yet.
OPEN: Final = (TaskStatus.PENDING, TaskStatus.PUBLISHED, TaskStatus.FETCHED)

# What the claim queries return, in this order (a FetchTask's fields).
CLAIM_COLUMNS: Final = "task_id, symbol, start_date, end_date, force, requested_by"


def _values(statuses: Sequence[TaskStatus]) -> list[str]:
    return [str(s) for s in statuses]


def result_status(batch_status: str, last_chunk: bool) -> TaskStatus:
    """A task's status once a processor stored one of its bar batches (status ok/no_data/failed)."""
    if batch_status == "ok":
        return TaskStatus.DONE if last_chunk else TaskStatus.FETCHED
    return TaskStatus(batch_status)


# --- the manager: creating and publishing ----------------------------------------------------


def covered_ranges(
    cur: Any, symbols: Sequence[str], start: dt.date, end: dt.date
) -> dict[str, list[tuple[dt.date, dt.date]]]:
    """Per symbol, the ranges of its tasks overlapping start..end, failed ones excepted: the
    ranges a new request must not ask for again."""
    covered: dict[str, list[tuple[dt.date, dt.date]]] = {s: [] for s in symbols}
    cur.execute(
        "SELECT symbol, start_date, end_date FROM tasks WHERE symbol = ANY(%s) "
        "AND status <> %s AND end_date >= %s AND start_date <= %s",
        (list(symbols), TaskStatus.FAILED.value, start, end),
    )
    for symbol, lo, hi in cur.fetchall():
        covered[symbol].append((lo, hi))
    return covered


def insert_pending(
    cur: Any, rows: Sequence[tuple[str, str, dt.date, dt.date, bool, str]]
) -> set[str]:
    """Store new tasks as pending; return the ids stored.

    Rows are (task_id, symbol, start, end, force, requested_by). An id that exists already is
    left alone unless it failed: asking for a failed range again revives it.
    """
    inserted = execute_values(
        cur,
        "INSERT INTO tasks (task_id, symbol, start_date, end_date, force, requested_by) "
        "VALUES %s ON CONFLICT (task_id) DO UPDATE SET status = 'pending', attempts = 0, "
        "error = NULL, requested_by = EXCLUDED.requested_by, published_at = NULL, "
        "completed_at = NULL, bars = 0, updated_at = now() WHERE tasks.status = 'failed' "
        "RETURNING task_id",
        list(rows),
        fetch=True,
        page_size=1000,
    )
    return {row[0] for row in inserted}


def claim_pending(
    cur: Any, *, task_ids: Sequence[str] | None, skip: Sequence[str], limit: int
) -> list[tuple]:
    """Lock up to ``limit`` pending tasks (oldest first) for publishing; rows another
    publisher holds are skipped (it is sending them)."""
    cur.execute(
        f"SELECT {CLAIM_COLUMNS} FROM tasks "
        "WHERE status = 'pending' AND (%(ids)s::text[] IS NULL OR task_id = ANY(%(ids)s)) "
        "AND NOT (task_id = ANY(%(skip)s)) "
        "ORDER BY created_at, task_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
        {
            "ids": list(task_ids) if task_ids is not None else None,
            "skip": list(skip),
            "limit": limit,
        },
    )
    return cur.fetchall()


def claim_stale(
    cur: Any, *, older_than: dt.timedelta, max_attempts: int | None, limit: int
) -> list[tuple]:
    """Lock up to ``limit`` tasks still pending/published whose last publish (or creation) is
    older than ``older_than``, leaving those published ``max_attempts`` times alone."""
    cur.execute(
        f"SELECT {CLAIM_COLUMNS} FROM tasks "
        "WHERE status = ANY(%(open)s) "
        "AND COALESCE(published_at, created_at) < now() - %(age)s "
        "AND (%(max_attempts)s::int IS NULL OR attempts < %(max_attempts)s) "
        "ORDER BY COALESCE(published_at, created_at), task_id LIMIT %(limit)s "
        "FOR UPDATE SKIP LOCKED",
        {
            "open": _values(UNPUBLISHED_OR_WAITING),
            "age": older_than,
            "max_attempts": max_attempts,
            "limit": limit,
        },
    )
    return cur.fetchall()


def mark_published(cur: Any, task_ids: Sequence[str]) -> None:
    """Delivered to Stock_topic: published, one more attempt. A task whose results arrived
    meanwhile keeps its later status."""
    cur.execute(
        "UPDATE tasks SET status = 'published', attempts = attempts + 1, "
        "published_at = now(), updated_at = now() "
        "WHERE task_id = ANY(%s) AND status = ANY(%s)",
        (list(task_ids), _values(UNPUBLISHED_OR_WAITING)),
    )


# --- the processors: results -----------------------------------------------------------------


@dataclass
class TaskResult:
    """A task's status after one processor batch; ``reset`` when its first chunk is in it."""

    task_id: str
    reset: bool
    bars: int = 0
    status: TaskStatus = TaskStatus.FETCHED
    error: str | None = None
    final: bool = False


def record_results(cur: Any, results: Sequence[TaskResult]) -> int:
    """Store the processors' progress on tasks; return how many tasks were known.

    A result only updates an existing row: tasks are the manager's. Bars of a task no row
    knows (sent to Stock_topic by hand) are still stored; only the bookkeeping is skipped.
    ``reset`` restarts the bar count: a redelivery of the first chunk counts anew.
    """
    known = 0
    for reset, bars_sql in ((True, "v.bars"), (False, "t.bars + v.bars")):
        rows = [
            (r.task_id, r.status.value, r.bars, r.error, r.final)
            for r in results
            if r.reset is reset
        ]
        if rows:
            updated = execute_values(
                cur,
                f"UPDATE tasks AS t SET status = v.status, bars = {bars_sql}, error = v.error, "
                "  completed_at = CASE WHEN v.final THEN clock_timestamp() END, "
                "  updated_at = now() "
                "FROM (VALUES %s) AS v (id, status, bars, error, final) "
                "WHERE t.task_id = v.id RETURNING t.task_id",
                rows,
                template="(%s, %s, %s::int, %s, %s::boolean)",
                fetch=True,
                page_size=len(rows),  # one statement per batch, not per 100 rows
            )
            known += len(updated)
    return known


# --- reading: completion, health, reports ----------------------------------------------------


def finished_after(
    cur: Any, after: tuple[dt.datetime, str], cutoff: dt.datetime, limit: int
) -> list[tuple[str, dt.date, dt.date, dt.datetime]]:
    """(task_id, start, end, completed_at) of tasks finished after the ``(completed_at,
    task_id)`` position ``after`` and no later than ``cutoff``, in that order."""
    cur.execute(
        "SELECT task_id, start_date, end_date, completed_at FROM tasks "
        "WHERE status = ANY(%(finished)s) AND completed_at IS NOT NULL "
        "AND completed_at <= %(cutoff)s AND (completed_at, task_id) > (%(ts)s, %(tid)s) "
        "ORDER BY completed_at, task_id LIMIT %(limit)s",
        {
            "finished": _values(FINISHED),
            "cutoff": cutoff,
            "ts": after[0],
            "tid": after[1],
            "limit": limit,
        },
    )
    return cur.fetchall()


def finished_of_active_symbols(
    cur: Any, upto: tuple[dt.datetime, str], lo: dt.date, hi: dt.date
) -> list[tuple[str, dt.date, dt.date, dt.datetime]]:
    """(symbol, start, end, completed_at) of active symbols' tasks finished up to the position
    ``upto`` whose range overlaps lo..hi."""
    cur.execute(
        "SELECT t.symbol, t.start_date, t.end_date, t.completed_at FROM tasks t "
        "JOIN symbols s ON s.symbol = t.symbol AND s.active "
        "WHERE t.status = ANY(%s) AND (t.completed_at, t.task_id) <= (%s, %s) "
        "AND t.end_date >= %s AND t.start_date <= %s",
        (_values(FINISHED), *upto, lo, hi),
    )
    return cur.fetchall()


def unresolved_failures(cur: Any) -> list[tuple[str, str, dt.date, dt.date, str]]:
    """(task_id, symbol, start, end, error) of failed tasks no finished task of the same
    symbol has since covered, newest first."""
    cur.execute(
        "SELECT f.task_id, f.symbol, f.start_date, f.end_date, coalesce(f.error, '') "
        "FROM tasks f WHERE f.status = 'failed' AND NOT EXISTS (SELECT 1 FROM tasks t "
        "WHERE t.symbol = f.symbol AND t.status = ANY(%s) "
        "AND t.start_date <= f.start_date AND t.end_date >= f.end_date) "
        "ORDER BY f.updated_at DESC, f.task_id",
        (_values(FINISHED),),
    )
    return cur.fetchall()


def stuck(cur: Any, *, max_attempts: int, timeout: dt.timedelta) -> list[str]:
    """Ids of tasks still waiting for an agent after ``max_attempts`` publishes, the last one
    longer ago than ``timeout``: publishing them again has not helped."""
    cur.execute(
        "SELECT task_id FROM tasks WHERE status = ANY(%s) "
        "AND attempts >= %s AND COALESCE(published_at, created_at) < now() - %s "
        "ORDER BY task_id",
        (_values(UNPUBLISHED_OR_WAITING), max_attempts, timeout),
    )
    return [row[0] for row in cur.fetchall()]


def open_ranges(cur: Any) -> list[tuple[dt.date, dt.date]]:
    """(start, end) of every task not finished yet."""
    cur.execute("SELECT start_date, end_date FROM tasks WHERE status = ANY(%s)", (_values(OPEN),))
    return cur.fetchall()


def done_bars(cur: Any) -> int:
    """Bars stored by finished tasks, as the processors counted them."""
    cur.execute("SELECT coalesce(sum(bars), 0) FROM tasks WHERE status = 'done'")
    return int(cur.fetchone()[0])


def count(cur: Any) -> int:
    cur.execute("SELECT count(*) FROM tasks")
    return int(cur.fetchone()[0])


OPEN_TASKS_OF_SYMBOL_SQL: Final = (
    "(SELECT count(*) FROM tasks t WHERE t.symbol = s.symbol AND t.status IN ("
    + ", ".join(f"'{status}'" for status in OPEN)
    + "))"
)
"""A scalar subquery: open tasks of the symbol ``s`` of the surrounding query (for reports)."""
