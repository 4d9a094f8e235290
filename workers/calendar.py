"""The trading calendar (NYSE sessions by default), from exchange-calendars.

Shared by the Dagster partitions (one partition per session), the synthetic source (bars on
sessions only) and the asset checks (gaps are missing sessions).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd

EXCHANGE = "XNYS"
EXCHANGE_TIMEZONE = "America/New_York"
# exchange-calendars covers 20 years by default; the sample data starts in 2000.
CALENDAR_START = "1990-01-02"


@lru_cache(maxsize=4)
def get_calendar(exchange: str = EXCHANGE) -> xcals.ExchangeCalendar:
    return xcals.get_calendar(exchange, start=CALENDAR_START)


def trading_days(start: dt.date, end: dt.date, exchange: str = EXCHANGE) -> list[dt.date]:
    """Sessions from ``start`` to ``end`` inclusive (empty if none)."""
    if start > end:
        return []
    cal = get_calendar(exchange)
    first, last = cal.first_session.date(), cal.last_session.date()
    lo, hi = max(start, first), min(end, last)
    if lo > hi:
        return []
    return [ts.date() for ts in cal.sessions_in_range(pd.Timestamp(lo), pd.Timestamp(hi))]


def is_trading_day(day: dt.date, exchange: str = EXCHANGE) -> bool:
    return get_calendar(exchange).is_session(pd.Timestamp(day))


def last_completed_session(now: dt.datetime, exchange: str = EXCHANGE) -> dt.date:
    """The latest session whose market close is at or before ``now`` (timezone-aware)."""
    cal = get_calendar(exchange)
    ts = pd.Timestamp(now)
    if ts.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    minute = ts.tz_convert("UTC").floor("min")
    session = cal.minute_to_past_session(minute) if not cal.is_trading_minute(minute) else (
        cal.previous_session(cal.minute_to_session(minute))
    )
    # minute_to_past_session returns the session that closed before `minute`.
    return session.date()
