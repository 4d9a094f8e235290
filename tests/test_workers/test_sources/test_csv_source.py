"""CsvSource: files in yfinance's layout (split-adjusted) come back as raw bars."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finpipe_core.exceptions import ContractError, FatalError
from workers.sources.base import NoDataError, SourceError
from workers.sources.csv_source import CsvSource, raw_bars_from_adjusted, round_significant

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*returning an ndarray that drops timezone:pandas.errors.Pandas4Warning"
)

DAYS = [dt.date(2024, 3, d) for d in (4, 5, 6, 7, 8, 11, 12, 13, 14, 15)]
RAW_CLOSE = [100.0, 101.0, 102.5, 103.0, 104.25, 35.5, 36.0, 36.75, 37.0, 37.5]
SPLIT_DAY, RATIO = DAYS[5], 3.0  # 3:1 on Monday 11 March
LATER = dt.datetime(2024, 6, 3, 22, tzinfo=dt.UTC)
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume,Dividends,Stock Splits"


def raw_frame() -> pd.DataFrame:
    close = np.array(RAW_CLOSE)
    return pd.DataFrame(
        {
            "Open": close - 0.5,
            "High": close + 1.25,
            "Low": close - 1.5,
            "Close": close,
            "Volume": np.array([1000.0 + 10 * i for i in range(len(DAYS))]),
            "Dividends": np.where(np.arange(len(DAYS)) == 1, 0.75, 0.0),
            "Stock Splits": np.where(np.array(DAYS) == SPLIT_DAY, RATIO, 0.0),
        }
    )


def write_yfinance_csv(path: Path) -> pd.DataFrame:
    """What ``Ticker.history(auto_adjust=False, actions=True).to_csv()`` would write for the
    raw bars: earlier bars divided by the split (as float32 values), tz-aware midnight dates."""
    raw = raw_frame()
    factor = np.where(np.array(DAYS) < SPLIT_DAY, RATIO, 1.0)
    adjusted = pd.DataFrame(
        {
            **{
                c: (raw[c] / factor).astype(np.float32).astype(float)
                for c in ("Open", "High", "Low", "Close")
            },
            "Adj Close": (raw["Close"] / factor * 0.99).astype(np.float32).astype(float),
            "Volume": (raw["Volume"] * factor).astype(np.int64),
            "Dividends": (raw["Dividends"] / factor).astype(np.float32).astype(float),
            "Stock Splits": raw["Stock Splits"],
        }
    )
    adjusted.index = pd.DatetimeIndex([pd.Timestamp(d) for d in DAYS], name="Date").tz_localize(
        "America/New_York"
    )
    adjusted.to_csv(path)
    return adjusted


@pytest.fixture
def source(tmp_path: Path) -> CsvSource:
    return CsvSource(tmp_path, clock=lambda: LATER)


def test_round_trip_of_a_yfinance_file_with_a_split(source: CsvSource, tmp_path: Path) -> None:
    adjusted = write_yfinance_csv(tmp_path / "ABC.csv")
    assert (tmp_path / "ABC.csv").read_text().startswith(f"{HEADER}\n2024-03-04 00:00:00-05:00,")
    bars = source.fetch("ABC", DAYS[0], DAYS[-1])
    raw = raw_frame()
    assert bars.dates == DAYS and bars.source == "csv" and bars.symbol == "ABC"
    for name, column in (
        ("Open", bars.open),
        ("High", bars.high),
        ("Low", bars.low),
        ("Close", bars.close),
        ("Volume", bars.volume),
        ("Dividends", bars.dividends),
        ("Stock Splits", bars.splits),
    ):
        assert column.tolist() == raw[name].tolist(), name
    assert bars.adj_close.tolist() == adjusted["Adj Close"].tolist()


def test_range_before_the_split_is_still_raw(source: CsvSource, tmp_path: Path) -> None:
    write_yfinance_csv(tmp_path / "ABC.csv")
    bars = source.fetch("ABC", DAYS[1], DAYS[3])
    assert bars.dates == DAYS[1:4]
    assert bars.close.tolist() == RAW_CLOSE[1:4]


def test_in_progress_session_is_dropped(tmp_path: Path) -> None:
    write_yfinance_csv(tmp_path / "ABC.csv")
    during = dt.datetime(2024, 3, 15, 15, tzinfo=dt.UTC)  # 11:00 in New York
    bars = CsvSource(tmp_path, clock=lambda: during).fetch("ABC", DAYS[0], DAYS[-1])
    assert bars.dates == DAYS[:-1]


def test_plain_dates_and_event_only_rows(source: CsvSource, tmp_path: Path) -> None:
    # A split on a day without prices (yfinance writes such rows with empty prices) applies
    # to the bars before it and lands on the next bar.
    (tmp_path / "EVT.csv").write_text(
        f"{HEADER},Capital Gains\n"
        "2024-03-07,50,51,49,50,49,2000,0,0,0\n"
        "2024-03-08,51,52,50,51,50,2000,0.25,0,0\n"
        "2024-03-09,,,,,,0,0.0,2.0,0\n"
        "2024-03-11,102,103,101,102,101,1000,0,0,0\n"
    )
    bars = source.fetch("EVT", dt.date(2024, 3, 1), dt.date(2024, 3, 31))
    assert bars.dates == [dt.date(2024, 3, 7), dt.date(2024, 3, 8), dt.date(2024, 3, 11)]
    assert bars.close.tolist() == [100.0, 102.0, 102.0]
    assert bars.volume.tolist() == [1000.0, 1000.0, 1000.0]
    assert bars.dividends.tolist() == [0.0, 0.5, 0.0]
    assert bars.splits.tolist() == [0.0, 0.0, 2.0]


def test_missing_file_is_no_data(source: CsvSource) -> None:
    with pytest.raises(NoDataError, match=r"no file NONE\.csv"):
        source.fetch("NONE", DAYS[0], DAYS[-1])


def test_range_without_bars_is_no_data(source: CsvSource, tmp_path: Path) -> None:
    write_yfinance_csv(tmp_path / "ABC.csv")
    with pytest.raises(NoDataError, match="no bars"):
        source.fetch("ABC", dt.date(2020, 1, 1), dt.date(2020, 12, 31))


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("Date,Open,High,Low,Close\n", r"line 1: missing column\(s\) Adj Close, Volume"),
        (
            f"{HEADER}\n2024-03-04,1,2,0.5,1.5,1.5,10,0,0\n2024-03-05,1,2,abc,1.5,1.5,10,0,0\n",
            r"line 3, column 4 \(Low\): 'abc' is not a number",
        ),
        (
            f"{HEADER}\n2024-13-04,1,2,0.5,1.5,1.5,10,0,0\n",
            r"line 2, column 1 \(Date\): '2024-13-04' is not an ISO date",
        ),
        (
            f"{HEADER}\n2024-03-05,1,2,0.5,1.5,1.5,10,0,0\n2024-03-04,1,2,0.5,1.5,1.5,10,0,0\n",
            r"line 3, column 1 \(Date\): date 2024-03-04 is not after",
        ),
        (
            f"{HEADER}\n2024-03-04,1,2,0.5,-1.5,1.5,10,0,0\n",
            r"line 2, column 5 \(Close\): price is -1.5, must be > 0",
        ),
        (
            f"{HEADER}\n2024-03-04,1,2,,1.5,1.5,10,0,0\n",
            r"line 2, column 4 \(Low\): price is empty",
        ),
        (
            f"{HEADER}\n2024-03-04,1,2,0.5,1.5,1.5,-10,0,0\n",
            r"line 2, column 7 \(Volume\): -10.0 is negative",
        ),
        (
            f"{HEADER}\n2024-03-04,1,2,0.5,inf,1.5,10,0,0\n",
            r"line 2, column 5 \(Close\): 'inf' is not a finite number",
        ),
        (f"{HEADER}\n2024-03-04,1,2,0.5\n", r"line 2: 4 fields, the header has 9"),
        ("", r"line 1: empty file"),
    ],
)
def test_malformed_file_names_file_line_and_column(
    source: CsvSource, tmp_path: Path, body: str, where: str
) -> None:
    (tmp_path / "BAD.csv").write_text(body)
    with pytest.raises(SourceError, match=rf"BAD\.csv: {where}"):
        source.fetch("BAD", DAYS[0], DAYS[-1])


def test_undecodable_file_is_a_source_error(source: CsvSource, tmp_path: Path) -> None:
    (tmp_path / "BIN.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SourceError, match=r"BIN\.csv: cannot read"):
        source.fetch("BIN", DAYS[0], DAYS[-1])


@pytest.mark.parametrize("symbol", ["../etc/passwd", "/etc/passwd", "..", "abc", "A/B", ""])
def test_malicious_symbol_never_becomes_a_path(tmp_path: Path, symbol: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd.csv").write_text(f"{HEADER}\n2024-03-04,1,2,0.5,1.5,1.5,10,0,0\n")
    with pytest.raises(ContractError, match="invalid symbol"):
        CsvSource(data, clock=lambda: LATER).fetch(symbol, DAYS[0], DAYS[-1])


def test_file_changes_are_picked_up(source: CsvSource, tmp_path: Path) -> None:
    path = tmp_path / "CHG.csv"
    path.write_text(f"{HEADER}\n2024-03-04,1,2,0.5,1.5,1.5,10,0,0\n")
    assert source.fetch("CHG", DAYS[0], DAYS[-1]).close.tolist() == [1.5]
    path.write_text(
        f"{HEADER}\n2024-03-04,1,2,0.5,1.5,1.5,10,0,0\n2024-03-05,1,2,0.5,1.75,1.5,10,0,0\n"
    )
    assert source.fetch("CHG", DAYS[0], DAYS[-1]).close.tolist() == [1.5, 1.75]


def test_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match="not a directory"):
        CsvSource(tmp_path / "missing")


def test_raw_bars_from_adjusted_uses_splits_after_the_last_bar() -> None:
    days = [dt.date(2024, 3, 4), dt.date(2024, 3, 5)]
    bars = raw_bars_from_adjusted(
        "X",
        days,
        open_=np.array([10.0, 11.0]),
        high=np.array([10.0, 11.0]),
        low=np.array([10.0, 11.0]),
        close=np.array([10.0, 11.0]),
        adj_close=np.array([9.0, 10.0]),
        volume=np.array([400.0, 400.0]),
        dividends=np.zeros(2),
        splits=np.zeros(2),
        all_splits=[(dt.date(2024, 3, 5), 2.0), (dt.date(2024, 4, 1), 4.0)],
        source="t",
    )
    assert bars.close.tolist() == [80.0, 44.0]
    assert bars.volume.tolist() == [50.0, 100.0]
    assert bars.adj_close.tolist() == [9.0, 10.0]


def test_round_significant() -> None:
    noisy = np.array([124.80750274658203 * 4, 0.000123456789, 612345.678, 0.0, np.nan])
    assert round_significant(noisy)[:4].tolist() == [499.23, 0.0001234568, 612345.7, 0.0]
    assert np.isnan(round_significant(noisy)[4])
