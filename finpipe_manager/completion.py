"""Which trading days every active symbol has finished: what the completion sensor reports.

A day D is finished when each active symbol has a task with status ``done`` or ``no_data``
whose range covers D (processors set the status and ``completed_at``). The cursor is the
``(completed_at, task_id)`` of the last finished task read, plus ``todo``: day ranges still to
report when an evaluation hit its cap. Each evaluation reads at most ``max_tasks`` newly finished
tasks, looks only at the days they cover, and returns at most ``max_dates`` days, so its work is
bounded; a second evaluation with the returned cursor returns nothing new.

Only tasks finished at least ``settle`` ago are read: a processor transaction that commits
late with an older ``completed_at`` would otherwise slip behind the cursor.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pandas as pd
import psycopg2.extensions

from finpipe_core import tasks
from finpipe_core.calendar import get_calendar, trading_days
from finpipe_manager.outbox import DateRange, merge_ranges
from finpipe_manager.revisions import revisions_per_day

CURSOR_VERSION: Final = 1
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Days reported per tick (two events each): a 10,000-day backfill in one tick.
MAX_DATES_PER_TICK: Final = 10_000
# Newly finished tasks read per tick (a 10,000-day backfill of 500 symbols is 20,000 tasks).
MAX_TASKS_PER_TICK: Final = 50_000
# Longer than any processor transaction, so a finished task is committed before it is read.
SETTLE_SECONDS: Final = 30
# The cursor keeps at most this many todo ranges (more are joined into one span).
MAX_TODO_RANGES: Final = 20


@dataclass(frozen=True, slots=True)
class CompletionCursor:
    """Where the completion sensor stopped; serialised as a small JSON dict."""

    completed_at: dt.datetime = EPOCH
    task_id: str = ""
    todo: tuple[DateRange, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "completed_at": self.completed_at.isoformat(),
                "task_id": self.task_id,
                "todo": [[a.isoformat(), b.isoformat()] for a, b in self.todo],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> CompletionCursor:
        if not text:
            return cls()
        data = json.loads(text)
        if data.get("v") != CURSOR_VERSION:
            raise ValueError(f"unknown completion cursor version in {text[:100]!r}")
        return cls(
            completed_at=dt.datetime.fromisoformat(data["completed_at"]),
            task_id=data["task_id"],
            todo=tuple(
                (dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in data["todo"]
            ),
        )


@dataclass(frozen=True, slots=True)
class CompletedDay:
    """A trading day every active symbol has finished, with what the tables hold for it."""

    day: dt.date
    symbols: int
    prices_rows: int
    indicators_rows: int
    completed_at: dt.datetime
    lag_seconds: float  # from the session's close to the last symbol finishing it
    revisions: int = 0  # changes to the day's stored bars logged so far (revision log)


@dataclass(frozen=True, slots=True)
class CompletionTick:
    """Result of one evaluation."""

    days: list[CompletedDay]
    cursor: CompletionCursor
    tasks_read: int = 0
    candidates: list[DateRange] = field(default_factory=list)


def intersect_ranges(a: Sequence[DateRange], b: Sequence[DateRange]) -> list[DateRange]:
    """Days in both ``a`` and ``b`` (each sorted and disjoint)."""
    out: list[DateRange] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def clip_after(ranges: Sequence[DateRange], day: dt.date) -> list[DateRange]:
    nxt = day + dt.timedelta(days=1)
    return [(max(lo, nxt), hi) for lo, hi in ranges if hi >= nxt]


def bounded_todo(ranges: list[DateRange]) -> tuple[DateRange, ...]:
    if len(ranges) > MAX_TODO_RANGES:
        return ((ranges[0][0], ranges[-1][1]),)
    return tuple(ranges)


def evaluate_completion(
    conn: psycopg2.extensions.connection,
    cursor: CompletionCursor,
    *,
    max_dates: int = MAX_DATES_PER_TICK,
    max_tasks: int = MAX_TASKS_PER_TICK,
    settle: dt.timedelta = dt.timedelta(seconds=SETTLE_SECONDS),
    first_date: dt.date | None = None,
) -> CompletionTick:
    """The days newly finished by every active symbol since ``cursor``."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT now() - %s", (settle,))
        cutoff = cur.fetchone()[0]
        newly_finished = tasks.finished_after(
            cur, (cursor.completed_at, cursor.task_id), cutoff, max_tasks
        )
        after = (cursor.completed_at, cursor.task_id)
        if newly_finished:
            after = (newly_finished[-1][3], newly_finished[-1][0])
        candidates = merge_ranges([*cursor.todo, *((t[1], t[2]) for t in newly_finished)])
        if first_date is not None:
            candidates = [(max(lo, first_date), hi) for lo, hi in candidates if hi >= first_date]
        done = CompletionTick([], CompletionCursor(*after, ()), len(newly_finished), candidates)
        if not candidates:
            return done
        lo, hi = candidates[0][0], candidates[-1][1]
        cur.execute("SELECT symbol FROM symbols WHERE active")
        active = [row[0] for row in cur.fetchall()]
        if not active:
            return done
        finished: dict[str, list[tuple[dt.date, dt.date, dt.datetime]]] = defaultdict(list)
        for symbol, start, end, completed_at in tasks.finished_of_active_symbols(
            cur, after, lo, hi
        ):
            finished[symbol].append((start, end, completed_at))
        complete = list(candidates)
        for symbol in active:
            covered = merge_ranges((start, end) for start, end, _ in finished[symbol])
            complete = intersect_ranges(complete, covered)
            if not complete:
                return done
        days = [d for a, b in complete for d in trading_days(a, b)]
        if not days:
            return done
        report = days[:max_dates]
        todo = bounded_todo(clip_after(candidates, report[-1])) if len(days) > max_dates else ()
        finished_at = _finished_at(report, finished)
        prices = _rows_per_day(cur, "prices", report)
        indicators = _rows_per_day(cur, "indicators", report)
        revised = revisions_per_day(cur, report)
    cal = get_calendar()
    result = [
        CompletedDay(
            day=d,
            symbols=len(active),
            prices_rows=prices.get(d, 0),
            indicators_rows=indicators.get(d, 0),
            revisions=revised.get(d, 0),
            completed_at=finished_at[d],
            lag_seconds=(
                finished_at[d] - cal.session_close(pd.Timestamp(d)).to_pydatetime()
            ).total_seconds(),
        )
        for d in report
    ]
    return CompletionTick(result, CompletionCursor(*after, todo), len(newly_finished), candidates)


def _finished_at(
    days: list[dt.date], finished: dict[str, list[tuple[dt.date, dt.date, dt.datetime]]]
) -> dict[dt.date, dt.datetime]:
    """Per day: when its last symbol finished it (each symbol's earliest covering task)."""
    latest: dict[dt.date, dt.datetime] = {}
    for intervals in finished.values():
        earliest: dict[dt.date, dt.datetime] = {}
        for start, end, completed_at in intervals:
            for d in days[bisect.bisect_left(days, start) : bisect.bisect_right(days, end)]:
                if d not in earliest or completed_at < earliest[d]:
                    earliest[d] = completed_at
        for d, at in earliest.items():
            if d not in latest or at > latest[d]:
                latest[d] = at
    return latest


def _rows_per_day(cur: Any, table: str, days: list[dt.date]) -> dict[dt.date, int]:
    if table not in ("prices", "indicators"):
        raise ValueError(f"unexpected table {table!r}")
    cur.execute(
        f"SELECT date, count(*) FROM {table} WHERE date = ANY(%s::date[]) GROUP BY date",
        (days,),
    )
    return dict(cur.fetchall())


def finished_days(conn: psycopg2.extensions.connection, first_date: dt.date) -> set[dt.date]:
    """Every day finished so far, from ``first_date`` on: evaluations from a fresh cursor until
    one returns nothing new (what the sensor would report over all its ticks)."""
    cursor = CompletionCursor()
    complete: set[dt.date] = set()
    while True:
        tick = evaluate_completion(
            conn, cursor, max_dates=5000, settle=dt.timedelta(0), first_date=first_date
        )
        complete.update(d.day for d in tick.days)
        if tick.cursor == cursor or not (tick.days or tick.tasks_read):
            return complete
        cursor = tick.cursor
