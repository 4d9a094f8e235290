"""`finpipe revisions`, `finpipe chart --log` and the data-trust table of `finpipe status`,
run as a user runs them, on a scratch database."""

from __future__ import annotations

import datetime as dt

import pytest

from finpipe_core import contracts
from finpipe_manager.universe import UniverseEntry, sync_universe
from tests.test_finpipe.test_cli import finpipe
from workers.agent.main import chunk_messages
from workers.processor.batch import BatchWriter, InputMessage
from workers.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.integration

D = dt.date


@pytest.fixture
def private_db(pipeline_factory):
    pipe = pipeline_factory(source="synthetic")
    return pipe, pipe.settings.to_env()


def _apply(conn, bars, offset: int) -> None:
    task = contracts.FetchTask(
        schema_version=1,
        symbol=bars.symbol,
        start=bars.dates[0],
        end=bars.dates[-1],
        task_id=contracts.make_task_id(bars.symbol, bars.dates[0], bars.dates[-1], str(offset)),
    )
    messages = [
        InputMessage("t", 0, offset + i, bars.symbol.encode(), contracts.encode(m))
        for i, m in enumerate(chunk_messages(task, bars, 1000))
    ]
    BatchWriter(conn, "cli-trust", 900_000).apply(messages)
    conn.commit()


def test_revisions_status_and_log_chart(private_db, tmp_path):
    pipe, env = private_db
    conn = pipe.connect()
    conn.autocommit = False
    sync_universe(conn, [UniverseEntry("TRST", "T"), UniverseEntry("CLEN", "C")])
    conn.commit()
    bars = SyntheticSource().fetch("TRST", D(2012, 1, 1), D(2013, 12, 31))
    _apply(conn, bars, 0)
    _apply(conn, SyntheticSource().fetch("CLEN", D(2013, 6, 1), D(2013, 12, 31)), 10)
    window = bars.slice(len(bars) - 5, len(bars))
    window = type(window)(
        window.symbol,
        window.dates,
        window.open,
        window.high,
        window.low,
        window.close,
        window.adj_close,
        window.volume.copy() + 1000,
        window.dividends,
        window.splits,
        source=window.source,
    )
    _apply(conn, window, 20)

    result = finpipe("revisions", "TRST", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "TRST" in line and "volume" in line]
    assert len(lines) == 5 and all("rewritten" in line for line in lines)
    assert "no revisions" in finpipe("revisions", "CLEN", env=env).stdout

    status = finpipe("status", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    trst = [line for line in status.stdout.splitlines() if "TRST" in line][-1]
    clen = [line for line in status.stdout.splitlines() if "CLEN" in line][-1]
    # Two years of history: every converging indicator is warm; half a year: not EMA 50.
    assert "12/12 since" in trst and trst.rstrip(" │").endswith("5")
    assert "since" not in clen

    chart = finpipe("chart", "TRST", "--log", "--out", str(tmp_path), env=env)
    assert chart.returncode == 0, chart.stdout + chart.stderr
    assert (tmp_path / "TRST.png").read_bytes()[:4] == b"\x89PNG"
