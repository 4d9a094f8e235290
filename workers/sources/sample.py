"""Real daily prices offline: the stock sample shipped by the ``bokeh_sampledata`` package.

AAPL, IBM and MSFT (2000-03-01 .. 2013-03-01), GOOG (from 2004) and FB (2012-2013); BSD
licensed, the prices are public domain. The file holds raw OHLC and volume plus an adjusted
close; split ex-dates are where the ratio adjusted/raw jumps by a whole ratio (AAPL 2:1 in
2000 and 2005, MSFT 2:1 in 2003).
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
from functools import lru_cache

import numpy as np
import pandas as pd

from workers.sources.base import NoDataError, RawBars

SAMPLE_SYMBOLS = ("AAPL", "IBM", "MSFT", "GOOG", "FB")
# A jump in adj_close/close this large between two days is a split, not a dividend.
_SPLIT_JUMP = 1.4


@lru_cache(maxsize=1)
def _load() -> dict[str, RawBars]:
    path = importlib.resources.files("bokeh_sampledata") / "_data" / "stocks.csv.gz"
    with importlib.resources.as_file(path) as file:
        frame = pd.read_csv(file, parse_dates=["Date"])
    out = {}
    for symbol, rows in frame.sort_values(["Ticker", "Date"]).groupby("Ticker"):
        close = rows["Close"].to_numpy(float)
        adj = rows["Adj Close"].to_numpy(float)
        factor = adj / close  # rises by the split ratio on an ex-date (raw close drops)
        splits = np.zeros(len(rows))
        jump = factor[1:] / factor[:-1]
        for i in np.flatnonzero((jump > _SPLIT_JUMP) | (jump < 1 / _SPLIT_JUMP)):
            splits[i + 1] = round(float(jump[i]) * 2) / 2  # 2.0, 1.5, 3.0 ...
        # The sample records no dividends; adj_close carries them implicitly.
        out[str(symbol)] = RawBars(
            symbol=str(symbol),
            dates=[d.date() for d in rows["Date"]],
            open=rows["Open"].to_numpy(float),
            high=rows["High"].to_numpy(float),
            low=rows["Low"].to_numpy(float),
            close=close,
            adj_close=adj,
            volume=rows["Volume"].to_numpy(float),
            dividends=np.zeros(len(rows)),
            splits=splits,
            source="sample",
        )
    return out


class SampleSource:
    """The offline sample: real prices, no network."""

    name = "sample"

    def fetch(self, symbol: str, start: dt.date, end: dt.date) -> RawBars:
        bars = _load().get(symbol)
        if bars is None:
            known = ", ".join(SAMPLE_SYMBOLS)
            raise NoDataError(f"{symbol} is not in the offline sample ({known})")
        return bars.between(start, end)
