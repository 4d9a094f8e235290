"""No message can stop a partition: per-symbol sequences of extreme-but-valid bars, revisions
of columns the indicators do not read, and the dead-letter record of what failed.

Every symbol either equals a fresh computation (prices stored as sent, indicators equal to
TA-Lib over them, a finite state) or is parked with its failing message dead-lettered; a
failure never leaves ``BatchWriter.apply`` and never touches another symbol.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finpipe_core.calendar import trading_days
from tests.fixtures.batches import GROUP, Feed, raw_bars, symbol_outcome
from workers.processor.batch import BatchWriter
from workers.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.integration
D = dt.date


def test_extreme_symbol_never_stops_the_batch(scratch):
    """1e300 and 1e-300 alternating (the overflow of the Bollinger sum) among normal symbols."""
    settings, conn = scratch
    feed = Feed()
    days = trading_days(D(2015, 1, 1), D(2015, 12, 31))
    extreme = raw_bars(
        "XTRM",
        days,
        [1e300 if i % 2 else 1e-300 for i in range(len(days))],
        [1.0] * len(days),
        [0.0] * len(days),
    )
    normal = [SyntheticSource().fetch(s, D(2015, 1, 1), D(2015, 12, 31)) for s in ("NRMA", "NRMB")]
    batch = feed.messages(normal[0]) + feed.messages(extreme) + feed.messages(normal[1])
    result = BatchWriter(conn, GROUP, settings.max_message_bytes).apply(batch)
    conn.commit()
    assert result.next_offsets == {("data", feed.partition): feed.offset}
    assert symbol_outcome(conn, "NRMA") == symbol_outcome(conn, "NRMB") == "exact"
    assert symbol_outcome(conn, "XTRM") in ("exact", "parked")
    # Normal bars after the extreme ones: held while parked, or exact.
    later = SyntheticSource().fetch("XTRM", D(2016, 1, 1), D(2016, 3, 31))
    BatchWriter(conn, GROUP, settings.max_message_bytes).apply(feed.messages(later))
    conn.commit()
    assert symbol_outcome(conn, "XTRM") in ("exact", "parked")


magnitudes = st.sampled_from([1e-300, 1e-12, 1e-3, 1.0, 123.45, 1e6, 1e12, 1e150, 1e300])
segments = st.lists(
    st.tuples(
        magnitudes,
        st.sampled_from([0.0, 1.0, 1e9]),
        st.sampled_from([0.0, 0.01]),
        st.integers(1, 300),
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(segments=segments, per_message=st.sampled_from([7, 250, 5000]))
def test_symbol_sequences_are_stored_exactly_or_parked(scratch, segments, per_message):
    """Runs of extreme magnitudes, zero volume and low == high, in messages of up to 5,000
    bars, then normal bars: never an exception, and the symbol is exact or parked."""
    settings, conn = scratch
    feed = Feed()
    symbol = f"SEQ{abs(hash((tuple(segments), per_message))) % 10**6}"
    days = iter(trading_days(D(2000, 1, 1), D(2010, 12, 31)))
    batch = []
    for magnitude, volume, spread, n in segments:
        dates = [next(days) for _ in range(n)]
        batch += feed.messages(
            raw_bars(symbol, dates, [magnitude] * n, [volume] * n, [spread] * n), per_message
        )
    normal = [next(days) for _ in range(60)]
    batch += feed.messages(
        raw_bars(symbol, normal, [50.0 + i % 7 for i in range(60)], [1000.0] * 60, [0.02] * 60)
    )
    BatchWriter(conn, GROUP, settings.max_message_bytes).apply(batch)
    conn.commit()
    assert symbol_outcome(conn, symbol) in ("exact", "parked")


def test_revised_adj_close_and_dividends_are_applied_without_a_recompute(scratch, caplog):
    settings, conn = scratch
    feed = Feed()
    bars = SyntheticSource().fetch("REVD", D(2016, 1, 1), D(2016, 12, 31))
    BatchWriter(conn, GROUP, settings.max_message_bytes).apply(feed.messages(bars))
    conn.commit()
    bars.adj_close[10] *= 0.99
    bars.dividends[20] = 0.42
    with caplog.at_level(logging.INFO, logger="workers.processor.batch"):
        result = BatchWriter(conn, GROUP, settings.max_message_bytes).apply(feed.messages(bars))
    conn.commit()
    assert result.bars_stored == 2
    assert "history rewritten" not in caplog.text  # no indicator input changed
    with conn.cursor() as cur:
        cur.execute(
            "SELECT adj_close, dividends FROM prices WHERE symbol = 'REVD' AND "
            "date = ANY(%s) ORDER BY date",
            ([bars.dates[10], bars.dates[20]],),
        )
        assert cur.fetchall() == [
            (bars.adj_close[10], bars.dividends[10]),
            (bars.adj_close[20], 0.42),
        ]
    assert symbol_outcome(conn, "REVD") == "exact"
    # A revised volume is an indicator input: the history is rewritten.
    bars.volume[5] += 1
    with caplog.at_level(logging.INFO, logger="workers.processor.batch"):
        BatchWriter(conn, GROUP, settings.max_message_bytes).apply(feed.messages(bars))
    conn.commit()
    assert "history rewritten" in caplog.text
    assert symbol_outcome(conn, "REVD") == "exact"
