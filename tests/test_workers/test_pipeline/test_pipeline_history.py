"""Re-sent tasks, overlaps, out-of-order backfills and splits leave the tables exact."""

from __future__ import annotations

import datetime as dt

import msgspec
import numpy as np
import pytest

from tests.fixtures.pipeline import assert_indicators_exact, table_counts
from workers.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.integration

D = dt.date


def _symbol_with_split(after: dt.date, before: dt.date) -> tuple[str, dt.date]:
    """A synthetic symbol with a split between ``after`` and ``before``, and its date."""
    for i in range(500):
        bars = SyntheticSource().fetch(f"SPL{i}", after, before)
        idx = np.flatnonzero(bars.splits)
        if len(idx):
            return f"SPL{i}", bars.dates[idx[0]]
    raise AssertionError("no synthetic symbol with a split found")


def test_same_tasks_twice_and_overlaps_store_each_row_once(pipeline_factory):
    pipe = pipeline_factory(source="synthetic")
    pipe.start("agent")
    pipe.start("processor")
    ranges = [("DUPA", D(2012, 1, 1), D(2013, 6, 30)), ("DUPB", D(2012, 1, 1), D(2012, 12, 31))]
    pipe.wait_tasks(pipe.send_tasks(ranges))
    conn = pipe.connect()
    first = table_counts(conn)

    # The very same tasks again, and ranges overlapping the stored ones on both sides.
    pipe.wait_tasks(pipe.send_tasks(ranges, tag="again"))
    assert table_counts(conn) == first
    overlaps = [("DUPA", D(2013, 1, 1), D(2013, 12, 31)), ("DUPB", D(2011, 6, 1), D(2012, 3, 31))]
    pipe.wait_tasks(pipe.send_tasks(overlaps))

    src = SyntheticSource()
    expected_rows = {
        "DUPA": len(src.fetch("DUPA", D(2012, 1, 1), D(2013, 12, 31))),
        "DUPB": len(src.fetch("DUPB", D(2011, 6, 1), D(2012, 12, 31))),
    }
    for symbol, n in expected_rows.items():
        assert assert_indicators_exact(conn, symbol) == n
    assert table_counts(conn)["prices"] == sum(expected_rows.values())


def test_older_backfill_after_newer_days_and_a_split_rewrite_history(pipeline_factory):
    symbol, split_day = _symbol_with_split(D(2012, 1, 1), D(2016, 12, 31))
    pipe = pipeline_factory(source="synthetic")
    pipe.start("agent")
    pipe.start("processor")
    # Newest first: the range after the split, then the one holding it, then older years.
    after = (symbol, split_day + dt.timedelta(days=1), D(2017, 12, 31))
    holding = (symbol, split_day - dt.timedelta(days=90), split_day + dt.timedelta(days=1))
    older = (symbol, D(2008, 1, 1), split_day - dt.timedelta(days=91))
    for task in (after, holding, older):
        pipe.wait_tasks(pipe.send_tasks([task]))
    conn = pipe.connect()
    expected = SyntheticSource().fetch(symbol, D(2008, 1, 1), D(2017, 12, 31))
    assert assert_indicators_exact(conn, symbol) == len(expected)
    with conn.cursor() as cur:
        cur.execute("SELECT date, splits FROM prices WHERE symbol = %s AND splits > 0", (symbol,))
        stored_splits = dict(cur.fetchall())
    assert split_day in stored_splits

    # The same history fed in order in a fresh pipeline gives the very same indicator rows.
    fresh = pipeline_factory(source="synthetic")
    fresh.start("agent")
    fresh.start("processor")
    fresh.wait_tasks(fresh.send_tasks([(symbol, D(2008, 1, 1), D(2017, 12, 31))]))
    fresh_conn = fresh.connect()
    query = "SELECT * FROM indicators WHERE symbol = %s ORDER BY date"
    with conn.cursor() as a, fresh_conn.cursor() as b:
        a.execute(query, (symbol,))
        b.execute(query, (symbol,))
        rows_a, rows_b = a.fetchall(), b.fetchall()
    assert len(rows_a) == len(rows_b) == len(expected)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra[:2] == rb[:2]
        np.testing.assert_allclose(
            np.array(ra[2:], dtype=float), np.array(rb[2:], dtype=float), rtol=1e-9, atol=1e-9
        )


def test_state_saved_by_another_indicator_set_triggers_a_recompute(pipeline_factory):
    pipe = pipeline_factory(source="synthetic")
    pipe.start("agent")
    pipe.start("processor")
    pipe.wait_tasks(pipe.send_tasks([("STALE", D(2012, 1, 1), D(2012, 12, 31))]))
    conn = pipe.connect()
    with conn.cursor() as cur:  # as if an older release with other indicators had saved it
        cur.execute("SELECT state FROM indicator_state WHERE symbol = 'STALE'")
        state = msgspec.msgpack.decode(cur.fetchone()[0])
        state["spec"] = "old"
        cur.execute(
            "UPDATE indicator_state SET state = %s WHERE symbol = 'STALE'",
            (msgspec.msgpack.encode(state),),
        )
    pipe.wait_tasks(pipe.send_tasks([("STALE", D(2013, 1, 1), D(2013, 6, 30))]))
    expected = SyntheticSource().fetch("STALE", D(2012, 1, 1), D(2013, 6, 30))
    assert assert_indicators_exact(conn, "STALE") == len(expected)
    with conn.cursor() as cur:
        cur.execute("SELECT state FROM indicator_state WHERE symbol = 'STALE'")
        assert msgspec.msgpack.decode(cur.fetchone()[0])["spec"] != "old"


def test_history_without_a_saved_state_is_recomputed(pipeline_factory):
    pipe = pipeline_factory(source="synthetic")
    pipe.start("agent")
    pipe.start("processor")
    pipe.wait_tasks(pipe.send_tasks([("NOSTATE", D(2012, 1, 1), D(2012, 12, 31))]))
    conn = pipe.connect()
    with conn.cursor() as cur:  # what migration 0003 leaves behind for existing symbols
        cur.execute("UPDATE indicator_state SET state = NULL")
    pipe.wait_tasks(pipe.send_tasks([("NOSTATE", D(2013, 1, 1), D(2013, 3, 31))]))
    expected = SyntheticSource().fetch("NOSTATE", D(2012, 1, 1), D(2013, 3, 31))
    assert assert_indicators_exact(conn, "NOSTATE") == len(expected)
