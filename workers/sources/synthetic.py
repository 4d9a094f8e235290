"""Deterministic synthetic bars for any symbol: for scale tests and benchmarks.

Each symbol gets its own seeded random walk over the trading calendar from ``ORIGIN``; a bar
depends only on the bars before it, so the bars of a date never depend on the range asked
for. Occasional splits (the raw price drops by the ratio on the ex-date) and quarterly
dividends make the data as awkward as real data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from bisect import bisect_right
from functools import lru_cache

import numpy as np

from finpipe_core.calendar import trading_days
from workers.sources.base import NoDataError, RawBars

ORIGIN = dt.date(1995, 1, 3)
HORIZON = dt.date(2030, 12, 31)
# About one split per symbol every 20 years of sessions, as for large US stocks.
SPLIT_PROBABILITY = 1 / 5000


@lru_cache(maxsize=1)
def _sessions() -> list[dt.date]:
    return trading_days(ORIGIN, HORIZON)


def _seed(symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "little")


@lru_cache(maxsize=256)
def _series(symbol: str, n: int) -> RawBars:
    """The first ``n`` sessions of ``symbol``.

    Every random quantity has its own stream (spawned from the symbol's seed), and every
    value depends only on earlier sessions, so the first k bars are the same whatever ``n``
    is: generating up to the requested end is enough.
    """
    days = _sessions()[:n]
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(_seed(symbol)).spawn(8)]
    base = streams[0].uniform(20, 300)
    returns = streams[1].normal(0.0003, 0.018, n)
    splits = np.where(streams[2].random(n) < SPLIT_PROBABILITY,
                      streams[3].choice([2.0, 3.0, 1.5], n), 0.0)
    if n:
        splits[0] = 0.0
    # The continuous (split-adjusted) walk; the raw price drops by the ratio on an ex-date.
    adjusted = base * np.exp(np.cumsum(returns))
    shares = np.cumprod(np.where(splits > 0, splits, 1.0))
    close = np.round(adjusted / shares, 4)
    open_ = np.round(close * (1 + streams[4].normal(0, 0.005, n)), 4)
    high = np.round(np.maximum(open_, close) * (1 + np.abs(streams[5].normal(0, 0.01, n))), 4)
    low = np.round(np.minimum(open_, close) * (1 - np.abs(streams[6].normal(0, 0.01, n))), 4)
    volume = np.round(streams[7].lognormal(13, 0.5, n) * shares)
    quarter_ends = np.zeros(n, dtype=bool)
    quarter_ends[63::63] = True
    dividends = np.where(quarter_ends, np.round(close * 0.004, 4), 0.0)
    return RawBars(symbol, days, open_, high, low, close, np.round(adjusted, 4), volume,
                   dividends, splits, source="synthetic")


class SyntheticSource:
    """Any symbol, any range on the trading calendar between ORIGIN and HORIZON."""

    name = "synthetic"

    def fetch(self, symbol: str, start: dt.date, end: dt.date) -> RawBars:
        if end < ORIGIN or start > HORIZON:
            raise NoDataError(f"synthetic data covers {ORIGIN}..{HORIZON}, not {start}..{end}")
        return _series(symbol, bisect_right(_sessions(), end)).between(start, end)
