"""The revision log: every change to a stored bar is recorded in the batch transaction, and
the rewrite it causes leaves the tables equal to a fresh computation.

Real shapes: the offline sample's AAPL history (real prices and its 2005 split), revised the
way sources revise it (a volume two sessions later, adj_close after a dividend, a split that
arrives after its ex-date, a bar that was missing).
"""

from __future__ import annotations

import datetime as dt

import pytest

from finpipe_core import contracts
from finpipe_core.calendar import trading_days
from tests.fixtures.batches import GROUP, Feed, open_scratch
from tests.fixtures.pipeline import assert_indicators_exact
from workers.processor.batch import BatchWriter, InputMessage
from workers.processor.revision_log import diff_stored
from workers.sources.base import RawBars
from workers.sources.sample import SampleSource

pytestmark = pytest.mark.integration

D = dt.date
SPLIT_DAY = D(2005, 2, 28)  # AAPL 2:1 in the sample


@pytest.fixture
def scratch(pipeline_factory):
    settings, conn = open_scratch(pipeline_factory, "sample")
    yield settings, conn
    conn.close()


COLUMNS = ("open", "high", "low", "close", "adj_close", "volume", "dividends", "splits")


def aapl(start: dt.date, end: dt.date, symbol: str = "AAPL") -> RawBars:
    """AAPL's sample bars, as copies (the sample's arrays are cached: never edit them)."""
    bars = SampleSource().fetch("AAPL", start, end)
    return RawBars(
        symbol, list(bars.dates), *(getattr(bars, c).copy() for c in COLUMNS), source="sample"
    )


def apply(conn, settings, messages: list[InputMessage]):
    result = BatchWriter(conn, GROUP, settings.max_message_bytes).apply(messages)
    conn.commit()
    return result


def logged(conn, symbol: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT date, kind, columns, old_values, new_values, rewrote_history, "
            "task_id FROM revisions WHERE symbol = %s ORDER BY id",
            (symbol,),
        )
        rows = cur.fetchall()
    conn.commit()
    return rows


def row_versions(conn, symbol: str) -> dict[str, list]:
    """Each table's row versions (xmin) of ``symbol``: unchanged when nothing was written."""
    out = {}
    with conn.cursor() as cur:
        for table in ("prices", "indicators"):
            cur.execute(
                f"SELECT date, xmin::text FROM {table} WHERE symbol = %s ORDER BY date", (symbol,)
            )
            out[table] = cur.fetchall()
    conn.commit()
    return out


def test_diff_names_only_the_changed_columns():
    bars = aapl(D(2004, 1, 1), D(2004, 1, 31))
    cols = ("close", "volume")
    stored = {
        d: {"close": c, "volume": v}
        for d, c, v in zip(bars.dates, bars.close, bars.volume, strict=True)
    }
    raw = {"close": bars.close.copy(), "volume": bars.volume.copy()}
    raw["volume"][3] += 100
    del stored[bars.dates[5]]
    revs = diff_stored(stored, bars.dates, raw, bars.dates[-2], cols)
    assert [(r.date, r.columns) for r in revs] == [
        (bars.dates[3], ("volume",)),
        (bars.dates[5], cols),
    ]
    assert revs[0].old == {"volume": bars.volume[3]}
    assert revs[0].new == {"volume": bars.volume[3] + 100}
    assert revs[1].old is None  # a new bar inside the history


def test_revised_volume_days_later_is_logged_and_rewrites_history(scratch):
    settings, conn = scratch
    feed = Feed()
    bars = aapl(D(2004, 1, 1), D(2004, 12, 31))
    apply(conn, settings, feed.messages(bars))
    assert logged(conn, "AAPL") == []

    # The next days arrive with the session two days back revised (volume) and an adj_close
    # revised after a dividend: the correction window re-fetches the last five sessions.
    window = aapl(bars.dates[-5], D(2005, 1, 7))
    i_vol = window.dates.index(bars.dates[-3])
    i_adj = window.dates.index(bars.dates[-4])
    old_volume, old_adj = window.volume[i_vol], window.adj_close[i_adj]
    window.volume[i_vol] = old_volume * 1.25
    window.adj_close[i_adj] = old_adj * 0.99
    messages = feed.messages(window)
    apply(conn, settings, messages)

    rows = logged(conn, "AAPL")
    task_id = contracts.decode_bars(messages[0].value, settings.max_message_bytes).task_id
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (bars.dates[-4], "revised", ["adj_close"]),
        (bars.dates[-3], "revised", ["volume"]),
    ]
    assert rows[0][3] == {"adj_close": old_adj} and rows[0][4] == {"adj_close": old_adj * 0.99}
    assert rows[1][3] == {"volume": old_volume} and rows[1][4] == {"volume": old_volume * 1.25}
    assert all(r[5] for r in rows)  # a volume changed: the history was rewritten
    assert {r[6] for r in rows} == {task_id}
    # The tables equal a fresh computation over what is stored, and what is stored is the
    # revised bar.
    assert assert_indicators_exact(conn, "AAPL") == len(bars) + len(window) - 5
    with conn.cursor() as cur:
        cur.execute(
            "SELECT volume FROM prices WHERE symbol = 'AAPL' AND date = %s", (bars.dates[-3],)
        )
        assert cur.fetchone()[0] == old_volume * 1.25
    conn.commit()


def test_unchanged_refetch_writes_nothing(scratch):
    settings, conn = scratch
    feed = Feed()
    bars = aapl(D(2004, 1, 1), D(2004, 12, 31))
    apply(conn, settings, feed.messages(bars))
    before = row_versions(conn, "AAPL")
    # The correction window of the last five sessions, unchanged at the source.
    result = apply(conn, settings, feed.messages(aapl(bars.dates[-5], bars.dates[-1])))
    assert result.bars_stored == 0
    assert row_versions(conn, "AAPL") == before  # not one row rewritten
    assert logged(conn, "AAPL") == []


def test_split_arriving_after_its_ex_date(scratch):
    settings, conn = scratch
    feed = Feed()
    # The source first sends the days around the split without it (raw prices halve, no
    # split recorded) ...
    first = aapl(D(2004, 1, 1), SPLIT_DAY + dt.timedelta(days=3))
    k = first.dates.index(SPLIT_DAY)
    assert first.splits[k] == 2.0
    first.splits[k] = 0.0
    apply(conn, settings, feed.messages(first))
    # ... and two days later sends it again with the split on its ex-date.
    again = aapl(SPLIT_DAY - dt.timedelta(days=7), SPLIT_DAY + dt.timedelta(days=6))
    apply(conn, settings, feed.messages(again))
    rows = logged(conn, "AAPL")
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in rows] == [
        (SPLIT_DAY, ["splits"], {"splits": 0.0}, {"splits": 2.0}, True)
    ]
    # Equal to a fresh computation, and to the same history fed with the split from the start.
    full = aapl(D(2004, 1, 1), again.dates[-1])
    assert assert_indicators_exact(conn, "AAPL") == len(full)
    fresh = aapl(D(2004, 1, 1), again.dates[-1], symbol="FRESH")
    apply(conn, settings, Feed().messages(fresh))
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.* IS NOT DISTINCT FROM b.* FROM "
            "(SELECT date, rsi_14, macd, sma_200, ema_50, atr_14, obv, adx_14 "
            " FROM indicators WHERE symbol = 'AAPL') a JOIN "
            "(SELECT date, rsi_14, macd, sma_200, ema_50, atr_14, obv, adx_14 "
            " FROM indicators WHERE symbol = 'FRESH') b USING (date)"
        )
        same = [r[0] for r in cur.fetchall()]
    conn.commit()
    assert len(same) == len(full) and all(same)


def test_bar_missing_from_history_is_logged_as_inserted(scratch):
    settings, conn = scratch
    feed = Feed()
    bars = aapl(D(2004, 1, 1), D(2004, 6, 30))
    gap = bars.dates[50]
    keep = [i for i in range(len(bars)) if i != 50]
    holey = RawBars(
        "AAPL",
        [bars.dates[i] for i in keep],
        *(getattr(bars, c)[keep] for c in COLUMNS),
        source="sample",
    )
    apply(conn, settings, feed.messages(holey))
    apply(conn, settings, feed.messages(bars))
    rows = logged(conn, "AAPL")
    assert [(r[0], r[1], r[3]) for r in rows] == [(gap, "inserted", None)]
    assert rows[0][4]["close"] == bars.close[50]
    assert assert_indicators_exact(conn, "AAPL") == len(bars)
    assert len(trading_days(bars.dates[0], bars.dates[-1])) == len(bars)
