"""Tasks in, exact indicators out: real agents, processors, Kafka and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from tests.fixtures.pipeline import assert_indicators_exact, table_counts
from workers.sources.sample import SampleSource
from workers.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.integration

D = dt.date


def _stored_prices(conn, symbol: str) -> tuple[list[dt.date], np.ndarray]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT date, open, high, low, close, volume, splits FROM prices "
            "WHERE symbol = %s ORDER BY date",
            (symbol,),
        )
        rows = cur.fetchall()
    return [r[0] for r in rows], np.array([r[1:] for r in rows], dtype=np.float64)


@pytest.mark.parametrize(
    ("source", "ranges"),
    [
        (
            "sample",
            [
                ("AAPL", D(2000, 3, 1), D(2006, 12, 31)),
                ("MSFT", D(2001, 1, 1), D(2004, 6, 30)),
                ("IBM", D(2000, 3, 1), D(2002, 12, 31)),
            ],
        ),
        ("synthetic", [(f"SYN{i}", D(2010, 1, 1), D(2014, 12, 31)) for i in range(6)]),
    ],
)
def test_indicators_equal_talib_over_stored_prices(pipeline_factory, source, ranges):
    pipe = pipeline_factory(source=source)
    pipe.start("agent")
    pipe.start("processor")
    pipe.wait_tasks(pipe.send_tasks(ranges))

    conn = pipe.connect()
    src = SampleSource() if source == "sample" else SyntheticSource()
    for symbol, start, end in ranges:
        expected = src.fetch(symbol, start, end)
        dates, stored = _stored_prices(conn, symbol)
        assert dates == expected.dates
        np.testing.assert_array_equal(stored[:, 3], expected.close)
        assert assert_indicators_exact(conn, symbol) == len(expected)
    counts = table_counts(conn)
    assert (
        counts["prices"]
        == counts["indicators"]
        == sum(len(src.fetch(s, a, b)) for s, a, b in ranges)
    )
    with conn.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM tasks GROUP BY status")
        assert dict(cur.fetchall()) == {"done": len(ranges)}
        cur.execute("SELECT symbol, last_processed_date FROM symbol_state ORDER BY symbol")
        assert dict(cur.fetchall()) == {s: end for s, _, end in ranges}
