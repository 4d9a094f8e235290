"""What the asset checks and the stuck-task sensor look at, without Dagster.

Indicator rows against the trading calendar and their value rules, and the health of the work
behind the prices (failed tasks, parked symbols, tasks stuck after repeated publishes). Each
query runs over the whole table in one statement; results list a few examples, not every row.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg2.extensions
from psycopg2 import sql

from finpipe_core import tasks
from finpipe_core.calendar import trading_days

# Examples listed in a result.
EXAMPLES: Final = 10
RSI_COLUMNS: Final = ("rsi_14",)
# Publishes after which a still-open task is reported rather than sent again.
MAX_PUBLISH_ATTEMPTS: Final = 5
_COLUMN_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _table_columns(cur: Any, table: str) -> set[str]:
    cur.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    )
    return {row[0] for row in cur.fetchall()}


def find_calendar_gaps(conn: psycopg2.extensions.connection) -> dict[str, Any]:
    """Per symbol, sessions missing between its first and last indicator date, and stored
    dates that are not sessions."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT symbol, min(date), max(date), count(*) FROM indicators GROUP BY symbol "
            "ORDER BY symbol"
        )
        spans = cur.fetchall()
        if not spans:
            return {"symbols": 0, "bad": {}}
        sessions = trading_days(min(s[1] for s in spans), max(s[2] for s in spans))
        is_session = set(sessions)

        def expected(first: dt.date, last: dt.date) -> list[dt.date]:
            lo, hi = bisect.bisect_left(sessions, first), bisect.bisect_right(sessions, last)
            return sessions[lo:hi]

        # Cheap test first: a symbol is clean if its row count equals the sessions between its
        # first and last date, both ends being sessions (the PK rules out duplicates).
        suspects = [
            symbol
            for symbol, first, last, rows in spans
            if rows != len(expected(first, last))
            or first not in is_session
            or last not in is_session
        ]
        bad: dict[str, dict[str, Any]] = {}
        if suspects:
            cur.execute(
                "SELECT symbol, array_agg(date ORDER BY date) FROM indicators "
                "WHERE symbol = ANY(%s) GROUP BY symbol ORDER BY symbol",
                (suspects,),
            )
            for symbol, dates in cur.fetchall():
                stored = set(dates)
                missing = [d for d in expected(dates[0], dates[-1]) if d not in stored]
                extra = sorted(d for d in stored if d not in is_session)
                if missing or extra:
                    bad[symbol] = {
                        "missing": len(missing),
                        "first_missing": [d.isoformat() for d in missing[:EXAMPLES]],
                        "not_sessions": [d.isoformat() for d in extra[:EXAMPLES]],
                    }
    return {"symbols": len(spans), "bad": bad}


def find_rsi_out_of_range(conn: psycopg2.extensions.connection) -> dict[str, Any]:
    """Rows whose RSI is outside [0, 100] (NaN and NULL are the warm-up check's business)."""
    with conn, conn.cursor() as cur:
        columns = [c for c in RSI_COLUMNS if c in _table_columns(cur, "indicators")]
        bad: dict[str, int] = {}
        examples: list[str] = []
        for column in columns:
            col = sql.Identifier(column)
            cur.execute(
                sql.SQL(
                    "SELECT symbol, date, {col} FROM indicators WHERE {col} <> 'NaN' "
                    "AND ({col} < 0 OR {col} > 100) ORDER BY symbol, date"
                ).format(col=col)
            )
            rows = cur.fetchall()
            if rows:
                bad[column] = len(rows)
                examples += [f"{s} {d} {column}={v}" for s, d, v in rows[:EXAMPLES]]
    return {"columns": columns, "bad": bad, "examples": examples}


def find_nan_after_warmup(
    conn: psycopg2.extensions.connection, lookback: dict[str, int]
) -> dict[str, Any]:
    """Per column, rows at or after the column's warm-up (its lookback, counted in rows from
    each symbol's first indicator row) whose value is NULL or NaN."""
    with conn, conn.cursor() as cur:
        present = _table_columns(cur, "indicators")
        columns = {c: n for c, n in lookback.items() if c in present and _COLUMN_RE.match(c)}
        missing_columns = sorted(set(lookback) - present)
        if not columns:
            return {"bad": {}, "examples": [], "missing_columns": missing_columns}
        counts = sql.SQL(", ").join(
            sql.SQL("count(*) FILTER (WHERE idx >= {n} AND ({c} IS NULL OR {c} = 'NaN'))").format(
                n=sql.Literal(n), c=sql.Identifier(c)
            )
            for c, n in columns.items()
        )
        cur.execute(
            sql.SQL(
                "SELECT symbol, {counts} FROM (SELECT *, row_number() OVER "
                "(PARTITION BY symbol ORDER BY date) - 1 AS idx FROM indicators) AS t "
                "GROUP BY symbol ORDER BY symbol"
            ).format(counts=counts)
        )
        bad: dict[str, int] = {}
        examples: list[str] = []
        for symbol, *values in cur.fetchall():
            for column, value in zip(columns, values, strict=True):
                if value:
                    bad[column] = bad.get(column, 0) + value
                    if len(examples) < EXAMPLES:
                        examples.append(f"{symbol} {column}: {value} rows")
    return {"bad": bad, "examples": examples, "missing_columns": missing_columns}


@dataclass(frozen=True, slots=True)
class PipelineHealth:
    """Failed tasks, parked or failed symbols, and tasks stuck past their last publish."""

    failed_tasks: int = 0
    failed_examples: list[dict[str, str]] = field(default_factory=list)
    unhealthy_symbols: list[dict[str, str]] = field(default_factory=list)
    stuck_tasks: int = 0
    stuck_examples: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.failed_tasks or self.unhealthy_symbols or self.stuck_tasks)

    def summary(self) -> dict[str, Any]:
        """What a report shows: counts and a few examples of each."""
        return {
            "failed_tasks": self.failed_tasks,
            "failed_examples": self.failed_examples,
            "unhealthy_symbols": len(self.unhealthy_symbols),
            "symbols": self.unhealthy_symbols[:50],
            "stuck_tasks": self.stuck_tasks,
            "stuck_examples": self.stuck_examples,
        }

    def fingerprint(self) -> str:
        """Changes whenever what the check would report changes."""
        parts = [
            str(self.failed_tasks),
            *(e["task_id"] for e in self.failed_examples),
            *(f"{s['symbol']}={s['status']}" for s in self.unhealthy_symbols),
            str(self.stuck_tasks),
        ]
        return "|".join(parts)


def pipeline_health(
    conn: psycopg2.extensions.connection,
    *,
    timeout: dt.timedelta,
    max_attempts: int = MAX_PUBLISH_ATTEMPTS,
) -> PipelineHealth:
    """Failed tasks not since superseded by a finished task of the same range, symbols whose
    state is parked or failed, and open tasks past ``timeout`` published ``max_attempts``
    times already."""
    with conn, conn.cursor() as cur:
        failed = tasks.unresolved_failures(cur)
        cur.execute(
            "SELECT s.symbol, s.status, coalesce(s.error, '') FROM symbol_state s "
            "JOIN symbols y ON y.symbol = s.symbol AND y.active "
            "WHERE s.status <> 'ok' ORDER BY s.symbol"
        )
        unhealthy = cur.fetchall()
        stuck = tasks.stuck(cur, max_attempts=max_attempts, timeout=timeout)
    return PipelineHealth(
        failed_tasks=len(failed),
        failed_examples=[
            {"task_id": t, "symbol": s, "range": f"{a}..{b}", "error": e[:200]}
            for t, s, a, b, e in failed[:EXAMPLES]
        ],
        unhealthy_symbols=[{"symbol": s, "status": st, "error": e[:200]} for s, st, e in unhealthy],
        stuck_tasks=len(stuck),
        stuck_examples=stuck[:EXAMPLES],
    )
