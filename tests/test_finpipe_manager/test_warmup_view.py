"""The warm-up marker as stored: the indicators_warm view and what `finpipe status` shows."""

from __future__ import annotations

import datetime as dt

import psycopg2.extensions
import pytest
from psycopg2.extras import execute_values

from finpipe_core.calendar import trading_days
from finpipe_core.indicators.registry import CONVERGENCE_BARS
from finpipe_manager.warmup import ALL_WARM_BARS, warm_ups

pytestmark = pytest.mark.integration

DAYS = trading_days(dt.date(2010, 1, 4), dt.date(2011, 6, 30))  # 374 sessions


def test_view_marks_each_indicator_from_its_convergence_length(
    clean_db: psycopg2.extensions.connection,
) -> None:
    with clean_db, clean_db.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO indicators (symbol, date) VALUES %s",
            [("AAPL", d) for d in DAYS] + [("IBM", d) for d in DAYS[100:]],
        )
        cur.execute("SELECT * FROM indicators_warm WHERE symbol = 'IBM' ORDER BY date")
        names = [c.name for c in cur.description]
        rows = cur.fetchall()
    assert [r[names.index("bar_number")] for r in rows] == list(range(1, len(DAYS) - 99))
    for key, n in CONVERGENCE_BARS.items():
        flags = [r[names.index(f"{key}_warm")] for r in rows]
        if n is None or n > len(flags):
            assert not any(flags), key
        else:
            # Counted from the symbol's own first bar, not the table's.
            assert flags.index(True) == n - 1 and all(flags[n - 1 :]), key

    summary = {w.symbol: w for w in warm_ups(clean_db, ["AAPL", "IBM", "MSFT"])}
    assert summary["AAPL"].all_warm_from == DAYS[ALL_WARM_BARS - 1]
    assert summary["AAPL"].warm == summary["AAPL"].converging == 12
    ibm = summary["IBM"]
    assert ibm.bars == len(DAYS) - 100 and ibm.all_warm_from is None
    assert ibm.warm == sum(1 for n in CONVERGENCE_BARS.values() if n is not None and n <= ibm.bars)
    assert summary["MSFT"].bars == 0 and summary["MSFT"].warm == 0
