"""Charts: the log price scale and the shaded warm-up, drawn from real tables."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import matplotlib.dates
import matplotlib.figure
import psycopg2.extensions
import pytest
from psycopg2.extras import execute_values

from finpipe_core.calendar import trading_days
from finpipe_core.indicators.registry import CONVERGENCE_BARS
from finpipe_core.settings import Settings
from finpipe_manager.report import render_chart

pytestmark = pytest.mark.integration

DAYS = trading_days(dt.date(2010, 1, 4), dt.date(2011, 12, 30))


@pytest.mark.parametrize("log_scale", [False, True])
def test_chart_scale_and_warm_up(
    clean_db: psycopg2.extensions.connection,
    local_stack: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    log_scale: bool,
) -> None:
    with clean_db, clean_db.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO prices (symbol, date, open, high, low, close, adj_close, volume) "
            "VALUES %s",
            [
                ("AAPL", d, p, p, p, p, p, 1000.0)
                for d, p in ((d, 10 * 1.01**i) for i, d in enumerate(DAYS))
            ],
        )
        execute_values(
            cur,
            "INSERT INTO indicators (symbol, date, rsi_14, bb_middle) VALUES %s",
            [("AAPL", d, 50.0, 10.0) for d in DAYS],
        )
    figures: list[matplotlib.figure.Figure] = []
    save = matplotlib.figure.Figure.savefig

    def keep(fig: matplotlib.figure.Figure, *args: object, **kwargs: object) -> None:
        figures.append(fig)
        save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    path = render_chart(local_stack, "AAPL", tmp_path, log_scale=log_scale)
    assert path.stat().st_size > 10_000
    price, rsi, macd = figures[0].axes
    assert price.get_yscale() == ("log" if log_scale else "linear")
    assert rsi.get_yscale() == "linear"
    # Each panel shades its indicator's warm-up: from the first bar to the marker.
    for ax, key in ((price, "bbands_20"), (rsi, "rsi_14"), (macd, "macd")):
        (span,) = ax.patches
        x0, x1 = span.get_x(), span.get_x() + span.get_width()
        warm_day = DAYS[CONVERGENCE_BARS[key] - 1]
        assert (x0, x1) == pytest.approx(tuple(matplotlib.dates.date2num([DAYS[0], warm_day]))), key
