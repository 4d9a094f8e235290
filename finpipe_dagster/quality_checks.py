"""Asset checks of stock_prices for suspicious bars (``finpipe_manager.quality`` decides).

One scan of the stored bars answers all five checks, so they are one multi-asset check with a
result each. A failing check is a warning: the bars stay as the source gave them, and the
metadata names each offending symbol with its dates, so a user can decide whether a move was
real before trusting the indicators over it.
"""

from collections.abc import Iterator
from typing import Final

import dagster as dg

from finpipe_dagster.assets.market_data import stock_prices
from finpipe_dagster.resources import PostgresResource
from finpipe_manager import quality

# Symbols, and dates per symbol, listed in a check's metadata.
SYMBOLS_LISTED: Final = 50
DATES_LISTED: Final = 20

DESCRIPTIONS: Final = {
    quality.SPLIT_JUMP: "No close-to-close move matching a split ratio without a split event.",
    quality.UNIT_JUMP: "No ~100x move that reverts (a unit error: cents for dollars).",
    quality.NAN_PRICE: "No NaN price on a bar with volume.",
    quality.ZERO_VOLUME: f"No run of {quality.ZERO_VOLUME_RUN}+ bars without volume.",
    quality.MISSING_SESSIONS: "No NYSE session missing inside a symbol's stored range.",
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name=name, asset=stock_prices.key, description=text, blocking=False)
        for name, text in DESCRIPTIONS.items()
    ],
    name="suspicious_bars",
)
def suspicious_bars(postgres: PostgresResource) -> Iterator[dg.AssetCheckResult]:
    """Scan every stored bar once and report each suspicious-data check."""
    with postgres.connection() as conn:
        report = quality.scan(conn)
    for name in DESCRIPTIONS:
        found = report.findings[name]
        yield dg.AssetCheckResult(
            asset_key=stock_prices.key,
            check_name=name,
            passed=not found,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "symbols_scanned": dg.MetadataValue.int(report.symbols),
                "bars_scanned": dg.MetadataValue.int(report.bars),
                "symbols_flagged": dg.MetadataValue.int(len(found)),
                "dates_flagged": dg.MetadataValue.int(sum(len(d) for d in found.values())),
                "offending_dates": dg.MetadataValue.json(
                    {
                        symbol: [d.isoformat() for d in dates[:DATES_LISTED]]
                        for symbol, dates in sorted(found.items())[:SYMBOLS_LISTED]
                    }
                ),
            },
        )


quality_checks: Final = [suspicious_bars]
