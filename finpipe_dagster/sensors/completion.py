"""Completion sensor: a runless materialisation of stock_prices and stock_indicators for each
trading day that every active symbol has finished.

A day D is finished when each active symbol has a task with status ``done`` or ``no_data``
whose range covers D (processors set the status and ``completed_at``). The cursor is the
``(completed_at, task_id)`` of the last finished task read, plus ``todo``: day ranges still to
report when a tick hit its cap. Each tick reads at most ``max_tasks`` newly finished tasks,
looks only at the days they cover, and reports at most ``max_dates`` days, so its work is
bounded; a second evaluation with the returned cursor reports nothing new.

The materialisations are written by the sensor itself, in batches (``report_in_batches``):
returned as ``SensorResult.asset_events``, the daemon would store them one at a time (two new
PostgreSQL connections each), which made 100 days per tick the most a tick could afford.
Written in batches, a tick reports up to 10,000 days (20,000 events); it stops writing after
``WRITE_BUDGET_SECONDS`` (well inside the 60 s sensor timeout) and leaves the days it did not
write in the cursor's ``todo`` for the next tick.

Only tasks finished at least ``settle`` ago are read: a processor transaction that commits
late with an older ``completed_at`` would otherwise slip behind the cursor.
"""

import bisect
import datetime as dt
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import dagster as dg
import pandas as pd
import psycopg2.extensions

from finpipe_core.calendar import get_calendar, trading_days
from finpipe_core.settings import Settings
from finpipe_dagster.constants import STOCK_INDICATORS, STOCK_PRICES
from finpipe_dagster.partitions import partition_key
from finpipe_dagster.resources import PostgresResource
from finpipe_manager.outbox import FINISHED_STATUSES, DateRange, merge_ranges

CURSOR_VERSION: Final = 1
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Days reported per tick (two events each): a 10,000-day backfill in one tick.
MAX_DATES_PER_TICK: Final = 10_000
# Newly finished tasks read per tick (a 10,000-day backfill of 500 symbols is 20,000 tasks).
MAX_TASKS_PER_TICK: Final = 50_000
# Asset events per write to the event log (an even number: whole days).
EVENT_BATCH: Final = 2_000
EVENTS_PER_DAY: Final = 2  # stock_prices and stock_indicators
# A tick stops writing batches after this long; the rest waits for the next tick.
WRITE_BUDGET_SECONDS: Final = 30.0
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
    def from_json(cls, text: str | None) -> "CompletionCursor":
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


def _clip_after(ranges: Sequence[DateRange], day: dt.date) -> list[DateRange]:
    nxt = day + dt.timedelta(days=1)
    return [(max(lo, nxt), hi) for lo, hi in ranges if hi >= nxt]


def _bounded_todo(ranges: list[DateRange]) -> tuple[DateRange, ...]:
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
    """The days newly finished by every active symbol since ``cursor`` (Dagster-free core)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT now() - %s", (settle,))
        cutoff = cur.fetchone()[0]
        cur.execute(
            "SELECT task_id, start_date, end_date, completed_at FROM tasks "
            "WHERE status = ANY(%(finished)s) AND completed_at IS NOT NULL "
            "AND completed_at <= %(cutoff)s AND (completed_at, task_id) > (%(ts)s, %(tid)s) "
            "ORDER BY completed_at, task_id LIMIT %(limit)s",
            {
                "finished": list(FINISHED_STATUSES),
                "cutoff": cutoff,
                "ts": cursor.completed_at,
                "tid": cursor.task_id,
                "limit": max_tasks,
            },
        )
        tasks = cur.fetchall()
        after = (tasks[-1][3], tasks[-1][0]) if tasks else (cursor.completed_at, cursor.task_id)
        candidates = merge_ranges([*cursor.todo, *((t[1], t[2]) for t in tasks)])
        if first_date is not None:
            candidates = [(max(lo, first_date), hi) for lo, hi in candidates if hi >= first_date]
        done = CompletionTick([], CompletionCursor(*after, ()), len(tasks), candidates)
        if not candidates:
            return done
        lo, hi = candidates[0][0], candidates[-1][1]
        cur.execute("SELECT symbol FROM symbols WHERE active")
        active = [row[0] for row in cur.fetchall()]
        if not active:
            return done
        cur.execute(
            "SELECT t.symbol, t.start_date, t.end_date, t.completed_at FROM tasks t "
            "JOIN symbols s ON s.symbol = t.symbol AND s.active "
            "WHERE t.status = ANY(%s) AND (t.completed_at, t.task_id) <= (%s, %s) "
            "AND t.end_date >= %s AND t.start_date <= %s",
            (list(FINISHED_STATUSES), *after, lo, hi),
        )
        finished: dict[str, list[tuple[dt.date, dt.date, dt.datetime]]] = defaultdict(list)
        for symbol, start, end, completed_at in cur.fetchall():
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
        todo = _bounded_todo(_clip_after(candidates, report[-1])) if len(days) > max_dates else ()
        finished_at = _finished_at(report, finished)
        prices = _rows_per_day(cur, "prices", report)
        indicators = _rows_per_day(cur, "indicators", report)
    cal = get_calendar()
    result = [
        CompletedDay(
            day=d,
            symbols=len(active),
            prices_rows=prices.get(d, 0),
            indicators_rows=indicators.get(d, 0),
            completed_at=finished_at[d],
            lag_seconds=(
                finished_at[d] - cal.session_close(pd.Timestamp(d)).to_pydatetime()
            ).total_seconds(),
        )
        for d in report
    ]
    return CompletionTick(result, CompletionCursor(*after, todo), len(tasks), candidates)


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


def completion_events(
    days: Sequence[CompletedDay],
) -> list[dg.AssetMaterialization]:
    """One stock_prices and one stock_indicators materialisation per finished day."""
    events: list[dg.AssetMaterialization] = []
    for d in days:
        common = {
            "symbols": dg.MetadataValue.int(d.symbols),
            "completed_at": dg.MetadataValue.timestamp(d.completed_at),
            "lag_seconds": dg.MetadataValue.float(round(d.lag_seconds, 3)),
        }
        for key, rows in ((STOCK_PRICES, d.prices_rows), (STOCK_INDICATORS, d.indicators_rows)):
            events.append(
                dg.AssetMaterialization(
                    asset_key=key,
                    partition=partition_key(d.day),
                    metadata={**common, "rows": dg.MetadataValue.int(rows)},
                )
            )
    return events


def report_in_batches(
    instance: dg.DagsterInstance,
    events: Sequence[dg.AssetMaterialization],
    batch_size: int = EVENT_BATCH,
    budget_seconds: float | None = None,
) -> int:
    """Record runless materialisations as ``DagsterInstance.report_runless_asset_event`` does,
    but handed to the event log ``batch_size`` at a time (``store_event_batch``: one insert per
    batch, where the public call costs two new connections per event).

    :param budget_seconds: start no new batch after this long (the first is always written).
    :return: how many of ``events`` (a prefix) were written.
    """
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

    now = time.time()
    entries = [
        EventLogEntry(
            user_message="",
            level=logging.INFO,
            job_name=RUNLESS_JOB_NAME,
            run_id=RUNLESS_RUN_ID,
            error_info=None,
            timestamp=now,
            step_key=None,
            dagster_event=DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                job_name=RUNLESS_JOB_NAME,
                event_specific_data=StepMaterializationData(event),
            ),
        )
        for event in events
    ]
    started = time.monotonic()
    written = 0
    while written < len(entries):
        if written and budget_seconds is not None and time.monotonic() - started > budget_seconds:
            break
        batch = entries[written : written + batch_size]
        instance.event_log_storage.store_event_batch(batch)
        written += len(batch)
    return written


def build_completion_sensor(
    *,
    name: str = "stock_completion_sensor",
    max_dates: int = MAX_DATES_PER_TICK,
    max_tasks: int = MAX_TASKS_PER_TICK,
    settle_seconds: float = SETTLE_SECONDS,
    first_date: dt.date | None = None,
    minimum_interval_seconds: int = 30,
    write_budget: float = WRITE_BUDGET_SECONDS,
    event_batch: int = EVENT_BATCH,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The completion sensor (see the module docstring).

    :param first_date: ignore days before it; the partitions' start date by default.
    """
    start = first_date or dt.date.fromisoformat(Settings().partitions_start)

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Reports stock_prices/stock_indicators days that every symbol finished.",
    )
    def completion_sensor(
        context: dg.SensorEvaluationContext, postgres: PostgresResource
    ) -> dg.SensorResult:
        cursor = CompletionCursor.from_json(context.cursor)
        with postgres.connection() as conn:
            tick = evaluate_completion(
                conn,
                cursor,
                max_dates=max_dates,
                max_tasks=max_tasks,
                settle=dt.timedelta(seconds=settle_seconds),
                first_date=start,
            )
        if not tick.days:
            return dg.SensorResult(
                cursor=tick.cursor.to_json(),
                skip_reason=dg.SkipReason(
                    f"no newly finished day ({tick.tasks_read} finished tasks read)"
                ),
            )
        events = completion_events(tick.days)
        written = report_in_batches(
            context.instance, events, batch_size=event_batch, budget_seconds=write_budget
        )
        days = tick.days[: written // EVENTS_PER_DAY]
        cursor = tick.cursor
        if len(days) < len(tick.days):
            cursor = replace(cursor, todo=_bounded_todo(_clip_after(tick.candidates, days[-1].day)))
        context.log.info(
            f"finished days: {len(days)} ({days[0].day}..{days[-1].day}) of {len(tick.days)}"
        )
        # The events are stored before the cursor moves: a tick failing in between reports
        # its days again (a repeated materialisation), never loses them.
        return dg.SensorResult(cursor=cursor.to_json())

    return completion_sensor
