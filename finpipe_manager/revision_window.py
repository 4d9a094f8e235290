"""The revision window: the daily run also re-requests the last few sessions as corrections.

Sources revise bars after the session (Yahoo's volumes a day or two later, a split applied
late). The outbox requests each range exactly once, so a revision would never be fetched; the
daily schedule therefore also enqueues, for every active symbol, a *correction* of the
``revision_window_sessions`` sessions before the session it requests.

A correction is a distinct, deliberate task, not a repeat of the original one:

- its id carries the variant ``revision-window:<session>`` (``outbox.build_task`` with
  ``force``), so it never collides with the backfill task of the same days, and the same
  day's schedule run twice enqueues it once (same id, ``ON CONFLICT``);
- it only covers days the symbol already requested (its requested range in ``symbol_state``),
  so it never stands in for a backfill: coverage of new days stays the outbox's
  exactly-once-per-range planning;
- an unchanged re-fetch costs the processor one comparison and no write of prices or
  indicators (bars equal to the stored ones are skipped); a changed bar is logged in
  ``revisions`` and rewrites what depends on it.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

import psycopg2.extensions

from finpipe_core.calendar import trading_days
from finpipe_core.contracts import FetchTask
from finpipe_manager.outbox import DEFAULT_MAX_SESSIONS, DateRange, enqueue_tasks

# Calendar days looked back to find N sessions (holidays and weekends included, generously).
_LOOKBACK_DAYS_PER_SESSION = 3


def correction_requester(session: dt.date) -> str:
    """``requested_by`` (and id variant) of the corrections enqueued with ``session``."""
    return f"revision-window:{session.isoformat()}"


def revision_window(session: dt.date, sessions: int) -> DateRange | None:
    """The ``sessions`` trading days before ``session`` (None when ``sessions`` is 0)."""
    if sessions <= 0:
        return None
    start = session - dt.timedelta(days=sessions * _LOOKBACK_DAYS_PER_SESSION + 10)
    before = [d for d in trading_days(start, session) if d < session][-sessions:]
    return (before[0], before[-1]) if before else None


def enqueue_corrections(
    conn: psycopg2.extensions.connection,
    symbols: Sequence[str],
    session: dt.date,
    *,
    window_sessions: int,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
) -> list[FetchTask]:
    """Store correction tasks of the revision window before ``session`` for ``symbols``
    (each clipped to the days the symbol already requested); return the tasks inserted."""
    window = revision_window(session, window_sessions)
    if window is None or not symbols:
        return []
    lo, hi = window
    with conn.cursor() as cur:
        cur.execute(
            "SELECT symbol, first_requested_date, last_requested_date FROM symbol_state "
            "WHERE symbol = ANY(%s) AND first_requested_date <= %s "
            "AND last_requested_date >= %s",
            (sorted(set(symbols)), hi, lo),
        )
        spans = cur.fetchall()
    conn.rollback()
    groups: dict[DateRange, list[str]] = defaultdict(list)
    for symbol, first, last in spans:
        groups[(max(lo, first), min(hi, last))].append(symbol)
    tasks: list[FetchTask] = []
    for (start, end), members in sorted(groups.items()):
        tasks += enqueue_tasks(
            conn,
            members,
            start,
            end,
            requested_by=correction_requester(session),
            force=True,
            max_sessions=max_sessions,
        )
    return tasks
