"""The suspicious-data asset checks of stock_prices, run by the checks job on real tables:
the sample's real AAPL and IBM bars, with a missed split and a unit error planted."""

from __future__ import annotations

import datetime as dt

import psycopg2.extensions
import pytest
from psycopg2.extras import execute_values

from finpipe_dagster.definitions import defs
from finpipe_manager import quality
from workers.sources.sample import SampleSource

pytestmark = pytest.mark.integration

D = dt.date
COLUMNS = ("open", "high", "low", "close", "adj_close", "volume", "dividends", "splits")


def _store(conn: psycopg2.extensions.connection, symbol: str, edit=None) -> list[dt.date]:
    b = SampleSource().fetch(symbol, D(2004, 1, 1), D(2006, 1, 1))
    cols = {c: getattr(b, c).copy() for c in COLUMNS}
    if edit:
        edit(b.dates, cols)
    rows = [(symbol, d, *(float(cols[c][i]) for c in COLUMNS)) for i, d in enumerate(b.dates)]
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO symbols (symbol) VALUES (%s)", (symbol,))
        execute_values(
            cur, f"INSERT INTO prices (symbol, date, {', '.join(COLUMNS)}) VALUES %s", rows
        )
    return b.dates


def _evaluations() -> dict[str, object]:
    result = defs.resolve_job_def("market_data_checks_job").execute_in_process()
    return {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.check_name in quality.CHECKS
    }


def test_clean_real_bars_pass(clean_db: psycopg2.extensions.connection) -> None:
    _store(clean_db, "AAPL")
    _store(clean_db, "IBM")
    found = _evaluations()
    assert set(found) == set(quality.CHECKS)
    assert all(e.passed for e in found.values())
    assert found[quality.SPLIT_JUMP].metadata["symbols_scanned"].value == 2


def test_missed_split_and_unit_error_are_reported_with_their_dates(
    clean_db: psycopg2.extensions.connection,
) -> None:
    def miss_split(dates, cols):
        cols["splits"][dates.index(D(2005, 2, 28))] = 0.0

    def cents(dates, cols):
        for c in ("open", "high", "low", "close"):
            cols[c][300:302] *= 100

    _store(clean_db, "AAPL", miss_split)
    ibm = _store(clean_db, "IBM", cents)
    found = _evaluations()
    split = found[quality.SPLIT_JUMP]
    assert not split.passed
    assert split.metadata["offending_dates"].value == {"AAPL": ["2005-02-28"]}
    unit = found[quality.UNIT_JUMP]
    assert not unit.passed
    assert unit.metadata["offending_dates"].value == {"IBM": [d.isoformat() for d in ibm[300:302]]}
    for name in (quality.NAN_PRICE, quality.ZERO_VOLUME, quality.MISSING_SESSIONS):
        assert found[name].passed, name
    # The bars themselves are left as they were given.
    with clean_db.cursor() as cur:
        cur.execute("SELECT splits FROM prices WHERE symbol = 'AAPL' AND date = '2005-02-28'")
        assert cur.fetchone()[0] == 0.0
    clean_db.rollback()
