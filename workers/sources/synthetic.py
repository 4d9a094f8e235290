"""Deterministic synthetic bars for any symbol: for scale tests and benchmarks.

Each symbol gets its own seeded random walk over the trading calendar from ``ORIGIN``, so the
bars of a date never depend on which range was asked for. Occasional splits (the raw price
drops by the ratio on the ex-date) and quarterly dividends make the data as awkward as real
data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from functools import lru_cache

import numpy as np

from workers.calendar import trading_days
from workers.sources.base import NoDataError, RawBars

ORIGIN = dt.date(1995, 1, 3)
HORIZON = dt.date(2030, 12, 31)
# About one split per symbol every 20 years of sessions, as for large US stocks.
SPLIT_PROBABILITY = 1 / 5000


@lru_cache(maxsize=1)
def _sessions() -> tuple[list[dt.date], np.ndarray]:
    days = trading_days(ORIGIN, HORIZON)
    return days, np.array(days, dtype="datetime64[D]")


def _seed(symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "little")


@lru_cache(maxsize=256)
def _series(symbol: str) -> RawBars:
    days, _ = _sessions()
    n = len(days)
    rng = np.random.default_rng(_seed(symbol))
    returns = rng.normal(0.0003, 0.018, n)
    splits = np.where(rng.random(n) < SPLIT_PROBABILITY, rng.choice([2.0, 3.0, 1.5], n), 0.0)
    splits[0] = 0.0
    # Adjusted close follows the walk; the raw close drops by the ratio at each split.
    adjusted = rng.uniform(20, 300) * np.exp(np.cumsum(returns))
    later_ratio = np.cumprod(np.where(splits > 0, splits, 1.0)[::-1])[::-1]
    basis = np.concatenate([later_ratio[1:], [1.0]])  # product of ratios of splits after bar i
    close = np.round(adjusted * basis, 4)
    spread = np.abs(rng.normal(0, 0.01, (3, n)))
    open_ = np.round(close * (1 + rng.normal(0, 0.005, n)), 4)
    high = np.round(np.maximum(open_, close) * (1 + spread[0]), 4)
    low = np.round(np.minimum(open_, close) * (1 - spread[1]), 4)
    volume = np.round(rng.lognormal(13, 0.5, n) / basis)
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
        return _series(symbol).between(start, end)
