"""Daily bars from Yahoo Finance through yfinance, raw (not split-adjusted).

What yfinance gives and what this source does with it:

- ``Ticker.history(auto_adjust=False, actions=True)`` returns OHLC, volume and dividends
  *adjusted for every split Yahoo knows of*, including splits after the requested range, plus
  ``Adj Close`` (split and dividend adjusted) and the splits and dividends inside the range.
  Bars are put back on the share basis they traded on with ``raw_bars_from_adjusted`` (shared
  with the CSV source; module docstring of ``workers.sources.csv_source``): prices and
  dividends times, volume divided by, the product of the ratios of all splits after each bar
  (``finpipe_core.indicators.split_factors``).
- The splits after the range have to come from somewhere. When the range ends within
  ``recent_days`` of today, the request simply runs to tomorrow: the one answer then carries
  every split Yahoo has applied, and the extra bars are cut off. For an older range the
  request ends the day after the range and the symbol's full split history (with exact
  dates) comes from ``Ticker.get_splits()``: one extra request, cached per symbol for
  ``split_cache_ttl`` seconds and never across an exchange-date boundary, because Yahoo
  applies a new split on its ex-date. The one gap: a split Yahoo applies while a cached
  history is in use (on its ex-date, for at most ``split_cache_ttl``) is missed for older
  ranges fetched in that window. yfinance's in-process memo of past-range answers is emptied
  before each fetch, so an answer is never older than its split history.
- Only completed sessions: bars after ``last_completed_session(now)`` are dropped (today's
  bar while the market is open is not final).
- Errors are raised, not logged: ``yf.config.debug.hide_exceptions`` is set to False for the
  process (``history(raise_errors=True)`` does the same for one call but is deprecated in
  yfinance 1.x and warns in the caller's module, and it does not cover ``get_splits()`` or the
  timezone lookup, where a network error would otherwise turn into "no timezone found").
  Unknown or delisted symbols and empty ranges -> ``NoDataError``; HTTP 429, 5xx, 401/403,
  network errors and unreadable answers -> ``SourceUnavailableError``; anything else ->
  ``SourceError``. The HTTP status of the last answer is recorded by the session this module
  hands to yfinance, so an error document that came with a 5xx is not mistaken for "no data".
- yfinance's timezone, cookie and ISIN caches live in a per-process directory
  (``<tmp>/finpipe-yf-<pid>``, removed at exit) so read-only home directories and concurrent
  processes are no problem.
- Rate limiting and backoff are the agent's job (``workers.sources.ratelimit``): one fetch
  makes one request, two for an older range whose split history is not cached, plus one
  timezone lookup the first time a process sees a symbol.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import yfinance as yf
from pandas.errors import Pandas4Warning
from yfinance import _http as yf_http
from yfinance.data import YfData
from yfinance.exceptions import (
    YFDataException,
    YFRateLimitError,
    YFTickerMissingError,
)

from finpipe_core.calendar import EXCHANGE_TIMEZONE, last_completed_session
from finpipe_core.contracts import validate_symbol
from workers.sources.base import NoDataError, RawBars, SourceError, SourceUnavailableError
from workers.sources.csv_source import Clock, move_events_forward, raw_bars_from_adjusted, utc_now

logger = logging.getLogger(__name__)

# A range ending this close to today is fetched through tomorrow, so its answer has all splits.
DEFAULT_RECENT_DAYS = 10
# Split histories are re-read at least this often (and at every exchange-date change).
DEFAULT_SPLIT_CACHE_TTL_S = 3600.0
DEFAULT_SPLIT_CACHE_SIZE = 4096
# Per-request timeout handed to yfinance (its default of 10 s is short for long histories).
DEFAULT_TIMEOUT_S = 30.0
# HTTP answers that mean "try again later", not "this symbol has no data".
_RETRIABLE_STATUS = frozenset({401, 403, 408, 425, 429})
_NEW_YORK = ZoneInfo(EXCHANGE_TIMEZONE)


# --- process-wide yfinance setup ------------------------------------------------------------

_setup_lock = threading.Lock()
_setup_pid: int | None = None
_setup_dir = ""
_last_status = threading.local()


def install_warning_filters() -> None:
    """Silence the ``Pandas4Warning``s yfinance's own code triggers under pandas 3, nothing else.

    Only warnings attributed to yfinance's modules are ignored; the same warning from finpipe
    code still shows.
    """
    warnings.filterwarnings("ignore", category=Pandas4Warning, module=r"yfinance(\.|$)")


def _make_session_class() -> type:
    base: type = yf_http.requests.Session

    class RecordingSession(base):  # type: ignore[misc, valid-type]
        """yfinance's HTTP session, remembering each thread's last HTTP status."""

        def request(self, *args: Any, **kwargs: Any) -> Any:
            response = super().request(*args, **kwargs)
            _last_status.value = getattr(response, "status_code", None)
            return response

    return RecordingSession


RecordingSession = _make_session_class()
_session: Any = None


def _get_session() -> Any:
    global _session
    with _setup_lock:
        if _session is None:
            if yf_http.HAS_CURL_CFFI:
                _session = RecordingSession(impersonate="chrome")
            else:
                _session = RecordingSession()
                _session.headers.update(yf_http.new_session().headers)
        return _session


def last_http_status() -> int | None:
    """The HTTP status of this thread's last answer from Yahoo (None before any)."""
    return getattr(_last_status, "value", None)


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"finpipe-yf-{os.getpid()}")


def configure_yfinance(cache_dir: str | None = None) -> str:
    """Once per process: cache directory, raised errors, warning filters. Returns the dir.

    Must run before yfinance's caches are first used; a later call with another directory
    is ignored (yfinance keeps its cache databases open).
    """
    global _setup_pid, _setup_dir
    with _setup_lock:
        pid = os.getpid()
        if _setup_pid == pid:
            return _setup_dir
        path = cache_dir or default_cache_dir()
        os.makedirs(path, mode=0o700, exist_ok=True)
        yf.set_tz_cache_location(path)
        if cache_dir is None:
            atexit.register(_remove_dir, path, pid)
        yf.config.debug.hide_exceptions = False
        install_warning_filters()
        _setup_pid, _setup_dir = pid, path
        return path


def _remove_dir(path: str, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child
        shutil.rmtree(path, ignore_errors=True)


# --- split history cache -------------------------------------------------------------------


class _SplitCache:
    """Per symbol: its full split history, for a bounded time and within one exchange date."""

    def __init__(self, ttl: float, size: int, monotonic: Any = time.monotonic) -> None:
        self._ttl, self._size, self._monotonic = ttl, size, monotonic
        self._items: OrderedDict[str, tuple[float, dt.date, list[tuple[dt.date, float]]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, symbol: str, today: dt.date) -> list[tuple[dt.date, float]] | None:
        with self._lock:
            hit = self._items.get(symbol)
            if hit is None:
                return None
            stored_at, day, splits = hit
            if day != today or self._monotonic() - stored_at > self._ttl:
                del self._items[symbol]
                return None
            self._items.move_to_end(symbol)
            return splits

    def put(self, symbol: str, today: dt.date, splits: list[tuple[dt.date, float]]) -> None:
        with self._lock:
            self._items[symbol] = (self._monotonic(), today, splits)
            self._items.move_to_end(symbol)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


# --- error translation ---------------------------------------------------------------------


def _status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def translate_error(exc: Exception, symbol: str, status: int | None = None) -> Exception:
    """The finpipe error for an exception out of yfinance (raise it ``from exc``).

    :param status: the HTTP status of the last answer, if known.
    """
    what = f"{symbol}: {type(exc).__name__}: {exc}"
    status = _status_of(exc) or status
    if isinstance(exc, YFRateLimitError) or status == 429:
        return SourceUnavailableError(f"{symbol}: rate limited by Yahoo (HTTP 429)")
    if status is not None and (status >= 500 or status in _RETRIABLE_STATUS):
        return SourceUnavailableError(f"{symbol}: Yahoo answered HTTP {status} ({exc})")
    if isinstance(exc, YFTickerMissingError):  # unknown/delisted symbol, no prices in range
        return NoDataError(str(exc).removeprefix("$"))
    if status == 404:
        return NoDataError(f"{symbol}: not found at Yahoo (HTTP 404: {exc})")
    if isinstance(exc, YFDataException) and "DOWN" in str(exc).upper():
        return SourceUnavailableError(f"{symbol}: Yahoo Finance is down ({exc})")
    if isinstance(exc, json.JSONDecodeError):
        # An HTML error or maintenance page instead of JSON: transient in practice.
        return SourceUnavailableError(f"{symbol}: unreadable answer from Yahoo ({exc})")
    if isinstance(exc, (OSError, TimeoutError)):
        # requests' and curl_cffi's errors (connection, timeout, DNS, TLS) are OSErrors.
        return SourceUnavailableError(f"network error: {what}")
    return SourceError(what)


# --- the source ----------------------------------------------------------------------------


class YFinanceSource:
    """Live daily bars from Yahoo Finance, raw OHLC and volume, completed sessions only.

    :param clock: returns the current time (timezone-aware); decides the last completed
        session and what counts as a recent range.
    :param cache_dir: yfinance's cache directory; default a per-process temp directory.
    :param recent_days: ranges ending at most this many days before today are fetched
        through tomorrow in one request (no separate split-history request).
    :param split_cache_ttl: seconds a symbol's split history is reused.
    :param split_cache_size: symbols whose split history is kept.
    :param timeout: seconds per HTTP request.
    """

    name = "yfinance"

    def __init__(
        self,
        *,
        clock: Clock = utc_now,
        cache_dir: str | None = None,
        recent_days: int = DEFAULT_RECENT_DAYS,
        split_cache_ttl: float = DEFAULT_SPLIT_CACHE_TTL_S,
        split_cache_size: int = DEFAULT_SPLIT_CACHE_SIZE,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.cache_dir = configure_yfinance(cache_dir)
        self._clock = clock
        self._recent_days = recent_days
        self._timeout = timeout
        self._splits = _SplitCache(split_cache_ttl, split_cache_size)

    def fetch(self, symbol: str, start: dt.date, end: dt.date) -> RawBars:
        """Bars of ``symbol`` dated ``start`` .. ``end`` (completed sessions only), raw.

        :raises NoDataError: unknown or delisted symbol, or no completed session with data.
        :raises SourceUnavailableError: rate limit, server or network error; retry later.
        :raises SourceError: anything else, with the reason.
        """
        validate_symbol(symbol)
        now = self._clock()
        last = last_completed_session(now)
        today = now.astimezone(_NEW_YORK).date()
        stop = min(end, last)
        if stop < start:
            raise NoDataError(
                f"{symbol}: no completed session from {start} to {end} (last completed: {last})"
            )
        # Through tomorrow if recent: the answer then holds every split Yahoo has applied.
        complete = (today - stop).days <= self._recent_days
        until = today + dt.timedelta(days=1) if complete else stop + dt.timedelta(days=1)

        _last_status.value = None
        _forget_cached_answers()
        ticker = yf.Ticker(symbol, session=_get_session())
        try:
            frame = ticker.history(
                start=start.isoformat(),
                end=until.isoformat(),
                interval="1d",
                auto_adjust=False,
                actions=True,
                timeout=self._timeout,
            )
            history = None if complete else self._split_history(ticker, symbol, today)
        except Exception as exc:
            raise translate_error(exc, symbol, last_http_status()) from exc

        bars = self._to_raw(symbol, frame, start, history).between(start, stop)
        if not len(bars):
            raise NoDataError(f"{symbol}: no price data from {start} to {stop}")
        return bars

    def _split_history(
        self, ticker: yf.Ticker, symbol: str, today: dt.date
    ) -> list[tuple[dt.date, float]]:
        splits = self._splits.get(symbol, today)
        if splits is None:
            series = ticker.get_splits()
            splits = [
                (stamp.date(), float(ratio))
                for stamp, ratio in series.items()
                if np.isfinite(ratio) and ratio > 0
            ]
            self._splits.put(symbol, today, splits)
        return splits

    def _to_raw(
        self,
        symbol: str,
        frame: pd.DataFrame,
        start: dt.date,
        history: list[tuple[dt.date, float]] | None,
    ) -> RawBars:
        """Raw bars from yfinance's frame.

        :param history: the symbol's full split history, or None when the frame runs up to
            today and so carries every split itself.
        """
        if frame is None or frame.empty:
            return _empty(symbol)
        try:
            dates = [stamp.date() for stamp in frame.index]
            column = {
                name: frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
                for name in ("Open", "High", "Low", "Close", "Adj Close", "Volume")
            }
            dividends = _optional(frame, "Dividends")
            splits = _optional(frame, "Stock Splits")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SourceError(f"{symbol}: unexpected frame from yfinance: {exc!r}") from exc

        prices = np.column_stack([column[n] for n in ("Open", "High", "Low", "Close")])
        valid = (np.isfinite(prices) & (prices > 0)).all(axis=1)
        valid &= np.isfinite(column["Adj Close"]) & (column["Adj Close"] > 0)
        # Rows without prices that carry a split or dividend (yfinance adds one for an event
        # on a day without a bar): the event moves to the next bar.
        events = [
            (d, s, v)
            for d, s, v, ok in zip(dates, splits, dividends, valid, strict=True)
            if not ok and (s > 0 or v > 0)
        ]
        dropped = int((~valid).sum()) - len(events)
        if dropped:
            logger.warning(
                "yfinance bars without valid prices dropped symbol=%s count=%d", symbol, dropped
            )
        keep = np.flatnonzero(valid)
        bar_dates = [dates[i] for i in keep]
        bar_splits, bar_dividends = splits[keep].copy(), dividends[keep].copy()
        if history is None:
            all_splits = [(d, r) for d, r in zip(dates, splits.tolist(), strict=True) if r > 0]
        else:
            # The history has every split with its exact date; yfinance's frame puts a split
            # dated on a day without a bar on the bar before it. Trust the history.
            all_splits = history
            bar_splits[:] = 0.0
            events = [(d, 0.0, v) for d, _, v in events]
            if bar_dates:
                events += [(d, r, 0.0) for d, r in history if start <= d <= bar_dates[-1]]
        move_events_forward(bar_dates, bar_splits, bar_dividends, events)
        return raw_bars_from_adjusted(
            symbol,
            bar_dates,
            open_=column["Open"][keep],
            high=column["High"][keep],
            low=column["Low"][keep],
            close=column["Close"][keep],
            adj_close=column["Adj Close"][keep],
            volume=np.nan_to_num(column["Volume"][keep], nan=0.0),
            dividends=bar_dividends,
            splits=bar_splits,
            all_splits=all_splits,
            source=self.name,
        )


def _forget_cached_answers() -> None:
    """Empty yfinance's in-process memo of answers for past ranges (``YfData.cache_get``).

    Without this a re-fetch of the same old range in a long-running agent would get the
    first answer again, adjusted for the splits known then, and combine it with a newer
    split history; a forced re-fetch of a corrected range would see nothing new either.
    """
    clear = getattr(YfData.cache_get, "cache_clear", None)
    if clear is not None:
        clear()


def _optional(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.zeros(len(frame))
    values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isfinite(values) & (values > 0), values, 0.0)


def _empty(symbol: str) -> RawBars:
    empty = np.zeros(0)
    return RawBars(symbol, [], *(empty,) * 8, source=YFinanceSource.name)
