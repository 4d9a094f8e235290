"""Daily partitions on trading days: one partition per NYSE session.

A ``DailyPartitionsDefinition`` with ``exclusions``: a cron string drops every Saturday and
Sunday, and each weekday that is not a session (holidays and unscheduled closures such as
2001-09-11 or Hurricane Sandy, from exchange-calendars) is excluded by its date. Partitions
are dated in the exchange's timezone; ``end_offset=1`` makes the current (or next) session's
partition exist during its day, so the after-close schedule can ask for it.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import dagster as dg

from workers.calendar import EXCHANGE, EXCHANGE_TIMEZONE, get_calendar, trading_days
from workers.settings import Settings

PARTITION_FORMAT: Final = "%Y-%m-%d"
WEEKEND_CRON: Final = "0 0 * * 6,0"


def non_session_weekdays(start: dt.date, exchange: str = EXCHANGE) -> list[dt.date]:
    """Weekdays from ``start`` to the end of the calendar that are not sessions."""
    last = get_calendar(exchange).last_session.date()
    sessions = set(trading_days(start, last, exchange))
    days = (start + dt.timedelta(days=i) for i in range((last - start).days + 1))
    return [d for d in days if d.weekday() < 5 and d not in sessions]


def build_trading_day_partitions(
    start: dt.date | str | None = None, exchange: str = EXCHANGE
) -> dg.DailyPartitionsDefinition:
    """Daily partitions on ``exchange`` sessions from ``start`` (default: settings).

    :param start: first partition; settings.partitions_start (FINPIPE_PARTITIONS_START) if None.
    """
    if start is None:
        start = Settings().partitions_start
    if isinstance(start, str):
        try:
            start = dt.date.fromisoformat(start)
        except ValueError as exc:
            raise ValueError(f"partitions start {start!r} is not an ISO date") from exc
    holidays = [dt.datetime(d.year, d.month, d.day) for d in non_session_weekdays(start, exchange)]
    return dg.DailyPartitionsDefinition(
        start_date=start.strftime(PARTITION_FORMAT),
        timezone=EXCHANGE_TIMEZONE,
        fmt=PARTITION_FORMAT,
        end_offset=1,
        exclusions=[WEEKEND_CRON, *holidays],
    )


def partition_key(day: dt.date) -> str:
    """The partition key of a session."""
    return day.strftime(PARTITION_FORMAT)


def partition_date(key: str) -> dt.date:
    """The session of a partition key."""
    return dt.datetime.strptime(key, PARTITION_FORMAT).date()


def window_dates(window: dg.TimeWindow) -> tuple[dt.date, dt.date]:
    """First and last day (inclusive) of a partition time window."""
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()


trading_day_partitions: Final = build_trading_day_partitions()
