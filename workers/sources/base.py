"""What every bar source returns, and the errors that tell the agent what to do next."""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from finpipe_core.exceptions import FinpipeError, RetriableError

COLUMNS = ("open", "high", "low", "close", "adj_close", "volume", "dividends", "splits")


class NoDataError(FinpipeError):
    """The source knows nothing for this symbol and range (unknown or delisted symbol, a range
    before listing). A result, not a crash: the agent publishes a ``no_data`` message."""


class SourceError(FinpipeError):
    """The source failed in a way retrying will not fix; the agent publishes ``failed``."""


class SourceUnavailableError(RetriableError):
    """Network error, rate limit or server error: back off and try again."""


@dataclass(frozen=True)
class RawBars:
    """Daily bars of one symbol, ascending dates, raw (not split-adjusted) OHLC and volume.

    ``splits`` is the split ratio on its ex-date (0 = none), ``adj_close`` the source's
    split-and-dividend adjusted close. See ``finpipe_core.contracts.BarBatch``.
    """

    symbol: str
    dates: list[dt.date]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    adj_close: np.ndarray
    volume: np.ndarray
    dividends: np.ndarray
    splits: np.ndarray
    source: str = field(default="")

    def __len__(self) -> int:
        return len(self.dates)

    def between(self, start: dt.date, end: dt.date) -> RawBars:
        """The bars dated ``start`` .. ``end`` inclusive."""
        return self.slice(bisect_left(self.dates, start), bisect_right(self.dates, end))

    def slice(self, lo: int, hi: int) -> RawBars:
        return RawBars(
            self.symbol,
            self.dates[lo:hi],
            *(getattr(self, c)[lo:hi] for c in COLUMNS),
            source=self.source,
        )


class BarSource(Protocol):
    """A place daily bars come from (yfinance, the offline sample, CSV files, synthetic)."""

    name: str

    def fetch(self, symbol: str, start: dt.date, end: dt.date) -> RawBars:
        """Bars of ``symbol`` dated ``start`` .. ``end`` (inclusive), completed sessions only.

        :raises NoDataError: nothing there for this symbol and range.
        :raises SourceUnavailableError: transient; the agent retries with backoff.
        :raises SourceError: permanent failure with a reason.
        """
        ...
