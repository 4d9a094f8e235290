"""The revision log: what changed in a stored bar, written in the batch transaction.

Sources revise bars after the fact (Yahoo's volumes days later, late or missed splits, a bar
that was missing). The processor already compares a message's bars with the stored ones to
choose between skipping, updating in place and rewriting a symbol's history; this module turns
that comparison into rows of ``revisions`` so every change can be audited later
(``finpipe revisions``), with the columns that changed, their old and new values, and the task
that brought them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg2.extras


@dataclass(frozen=True, slots=True)
class BarRevision:
    """One stored bar that a message changes (``old`` is None for a bar new inside history)."""

    position: int  # index of the bar in the message
    date: dt.date
    columns: tuple[str, ...]
    old: dict[str, float] | None
    new: dict[str, float]

    def touches(self, columns: Sequence[str]) -> bool:
        """Whether the bar is new, or one of ``columns`` changed."""
        return self.old is None or any(c in self.columns for c in columns)


def diff_stored(
    stored: Mapping[dt.date, Mapping[str, Any]],
    dates: Sequence[dt.date],
    raw: Mapping[str, np.ndarray],
    last_date: dt.date,
    columns: Sequence[str],
) -> list[BarRevision]:
    """The message's bars up to ``last_date`` that differ from ``stored`` (by date), column by
    column; bars after ``last_date`` are appends, not revisions."""
    revisions = []
    for i, day in enumerate(dates):
        if day > last_date:
            continue
        new = {c: float(raw[c][i]) for c in columns}
        old_row = stored.get(day)
        if old_row is None:
            revisions.append(BarRevision(i, day, tuple(columns), None, new))
            continue
        old = {c: float(old_row[c]) for c in columns}
        changed = tuple(c for c in columns if old[c] != new[c])
        if changed:
            revisions.append(
                BarRevision(
                    i, day, changed, {c: old[c] for c in changed}, {c: new[c] for c in changed}
                )
            )
    return revisions


def record_revisions(
    cur: Any,
    symbol: str,
    task_id: str | None,
    revisions: Sequence[BarRevision],
    rewrote_history: bool,
) -> None:
    """Insert ``revisions`` into the log (in the caller's transaction)."""
    if not revisions:
        return
    psycopg2.extras.execute_values(
        cur,
        "INSERT INTO revisions (symbol, date, kind, columns, old_values, new_values, "
        "rewrote_history, task_id) VALUES %s",
        [
            (
                symbol,
                r.date,
                "inserted" if r.old is None else "revised",
                list(r.columns),
                None if r.old is None else json.dumps(r.old),
                json.dumps(r.new),
                rewrote_history,
                task_id,
            )
            for r in revisions
        ],
        template="(%s, %s, %s, %s::text[], %s::jsonb, %s::jsonb, %s, %s)",
    )
