"""New rows COPYed in the background while the batch goes on: the result is the same as one
COPY at the end, whatever else the batch does between two background COPYs (a split's
rewrite, a re-sent task compared with stored rows, a message that is dead-lettered), and a
background COPY that fails fails the batch instead of being lost.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import psycopg2
import pytest

from finpipe_core.db.bulk import copy_rows, pack_rows
from tests.fixtures.batches import GROUP, Feed, raw_bars, symbol_outcome
from workers.processor import batch as batch_module
from workers.processor.batch import PRICE_COLUMNS, BatchWriter
from workers.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.integration
D = dt.date
# BG10 splits on 2011-04-25, BG16 on 2011-05-24: their 2011 messages rewrite stored history.
SYMBOLS = ("BG10", "BG16", "BG01", "BG02")


@pytest.fixture
def every_message_in_background(monkeypatch):
    started = []
    real_start = batch_module.BackgroundCopy.start

    def counting_start(self, copies):
        started.append(sum(len(p) for _, _, packed in copies for p in packed))
        real_start(self, copies)

    monkeypatch.setattr(batch_module, "BACKGROUND_COPY_BYTES", 1)
    monkeypatch.setattr(batch_module.BackgroundCopy, "start", counting_start)
    return started


def test_background_copies_give_the_fresh_computation(
    scratch,
    every_message_in_background,
    caplog,
):
    settings, conn = scratch
    feed = Feed()
    source = SyntheticSource()

    def year_messages(year: int) -> list:
        start, end = D(year, 1, 1), D(year, 12, 31)
        return [m for s in SYMBOLS for m in feed.messages(source.fetch(s, start, end), 100)]

    # Batch 1: two years per symbol, symbols interleaved, 100-bar messages, a bad message.
    first = year_messages(2009) + year_messages(2010)
    days = source.fetch("BADX", D(2010, 1, 1), D(2010, 3, 31)).dates
    bad = raw_bars("BADX", days, [1e300] * len(days), [1.0] * len(days), [0.0] * len(days))
    first[len(first) // 2 : len(first) // 2] = feed.messages(bad)
    # Batch 2: BG10's and BG16's splits rewrite their stored history; a re-sent 2010 task of
    # BG01 is compared with the stored rows and skipped; background COPYs run in between.
    second = year_messages(2011) + feed.messages(
        source.fetch("BG01", D(2010, 1, 1), D(2010, 12, 31))
    )
    second += year_messages(2012)
    caplog.set_level(logging.INFO, logger="workers.processor.batch")
    writer_results = []
    for batch in (first, second):
        every_message_in_background.clear()
        writer_results.append(BatchWriter(conn, GROUP, settings.max_message_bytes).apply(batch))
        conn.commit()
        assert len(every_message_in_background) >= 4, "rows were not COPYed in the background"

    rewritten = {r.args[0] for r in caplog.records if "history rewritten" in r.msg}
    assert rewritten == {"BG10", "BG16"}
    assert [d.message.key for d in writer_results[0].dead_letters] == [b"BADX"]
    assert not writer_results[1].dead_letters
    assert {s: symbol_outcome(conn, s) for s in (*SYMBOLS, "BADX")} == {
        **dict.fromkeys(SYMBOLS, "exact"),
        "BADX": "parked",
    }
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM prices WHERE symbol = 'BG01'")
        assert cur.fetchone()[0] == len(source.fetch("BG01", D(2009, 1, 1), D(2012, 12, 31)))
        cur.execute("SELECT count(*) FROM revisions WHERE symbol = 'BG01'")
        assert cur.fetchone()[0] == 0


def test_a_failed_background_copy_fails_the_batch(scratch, every_message_in_background):
    """A row written behind the processor's back collides with an append: the batch raises
    (the processor then retries it message by message); nothing is overwritten."""
    settings, conn = scratch
    feed = Feed()
    bars = SyntheticSource().fetch("BG02", D(2015, 1, 1), D(2015, 6, 30))
    with conn.cursor() as cur:
        planted = [np.ones(1) for _ in PRICE_COLUMNS]
        copy_rows(
            cur,
            "prices",
            ("symbol", "date", *PRICE_COLUMNS),
            [pack_rows("BG02", [bars.dates[100]], planted)],
        )
    conn.commit()
    messages = feed.messages(bars, per_message=50) + feed.messages(
        SyntheticSource().fetch("BG01", D(2015, 1, 1), D(2015, 6, 30)), per_message=50
    )
    with pytest.raises(psycopg2.errors.UniqueViolation):
        BatchWriter(conn, GROUP, settings.max_message_bytes).apply(messages)
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), min(close) FROM prices WHERE symbol IN ('BG01', 'BG02')")
        assert cur.fetchone() == (1, 1.0)
