"""Daily partitions on trading days: one partition per NYSE session, existing from its close.

A ``TimeWindowPartitionsDefinition`` whose windows start at 16:00 New York time on each
weekday (``0 16 * * 1-5``): partition ``D`` is the window from D's close to the next weekday's
close, keyed by D (``%Y-%m-%d``). With ``end_offset=1`` the partition of a session appears when
the window before it ends, i.e. at that session's close, so neither the after-close schedule nor
a range backfill ever sees a session that is still trading (or, over a weekend, the next one).
Weekdays that are not sessions (holidays and closures such as 2001-09-11) are excluded by date.

The definition depends only on settings: partitions start at ``FINPIPE_PARTITIONS_START`` and
stop at the calendar's fixed end (``FINPIPE_CALENDAR_END``), and the exclusions are the
holidays between them, so its identity does not change from one day to the next.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import dagster as dg

from finpipe_core.calendar import (
    EXCHANGE,
    EXCHANGE_TIMEZONE,
    CalendarRangeError,
    calendar_range,
    require_covered,
    trading_days,
)
from finpipe_core.settings import Settings

PARTITION_FORMAT: Final = "%Y-%m-%d"
# Each weekday at the regular close (16:00 New York): a partition's window starts at its close.
SESSION_CLOSE_CRON: Final = "0 16 * * 1-5"
CLOSE_HOUR: Final = 16


def non_session_weekdays(start: dt.date, end: dt.date, exchange: str = EXCHANGE) -> list[dt.date]:
    """Weekdays from ``start`` to ``end`` (inclusive) that are not sessions."""
    sessions = set(trading_days(start, end, exchange))
    days = (start + dt.timedelta(days=i) for i in range((end - start).days + 1))
    return [d for d in days if d.weekday() < 5 and d not in sessions]


def first_partition_date(start: dt.date | str | None = None) -> dt.date:
    """``start`` as a date; FINPIPE_PARTITIONS_START if None."""
    if start is None:
        start = Settings().partitions_start
    if isinstance(start, str):
        try:
            return dt.date.fromisoformat(start)
        except ValueError as exc:
            raise ValueError(f"partitions start {start!r} is not an ISO date") from exc
    return start


def build_trading_day_partitions(
    start: dt.date | str | None = None, exchange: str = EXCHANGE
) -> dg.TimeWindowPartitionsDefinition:
    """Daily partitions on ``exchange`` sessions from ``start`` to the calendar's end.

    :param start: first partition; settings.partitions_start (FINPIPE_PARTITIONS_START) if None.
    :raises CalendarRangeError: ``start`` is outside the trading calendar (no silent clamp).
    """
    first = first_partition_date(start)
    try:
        require_covered(first, exchange)
    except CalendarRangeError as exc:
        raise CalendarRangeError(f"partitions start: {exc}") from exc
    _, last = calendar_range()
    holidays = [
        dt.datetime(d.year, d.month, d.day, CLOSE_HOUR)
        for d in non_session_weekdays(first, last, exchange)
    ]
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=SESSION_CLOSE_CRON,
        start=dt.datetime(first.year, first.month, first.day, CLOSE_HOUR),
        end=dt.datetime(last.year, last.month, last.day, CLOSE_HOUR) + dt.timedelta(days=1),
        timezone=EXCHANGE_TIMEZONE,
        fmt=PARTITION_FORMAT,
        end_offset=1,
        exclusions=holidays,
    )


def partition_key(day: dt.date) -> str:
    """The partition key of a session."""
    return day.strftime(PARTITION_FORMAT)


def partition_date(key: str) -> dt.date:
    """The session of a partition key."""
    return dt.datetime.strptime(key, PARTITION_FORMAT).date()


def key_range_dates(key_range: dg.PartitionKeyRange) -> tuple[dt.date, dt.date]:
    """First and last session (inclusive) of a partition key range."""
    return partition_date(key_range.start), partition_date(key_range.end)


trading_day_partitions: Final = build_trading_day_partitions()
