"""Consecutive messages of one symbol in a batch are appended with one engine call: the
stored rows and state equal applying them one batch each (and a fresh computation), a split
among them is adjusted before anything is written, and a bad message among them is
dead-lettered exactly as it would be on its own."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pytest

from tests.fixtures.batches import GROUP, Feed, raw_bars, symbol_outcome
from workers.processor.batch import BatchWriter
from workers.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.integration
D = dt.date


def _stored(conn, symbol: str) -> tuple:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM prices WHERE symbol = %s ORDER BY date", (symbol,))
        prices = cur.fetchall()
        cur.execute("SELECT * FROM indicators WHERE symbol = %s ORDER BY date", (symbol,))
        indicators = [row[1:] for row in cur.fetchall()]
        cur.execute(
            "SELECT last_date, bars_seen, state FROM indicator_state WHERE symbol = %s", (symbol,)
        )
        state = cur.fetchone()
    return [row[1:] for row in prices], indicators, (state[0], state[1], bytes(state[2]))


def test_a_run_with_a_split_equals_one_batch_per_message(scratch, caplog):
    settings, conn = scratch
    caplog.set_level(logging.INFO, logger="workers.processor.batch")
    # BG10 splits 1.5:1 on 2011-04-25, in the 5th of its 100-bar messages from 2010.
    bars = SyntheticSource().fetch("BG10", D(2010, 1, 1), D(2011, 12, 31))
    together = Feed().messages(bars, per_message=100)
    result = BatchWriter(conn, GROUP, settings.max_message_bytes).apply(together)
    conn.commit()
    assert result.bars_stored == len(bars)
    assert not [r for r in caplog.records if "history rewritten" in r.msg]
    as_one_run = _stored(conn, "BG10")
    assert symbol_outcome(conn, "BG10") == "exact"

    with conn.cursor() as cur:
        for table in ("prices", "indicators", "indicator_state"):
            cur.execute(f"DELETE FROM {table} WHERE symbol = 'BG10'")
    conn.commit()
    for message in Feed().messages(bars, per_message=100):  # one batch each
        BatchWriter(conn, GROUP, settings.max_message_bytes).apply([message])
        conn.commit()
    assert [r.args[0] for r in caplog.records if "history rewritten" in r.msg] == ["BG10"]
    assert _stored(conn, "BG10") == as_one_run


def test_a_bad_message_in_a_run_is_dead_lettered_alone(scratch):
    settings, conn = scratch
    good = SyntheticSource().fetch("RUNA", D(2012, 1, 1), D(2012, 12, 31))
    feed = Feed()
    messages = feed.messages(good.slice(0, 150), per_message=50)  # offsets 0-2
    bad_days = good.dates[150:160]
    messages += feed.messages(  # offset 3: prices the engine refuses
        raw_bars("RUNA", bad_days, [1e300] * 10, [1.0] * 10, [0.0] * 10)
    )
    messages += feed.messages(good.slice(160, 250), per_message=50)  # offsets 4-5: held

    result = BatchWriter(conn, GROUP, settings.max_message_bytes).apply(messages)
    conn.commit()

    assert [d.message.offset for d in result.dead_letters] == [3]
    assert result.parked == 2
    assert symbol_outcome(conn, "RUNA") == "parked"
    with conn.cursor() as cur:
        cur.execute("SELECT date, close FROM prices WHERE symbol = 'RUNA' ORDER BY date")
        rows = cur.fetchall()
        cur.execute("SELECT count(*) FROM indicators WHERE symbol = 'RUNA'")
        indicator_rows = cur.fetchone()[0]
        cur.execute('SELECT array_agg("offset" ORDER BY "offset") FROM parked_bars')
        held = cur.fetchone()[0]
    assert [r[0] for r in rows] == good.dates[:150]
    assert np.array_equal([r[1] for r in rows], good.close[:150])
    assert indicator_rows == 150
    assert held == [4, 5]
