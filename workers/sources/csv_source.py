"""Daily bars from a directory of per-symbol CSV files in yfinance's column layout.

One file per symbol, ``<SYMBOL>.csv``, as ``Ticker.history(auto_adjust=False, actions=True)
.to_csv()`` writes it::

    Date,Open,High,Low,Close,Adj Close,Volume,Dividends,Stock Splits
    2024-03-04 00:00:00-05:00,50.0,51.0,49.5,50.5,50.1,2000,0.0,0.0

Extra columns (``Capital Gains``, ``Repaired?``) are ignored. The date is read as written (the
exchange-local date; a time and UTC offset after it are accepted and not converted).

Like yfinance's, the file's OHLC, volume and dividends are split-*adjusted*: every bar is on the
share basis of the file's last split. ``raw_bars_from_adjusted`` puts them back on the basis
they traded on (see below); the yfinance source uses the same function.

Un-adjustment (the inverse of ``finpipe_core.indicators.splits``): a bar's factor is the product of
the ratios of every split dated after it (``split_factors``), so the raw open/high/low/close and
dividend are the adjusted ones times the factor and the raw volume is the adjusted one divided
by it. Raw prices are rounded to ``PRICE_SIGNIFICANT_DIGITS`` significant digits and volumes to
whole shares: the vendor's adjusted prices carry float32 noise (124.80750274658203 for 124.8075),
and without rounding the same trading day would get a slightly different raw value before and
after a later split. ``adj_close`` is passed through untouched.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from finpipe_core.calendar import last_completed_session
from finpipe_core.contracts import validate_symbol
from finpipe_core.exceptions import FatalError
from finpipe_core.indicators.splits import split_factors
from workers.sources.base import NoDataError, RawBars, SourceError

logger = logging.getLogger(__name__)

# Float32 carries about 7.2 significant decimal digits; vendors' adjusted prices come from it.
PRICE_SIGNIFICANT_DIGITS = 7
# The columns a file must have, in yfinance's spelling; order in the file does not matter.
REQUIRED_COLUMNS = (
    "Date",
    "Open",
    "High",
    "Low",
    "Close",
    "Adj Close",
    "Volume",
    "Dividends",
    "Stock Splits",
)
_PRICE_COLUMNS = ("Open", "High", "Low", "Close")
# Parsed files kept in memory, keyed by path and invalidated when size or mtime change.
_FILE_CACHE_SIZE = 64

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def round_significant(values: np.ndarray, digits: int = PRICE_SIGNIFICANT_DIGITS) -> np.ndarray:
    """``values`` rounded to ``digits`` significant decimal digits (NaN and 0 unchanged)."""
    return np.array(
        [float(f"{v:.{digits}g}") if math.isfinite(v) else v for v in values.tolist()],
        dtype=np.float64,
    )


def move_events_forward(
    bar_dates: Sequence[dt.date],
    splits: np.ndarray,
    dividends: np.ndarray,
    events: Iterable[tuple[dt.date, float, float]],
) -> None:
    """Put ``(date, split, dividend)`` events of dates without a bar on the next bar (in place).

    A split dated on a day without a bar rescales exactly the bars before that day, which are
    the bars before the next bar, so the next bar is its ex-date in the returned series. Events
    after the last bar are dropped here (their splits still count in ``all_splits``).
    """
    days = np.array(bar_dates, dtype="datetime64[D]")
    for when, split, dividend in events:
        i = int(np.searchsorted(days, np.datetime64(when, "D"), side="left"))
        if i >= len(days):
            continue
        if split > 0:
            splits[i] = split * splits[i] if splits[i] > 0 else split
        if dividend > 0:
            dividends[i] += dividend


def raw_bars_from_adjusted(
    symbol: str,
    dates: Sequence[dt.date],
    *,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    adj_close: np.ndarray,
    volume: np.ndarray,
    dividends: np.ndarray,
    splits: np.ndarray,
    all_splits: Iterable[tuple[dt.date, float]],
    source: str,
) -> RawBars:
    """Raw bars from split-adjusted ones (yfinance's layout), see the module docstring.

    :param dates: ascending bar dates.
    :param splits: the split ratio on each bar's date (0 = none), kept as is.
    :param all_splits: every split of the symbol known to the caller, including those after
        the last bar; the factor of a bar is the product of the ratios dated after it.
    """
    factors = split_factors(dates, all_splits)
    return RawBars(
        symbol=symbol,
        dates=list(dates),
        open=round_significant(open_ * factors),
        high=round_significant(high * factors),
        low=round_significant(low * factors),
        close=round_significant(close * factors),
        adj_close=np.asarray(adj_close, dtype=np.float64),
        volume=np.rint(volume / factors),
        dividends=round_significant(dividends * factors),
        splits=np.asarray(splits, dtype=np.float64),
        source=source,
    )


class _FileFormatError(Exception):
    def __init__(self, line: int, reason: str, column: int | None = None, name: str = "") -> None:
        where = f"line {line}" + (f", column {column} ({name})" if column is not None else "")
        super().__init__(f"{where}: {reason}")


def _number(cell: str, line: int, column: int, name: str) -> float:
    if cell.strip() == "":
        return math.nan
    try:
        value = float(cell)
    except ValueError:
        raise _FileFormatError(line, f"{cell!r} is not a number", column, name) from None
    if not math.isfinite(value):
        raise _FileFormatError(line, f"{cell!r} is not a finite number", column, name)
    return value


def _date(cell: str, line: int, column: int) -> dt.date:
    try:
        return dt.datetime.fromisoformat(cell.strip()).date()
    except ValueError:
        raise _FileFormatError(line, f"{cell!r} is not an ISO date", column, "Date") from None


def parse_yfinance_csv(path: Path, symbol: str) -> RawBars:
    """All bars of a file in yfinance's layout, un-adjusted (raw); see the module docstring.

    :raises SourceError: the file cannot be read or is malformed (names the line and column).
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return _parse_rows(csv.reader(handle), symbol)
    except _FileFormatError as exc:
        raise SourceError(f"{path}: {exc}") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"{path}: cannot read: {exc}") from exc


def _parse_rows(reader: Iterable[list[str]], symbol: str) -> RawBars:
    rows = iter(reader)
    header = next(rows, None)
    if header is None:
        raise _FileFormatError(1, "empty file, expected a header row")
    header = [name.strip().lstrip("\ufeff") for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise _FileFormatError(
            1, f"missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}"
        )
    index = {name: header.index(name) for name in REQUIRED_COLUMNS}

    dates: list[dt.date] = []
    values: dict[str, list[float]] = {name: [] for name in REQUIRED_COLUMNS[1:]}
    events: list[tuple[dt.date, float, float]] = []
    previous: dt.date | None = None
    for line, row in enumerate(rows, start=2):
        if not row or all(cell.strip() == "" for cell in row):
            continue
        if len(row) < len(header):
            raise _FileFormatError(line, f"{len(row)} fields, the header has {len(header)}")
        day = _date(row[index["Date"]], line, index["Date"] + 1)
        if previous is not None and day <= previous:
            raise _FileFormatError(
                line,
                f"date {day} is not after the previous row's {previous}",
                index["Date"] + 1,
                "Date",
            )
        previous = day
        cells = {
            name: _number(row[index[name]], line, index[name] + 1, name)
            for name in REQUIRED_COLUMNS[1:]
        }
        for name in ("Volume", "Dividends", "Stock Splits"):
            if math.isnan(cells[name]):
                cells[name] = 0.0
            elif cells[name] < 0:
                raise _FileFormatError(line, f"{cells[name]} is negative", index[name] + 1, name)
        prices = [cells[name] for name in _PRICE_COLUMNS]
        if all(math.isnan(p) for p in prices):
            # An event-only row (a split or dividend on a day without prices).
            if cells["Stock Splits"] > 0 or cells["Dividends"] > 0:
                events.append((day, cells["Stock Splits"], cells["Dividends"]))
            continue
        for name in (*_PRICE_COLUMNS, "Adj Close"):
            if not cells[name] > 0:  # also catches NaN
                shown = "empty" if math.isnan(cells[name]) else f"{cells[name]}"
                raise _FileFormatError(
                    line, f"price is {shown}, must be > 0", index[name] + 1, name
                )
        dates.append(day)
        for name in REQUIRED_COLUMNS[1:]:
            values[name].append(cells[name])

    arrays = {name: np.array(v, dtype=np.float64) for name, v in values.items()}
    splits, dividends = arrays["Stock Splits"], arrays["Dividends"]
    all_splits = [(d, r) for d, r in zip(dates, splits.tolist(), strict=True) if r > 0]
    all_splits += [(d, r) for d, r, _ in events if r > 0]
    move_events_forward(dates, splits, dividends, events)
    return raw_bars_from_adjusted(
        symbol,
        dates,
        open_=arrays["Open"],
        high=arrays["High"],
        low=arrays["Low"],
        close=arrays["Close"],
        adj_close=arrays["Adj Close"],
        volume=arrays["Volume"],
        dividends=dividends,
        splits=splits,
        all_splits=all_splits,
        source=CsvSource.name,
    )


class CsvSource:
    """Bars from ``<directory>/<SYMBOL>.csv`` files in yfinance's layout.

    :param directory: the folder holding the files (must exist).
    :param clock: returns the current time (timezone-aware); bars after the last completed
        session at that time are not returned.
    """

    name = "csv"

    def __init__(self, directory: str | Path, *, clock: Clock = utc_now) -> None:
        self._directory = Path(directory).expanduser()
        if not self._directory.is_dir():
            raise FatalError(f"csv source: {self._directory} is not a directory")
        self._root = self._directory.resolve()
        self._clock = clock
        self._cache: OrderedDict[Path, tuple[tuple[int, int], RawBars]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        return self._directory

    def path_for(self, symbol: str) -> Path:
        """The file of ``symbol``, after checking it is a valid symbol naming a file in here.

        :raises ContractError: ``symbol`` is not a valid symbol (e.g. ``../etc/passwd``).
        """
        validate_symbol(symbol)
        path = self._root / f"{symbol}.csv"
        if path.parent != self._root:  # cannot happen for a valid symbol; belt and braces
            raise SourceError(f"symbol {symbol!r} does not name a file in {self._root}")
        return path

    def fetch(self, symbol: str, start: dt.date, end: dt.date) -> RawBars:
        """Bars of ``symbol`` dated ``start`` .. ``end`` (completed sessions only), raw.

        :raises ContractError: ``symbol`` is not a valid symbol.
        :raises NoDataError: no file for the symbol, or no bars in the range.
        :raises SourceError: the file is unreadable or malformed.
        """
        path = self.path_for(symbol)
        last = last_completed_session(self._clock())
        bars = self._load(path, symbol).between(start, min(end, last))
        if not len(bars):
            raise NoDataError(f"{symbol}: no bars from {start} to {min(end, last)} in {path.name}")
        return bars

    def _load(self, path: Path, symbol: str) -> RawBars:
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise NoDataError(f"{symbol}: no file {path.name} in {self._root}") from None
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc}") from exc
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == key:
                self._cache.move_to_end(path)
                return hit[1]
        bars = parse_yfinance_csv(path, symbol)
        with self._lock:
            self._cache[path] = (key, bars)
            self._cache.move_to_end(path)
            while len(self._cache) > _FILE_CACHE_SIZE:
                self._cache.popitem(last=False)
        return bars
