"""The trading calendar (NYSE sessions by default), from exchange-calendars.

Shared by the Dagster partitions (one partition per session), the synthetic source (bars on
sessions only) and the asset checks (gaps are missing sessions). Its range comes from settings
(``FINPIPE_CALENDAR_START``/``FINPIPE_CALENDAR_END``): a fixed end, rather than
exchange-calendars' default of "a year from today", makes the calendar (and so the partitions
definition built from it) the same on every day it is loaded.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd

from finpipe_core.settings import get_settings

EXCHANGE = "XNYS"
EXCHANGE_TIMEZONE = "America/New_York"


class CalendarRangeError(ValueError):
    """A date the trading calendar does not cover."""


def calendar_range() -> tuple[dt.date, dt.date]:
    """First and last day of the trading calendar, from the process-wide settings."""
    settings = get_settings()
    try:
        first = dt.date.fromisoformat(settings.calendar_start)
        last = dt.date.fromisoformat(settings.calendar_end)
    except ValueError as exc:
        raise CalendarRangeError(f"FINPIPE_CALENDAR_START/END must be ISO dates: {exc}") from exc
    if first > last:
        raise CalendarRangeError(f"calendar start {first} is after calendar end {last}")
    return first, last


@lru_cache(maxsize=8)
def _calendar(exchange: str, first: dt.date, last: dt.date) -> xcals.ExchangeCalendar:
    try:
        return xcals.get_calendar(exchange, start=first.isoformat(), end=last.isoformat())
    except ValueError as exc:
        raise CalendarRangeError(
            f"exchange-calendars cannot serve {exchange} from {first} to {last}: {exc}"
        ) from exc


def get_calendar(exchange: str = EXCHANGE) -> xcals.ExchangeCalendar:
    """The calendar of ``exchange`` over the settings' range (built once per range)."""
    return _calendar(exchange, *calendar_range())


def trading_days(start: dt.date, end: dt.date, exchange: str = EXCHANGE) -> list[dt.date]:
    """Sessions from ``start`` to ``end`` inclusive (empty if none), within the calendar."""
    if start > end:
        return []
    cal = get_calendar(exchange)
    first, last = cal.first_session.date(), cal.last_session.date()
    lo, hi = max(start, first), min(end, last)
    if lo > hi:
        return []
    return [ts.date() for ts in cal.sessions_in_range(pd.Timestamp(lo), pd.Timestamp(hi))]


def require_covered(start: dt.date, exchange: str = EXCHANGE) -> None:
    """Raise ``CalendarRangeError`` unless the calendar covers ``start`` (never clamp)."""
    first, last = calendar_range()
    if not first <= start <= last:
        raise CalendarRangeError(
            f"{start} is outside the trading calendar ({first} .. {last}); set "
            "FINPIPE_CALENDAR_START/FINPIPE_CALENDAR_END to cover it"
        )


def is_trading_day(day: dt.date, exchange: str = EXCHANGE) -> bool:
    return get_calendar(exchange).is_session(pd.Timestamp(day))


def last_completed_session(now: dt.datetime, exchange: str = EXCHANGE) -> dt.date:
    """The latest session whose market close is at or before ``now`` (timezone-aware)."""
    cal = get_calendar(exchange)
    ts = pd.Timestamp(now)
    if ts.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    minute = ts.tz_convert("UTC").floor("min")
    session = (
        cal.minute_to_past_session(minute)
        if not cal.is_trading_minute(minute)
        else (cal.previous_session(cal.minute_to_session(minute)))
    )
    # minute_to_past_session returns the session that closed before `minute`.
    return session.date()
