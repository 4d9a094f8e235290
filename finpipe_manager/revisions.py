"""Reading the revision log (``revisions``, written by the processors): what `finpipe
revisions` lists and what the completion sensor counts per day. Dagster-free."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2.extensions


@dataclass(frozen=True, slots=True)
class Revision:
    """One change to a stored bar, as logged."""

    symbol: str
    date: dt.date
    kind: str  # 'revised' or 'inserted'
    columns: list[str]
    old_values: dict[str, float] | None
    new_values: dict[str, float]
    rewrote_history: bool
    task_id: str | None
    seen_at: dt.datetime

    def describe(self) -> str:
        """``volume 1000 -> 1200, close 10 -> 10.5`` (or the new bar's values)."""
        if self.old_values is None:
            return "new bar: " + ", ".join(f"{c} {self.new_values[c]:,.10g}" for c in self.columns)
        return ", ".join(
            f"{c} {self.old_values[c]:,.10g} -> {self.new_values[c]:,.10g}" for c in self.columns
        )


def list_revisions(
    conn: psycopg2.extensions.connection, symbol: str | None = None, limit: int = 50
) -> list[Revision]:
    """The newest ``limit`` revisions (of ``symbol``, or of every symbol), newest first."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT symbol, date, kind, columns, old_values, new_values, rewrote_history, "
            "task_id, seen_at FROM revisions WHERE (%(symbol)s::text IS NULL OR symbol = "
            "%(symbol)s) ORDER BY seen_at DESC, id DESC LIMIT %(limit)s",
            {"symbol": symbol, "limit": limit},
        )
        rows = cur.fetchall()
    conn.rollback()
    return [Revision(*row) for row in rows]


def revisions_per_day(cur: Any, days: Sequence[dt.date]) -> dict[dt.date, int]:
    """How many logged revisions each of ``days`` has (an index lookup per day)."""
    cur.execute(
        "SELECT date, count(*) FROM revisions WHERE date = ANY(%s::date[]) GROUP BY date",
        (list(days),),
    )
    return dict(cur.fetchall())


def revisions_per_symbol(
    conn: psycopg2.extensions.connection, symbols: Sequence[str]
) -> dict[str, int]:
    """How many revisions each of ``symbols`` has logged (symbols without any are absent)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT symbol, count(*) FROM revisions WHERE symbol = ANY(%s) GROUP BY symbol",
            (list(symbols),),
        )
        counts = dict(cur.fetchall())
    conn.rollback()
    return counts
