"""Revisions end to end through the outbox, Kafka, the agents and the processors.

A yfinance-layout CSV source plays Yahoo: it first serves AAPL's real bars around its 2005
split *without* the split and with a volume it later revises; the suspicious-data check flags
the missed split. Then the file is corrected (the split on its ex-date, the volume revised),
the daily run requests the next session plus the revision window, and the pipeline picks the
corrections up: the revision log names each change and its task, the tables equal a fresh
computation, and the check passes. A correction of an unchanged window writes no row.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest

from finpipe_core.calendar import trading_days
from finpipe_manager import quality
from finpipe_manager.outbox import emit_tasks, make_producer, publish_pending
from finpipe_manager.revision_window import enqueue_corrections
from tests.fixtures.pipeline import assert_indicators_exact
from workers.sources.sample import SampleSource

pytestmark = pytest.mark.integration

D = dt.date
SPLIT_DAY = D(2005, 2, 28)  # AAPL 2:1


def write_csv(path: Path, end: dt.date, *, split: bool, revised: dict[dt.date, float]) -> None:
    """AAPL from 2004-06-01 to ``end`` in yfinance's layout: split-adjusted when ``split``
    (then the split is on its ex-date), else the raw prices without the split event."""
    b = SampleSource().fetch("AAPL", D(2004, 6, 1), end)
    factor = np.where(np.array(b.dates) < SPLIT_DAY, 2.0, 1.0) if split else np.ones(len(b))
    lines = ["Date,Open,High,Low,Close,Adj Close,Volume,Dividends,Stock Splits"]
    for i, day in enumerate(b.dates):
        volume = revised.get(day, b.volume[i])
        ratio = 2.0 if split and day == SPLIT_DAY else 0.0
        f = float(factor[i])
        values = [
            b.open[i] / f,
            b.high[i] / f,
            b.low[i] / f,
            b.close[i] / f,
            b.adj_close[i],
            volume * f,
            0.0,
            ratio,
        ]
        lines.append(",".join([str(day), *(repr(float(v)) for v in values)]))
    path.write_text("\n".join(lines) + "\n")
    st = path.stat()  # a later mtime even within the filesystem's time resolution
    os.utime(path, (st.st_atime, st.st_mtime + 1))


def wait_all(pipe, conn) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT task_id FROM tasks")
        ids = [r[0] for r in cur.fetchall()]
    pipe.wait_tasks(ids)


def row_versions(conn) -> list:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 'p', date, xmin::text FROM prices UNION ALL "
            "SELECT 'i', date, xmin::text FROM indicators ORDER BY 1, 2"
        )
        return cur.fetchall()


def test_late_split_and_revised_volume_through_the_pipeline(pipeline_factory, tmp_path):
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    pipe = pipeline_factory(source="csv")
    pipe.start("agent", FINPIPE_CSV_DIR=str(csv_dir))
    pipe.start("processor")
    conn = pipe.connect()
    with conn.cursor() as cur:
        cur.execute("INSERT INTO symbols (symbol) VALUES ('AAPL')")
    s = pipe.settings
    sessions = trading_days(D(2004, 6, 1), D(2005, 3, 31))
    first_end = sessions[sessions.index(SPLIT_DAY) + 2]  # two sessions after the split
    revised_day = sessions[sessions.index(SPLIT_DAY) - 1]

    # Day 1: the source misses the split.
    write_csv(csv_dir / "AAPL.csv", first_end, split=False, revised={})
    producer = make_producer(s)
    report = emit_tasks(
        conn, producer, s.tasks_topic, ["AAPL"], D(2004, 6, 1), first_end, requested_by="run-1"
    )
    assert report.publish.ok
    wait_all(pipe, conn)
    flagged = quality.scan(conn)
    assert flagged.findings[quality.SPLIT_JUMP] == {"AAPL": [SPLIT_DAY]}

    # Day 2: the source now has the split, a revised volume for the day before it, and the
    # new session. The daily run requests that session and the revision window before it.
    day2 = sessions[sessions.index(first_end) + 1]
    old_volume = SampleSource().fetch("AAPL", revised_day, revised_day).volume[0]
    write_csv(csv_dir / "AAPL.csv", day2, split=True, revised={revised_day: old_volume + 1e6})
    corrections = enqueue_corrections(conn, ["AAPL"], day2, window_sessions=5)
    assert [(t.start, t.end) for t in corrections] == [
        (sessions[sessions.index(day2) - 5], first_end)
    ]
    emit_tasks(conn, producer, s.tasks_topic, ["AAPL"], day2, day2, requested_by="run-2")
    wait_all(pipe, conn)

    with conn.cursor() as cur:
        cur.execute(
            "SELECT date, columns, old_values, new_values, task_id FROM revisions ORDER BY date"
        )
        log = cur.fetchall()
    assert log == [
        (
            revised_day,
            ["volume"],
            {"volume": old_volume},
            {"volume": old_volume + 1e6},
            corrections[0].task_id,
        ),
        (SPLIT_DAY, ["splits"], {"splits": 0.0}, {"splits": 2.0}, corrections[0].task_id),
    ]
    bars = assert_indicators_exact(conn, "AAPL")
    assert bars == len(trading_days(D(2004, 6, 1), day2))
    assert quality.scan(conn).findings[quality.SPLIT_JUMP] == {}

    # The same day's run again: the correction exists already, nothing is enqueued.
    assert enqueue_corrections(conn, ["AAPL"], day2, window_sessions=5) == []
    # Day 3 with nothing revised at the source: the correction is fetched and changes no row.
    day3 = sessions[sessions.index(day2) + 1]
    write_csv(csv_dir / "AAPL.csv", day3, split=True, revised={revised_day: old_volume + 1e6})
    before = row_versions(conn)
    again = enqueue_corrections(conn, ["AAPL"], day3, window_sessions=5)
    assert len(again) == 1
    assert publish_pending(conn, producer, s.tasks_topic).ok
    wait_all(pipe, conn)
    assert row_versions(conn) == before
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM revisions")
        assert cur.fetchone()[0] == 2
        cur.execute("SELECT status FROM tasks WHERE task_id = %s", (again[0].task_id,))
        assert cur.fetchone()[0] == "done"
