"""The warm-up marker for users: which stored indicator values still depend on where a symbol's
history starts (``CONVERGENCE_BARS`` in the indicator registry; the ``indicators_warm`` view
holds the same per row). Dagster-free; read by ``finpipe status`` and the charts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg2.extensions

from finpipe_core.indicators.registry import CONVERGENCE_BARS

# Bar number from which every indicator that ever converges is warm.
ALL_WARM_BARS = max(n for n in CONVERGENCE_BARS.values() if n is not None)


@dataclass(frozen=True, slots=True)
class WarmUp:
    """A symbol's warm-up: how many indicators are warm at its last bar, and from when all
    the converging ones are (None: not yet)."""

    symbol: str
    bars: int
    warm: int
    converging: int  # indicators that converge at all (OBV never does)
    all_warm_from: dt.date | None

    @property
    def label(self) -> str:
        since = f" since {self.all_warm_from}" if self.all_warm_from else ""
        return f"{self.warm}/{self.converging}{since}"


def warm_indicators(bars: int) -> list[str]:
    """The indicator keys whose value at bar number ``bars`` is warm."""
    return [k for k, n in CONVERGENCE_BARS.items() if n is not None and bars >= n]


def warm_ups(conn: psycopg2.extensions.connection, symbols: Sequence[str]) -> list[WarmUp]:
    """The warm-up of each of ``symbols`` (one index lookup each)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT s, (SELECT count(*) FROM indicators WHERE symbol = s), "
            "(SELECT date FROM indicators WHERE symbol = s ORDER BY date OFFSET %s LIMIT 1) "
            "FROM unnest(%s::text[]) AS s ORDER BY s",
            (ALL_WARM_BARS - 1, list(symbols)),
        )
        rows = cur.fetchall()
    conn.rollback()
    converging = sum(n is not None for n in CONVERGENCE_BARS.values())
    return [WarmUp(s, n, len(warm_indicators(n)), converging, d) for s, n, d in rows]
