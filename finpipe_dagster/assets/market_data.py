"""External assets: the tables the processors fill, reported by the completion sensor."""

from __future__ import annotations

import dagster as dg

from finpipe_dagster.constants import (
    MARKET_DATA,
    OWNERS,
    STOCK_INDICATORS,
    STOCK_PRICES,
    STOCK_TASKS,
)
from finpipe_dagster.partitions import trading_day_partitions

stock_prices = dg.AssetSpec(
    STOCK_PRICES,
    description="Daily bars of every active symbol in PostgreSQL table prices.",
    deps=[dg.AssetKey(STOCK_TASKS)],
    group_name=MARKET_DATA,
    kinds={"postgres"},
    owners=OWNERS,
    partitions_def=trading_day_partitions,
    metadata={"table": "prices"},
)

stock_indicators = dg.AssetSpec(
    STOCK_INDICATORS,
    description="Technical indicators of every active symbol in PostgreSQL table indicators.",
    deps=[stock_prices],
    group_name=MARKET_DATA,
    kinds={"postgres"},
    owners=OWNERS,
    partitions_def=trading_day_partitions,
    metadata={"table": "indicators"},
)
