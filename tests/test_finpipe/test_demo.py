"""`finpipe demo` (the README's `make demo`) end to end, on private topics and a scratch
database, then a second run that emits nothing new."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from finpipe.stack import paths
from finpipe.stack.local_workers import worker_names
from finpipe.stack.processes import ManagedProcess
from tests.fixtures.pipeline import assert_indicators_exact
from workers.sources.sample import SampleSource

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEMO_SYMBOLS = ["AAPL", "FB", "GOOG", "IBM", "MSFT"]


def _run_demo(env: dict[str, str], out) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "finpipe.cli", "demo", "--out", str(out)],
        cwd=paths.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_demo_end_to_end_and_again(pipeline_factory, tmp_path):
    pipe = pipeline_factory(source="sample")  # private topics, groups and database
    settings = pipe.settings.model_copy(update={"universe": "sample"})
    env = {**os.environ, **settings.to_env(), "COLUMNS": "160"}
    try:
        out = tmp_path / "demo"
        first = _run_demo(env, out)
        second = _run_demo(env, out)
    finally:
        for kind in ("agent", "processor"):
            for name in worker_names(settings, kind, 1):
                ManagedProcess(name, paths.run_dir(settings), paths.log_dir(settings)).stop(60)

    # Rows in the tables: every sample bar of every symbol, indicators exact.
    conn = pipe.connect()
    source = SampleSource()
    for symbol in DEMO_SYMBOLS:
        expected = source.fetch(symbol, *_span())
        assert assert_indicators_exact(conn, symbol) == len(expected)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM tasks WHERE status NOT IN ('done', 'no_data')")
        assert cur.fetchone()[0] == 0

    # What it printed: the summary table with every symbol and its last close.
    for symbol in DEMO_SYMBOLS:
        assert symbol in first
    last_ibm = source.fetch("IBM", *_span()).close[-1]
    assert f"{last_ibm:,.2f}" in first
    assert "tasks emitted: 0" not in first
    assert "tasks emitted: 0 (nothing new to fetch" in second

    # A valid PNG per symbol, and the summary CSV.
    import matplotlib.image

    for symbol in DEMO_SYMBOLS:
        png = out / "charts" / f"{symbol}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(png)
        assert pixels.shape[0] > 400 and pixels.shape[1] > 600
        assert np.std(pixels) > 0.05  # not a blank image
    lines = (out / "summary.csv").read_text().splitlines()
    assert lines[0].startswith("symbol,") and len(lines) == 1 + len(DEMO_SYMBOLS)


def _span():
    from finpipe.demo import DEMO_END, DEMO_START

    return DEMO_START, DEMO_END
