"""split_adjust: hand-checkable examples, composition, and real AAPL splits."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from bokeh_sampledata import stocks

from finpipe_core.indicators import Bars, InvalidBarsError, split_adjust, split_factors

DATES = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08"]


def five_bars() -> Bars:
    return Bars(
        open=[100.0, 102.0, 104.0, 51.0, 52.0],
        high=[101.0, 103.0, 105.0, 52.0, 53.0],
        low=[99.0, 101.0, 103.0, 50.0, 51.0],
        close=[100.0, 102.0, 104.0, 51.5, 52.5],
        volume=[1000.0, 1100.0, 1200.0, 2500.0, 2600.0],
    )


def test_two_for_one_halves_earlier_prices_and_doubles_earlier_volume() -> None:
    adj = split_adjust(five_bars(), DATES, [("2024-01-05", 2.0)])
    assert adj.close.tolist() == [50.0, 51.0, 52.0, 51.5, 52.5]
    assert adj.open.tolist() == [50.0, 51.0, 52.0, 51.0, 52.0]
    assert adj.high.tolist() == [50.5, 51.5, 52.5, 52.0, 53.0]
    assert adj.low.tolist() == [49.5, 50.5, 51.5, 50.0, 51.0]
    assert adj.volume.tolist() == [2000.0, 2200.0, 2400.0, 2500.0, 2600.0]


def test_turnover_is_unchanged() -> None:
    raw = five_bars()
    adj = split_adjust(raw, DATES, [("2024-01-04", 3.0), (dt.date(2024, 1, 8), 0.5)])
    np.testing.assert_allclose(adj.close * adj.volume, raw.close * raw.volume, rtol=1e-15)


def test_two_splits_compose() -> None:
    raw = five_bars()
    a, b = ("2024-01-03", 4.0), ("2024-01-05", 2.0)
    at_once = split_adjust(raw, DATES, [b, a])  # order of the events does not matter
    one_then_other = split_adjust(split_adjust(raw, DATES, [a]), DATES, [b])
    np.testing.assert_allclose(at_once.close, one_then_other.close, rtol=1e-15)
    np.testing.assert_allclose(at_once.volume, one_then_other.volume, rtol=1e-15)
    # Bar 0 precedes both splits (factor 8), bars 1-2 only the second (2), bars 3-4 none.
    assert split_factors(DATES, [a, b]).tolist() == [8.0, 2.0, 2.0, 1.0, 1.0]
    assert at_once.close.tolist() == [12.5, 51.0, 52.0, 51.5, 52.5]


def test_split_arriving_later_rescales_all_stored_history() -> None:
    stored = five_bars()
    adj = split_adjust(stored, DATES, [("2024-02-01", 10.0)])
    np.testing.assert_allclose(adj.close, stored.close / 10.0)
    np.testing.assert_allclose(adj.volume, stored.volume * 10.0)


def test_split_on_or_before_first_bar_changes_nothing() -> None:
    raw = five_bars()
    for day in ("2023-06-01", "2024-01-02"):
        adj = split_adjust(raw, DATES, [(day, 2.0)])
        assert adj.close.tolist() == raw.close.tolist()


def test_reverse_split() -> None:
    adj = split_adjust(five_bars(), DATES, [("2024-01-05", 0.1)])  # 1-for-10
    assert adj.close.tolist()[:3] == pytest.approx([1000.0, 1020.0, 1040.0])
    assert adj.volume.tolist()[:3] == pytest.approx([100.0, 110.0, 120.0])


def test_date_types() -> None:
    as_dates = [dt.date.fromisoformat(d) for d in DATES]
    as_np = np.array(DATES, dtype="datetime64[D]")
    splits = [(np.datetime64("2024-01-05"), 2.0)]
    a = split_adjust(five_bars(), as_dates, splits)
    b = split_adjust(five_bars(), as_np, splits)
    assert a.close.tolist() == b.close.tolist() == [50.0, 51.0, 52.0, 51.5, 52.5]


def test_invalid_inputs() -> None:
    raw = five_bars()
    with pytest.raises(InvalidBarsError, match="ascending"):
        split_adjust(raw, [DATES[1], DATES[0], *DATES[2:]], [])
    with pytest.raises(InvalidBarsError, match="ratio"):
        split_adjust(raw, DATES, [("2024-01-05", 0.0)])
    with pytest.raises(InvalidBarsError, match="ratio"):
        split_adjust(raw, DATES, [("2024-01-05", float("nan"))])
    with pytest.raises(InvalidBarsError, match="4 entries for 5 bars"):
        split_adjust(raw, DATES[:4], [])
    with pytest.raises(InvalidBarsError, match="dates"):
        split_adjust(raw, ["not a date"] * 5, [])


def test_real_aapl_splits_make_the_series_continuous() -> None:
    """The sample's AAPL prices are raw; its 2:1 splits of 2000-06-21 and 2005-02-28."""
    d = stocks.AAPL
    dates = np.array(d["date"], dtype="datetime64[D]")
    raw = Bars(
        *(np.asarray(d[k], dtype=np.float64) for k in ("open", "high", "low", "close", "volume"))
    )
    adj = split_adjust(raw, dates, [("2000-06-21", 2.0), ("2005-02-28", 2.0)])
    for day in ("2000-06-21", "2005-02-28"):
        i = int(np.searchsorted(dates, np.datetime64(day)))
        assert raw.close[i] / raw.close[i - 1] < 0.6  # the raw series halves overnight
        assert 0.85 < adj.close[i] / adj.close[i - 1] < 1.15
    # Before AAPL's first dividend (Aug 2012) the source's adj_close differs from ours only by
    # events after the sample ends (the 2014 7:1 split, later dividends): a constant ratio.
    before = dates < np.datetime64("2012-08-01")
    ratio = np.asarray(d["adj_close"])[before] / adj.close[before]
    assert np.ptp(ratio) / ratio.mean() < 1e-3
    assert 0.1 < ratio.mean() <= 1 / 7


@pytest.mark.parametrize(
    "as_given",
    [
        lambda ds: [dt.date.fromisoformat(d) for d in ds],  # the processor's fast path
        lambda ds: [dt.date.fromisoformat(ds[0]), *ds[1:]],  # mixed: numpy's conversion
        lambda ds: np.array(ds, dtype="datetime64[D]"),
        lambda ds: list(ds),
    ],
)
def test_date_forms_give_the_same_factors(as_given) -> None:  # type: ignore[no-untyped-def]
    splits = [("2024-01-04", 2.0), (dt.date(2024, 1, 8), 3.0)]
    expected = [6.0, 6.0, 3.0, 3.0, 1.0]
    assert split_factors(as_given(DATES), splits).tolist() == expected
