"""A report asset: the latest indicators of the active symbols as a table and a chart."""

from __future__ import annotations

import base64

import dagster as dg

from finpipe_dagster.constants import OWNERS, REPORTS, STOCK_INDICATORS
from finpipe_dagster.resources import PostgresResource
from finpipe_manager import report
from finpipe_manager.universe import active_symbols


@dg.asset(
    group_name=REPORTS,
    owners=OWNERS,
    kinds={"postgres", "python"},
    deps=[dg.AssetKey(STOCK_INDICATORS)],
)
def indicator_report(postgres: PostgresResource) -> dg.MaterializeResult:
    """Latest close, RSI and MACD per active symbol, with a chart of their recent history."""
    settings = postgres.settings()
    with postgres.connection() as conn:
        symbols = active_symbols(conn)
    rows = report.symbol_summaries(settings, symbols)
    png = report.overview_png(settings, [r.symbol for r in rows if r.bars][:10])
    chart = f"![recent closes and RSI](data:image/png;base64,{base64.b64encode(png).decode()})"
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(report.summary_markdown(rows)),
            "chart": dg.MetadataValue.md(chart),
            "symbols": dg.MetadataValue.int(len(rows)),
            "bars": dg.MetadataValue.int(sum(r.bars for r in rows)),
            "parked_or_failed": dg.MetadataValue.int(sum(r.status != "ok" for r in rows)),
        }
    )
