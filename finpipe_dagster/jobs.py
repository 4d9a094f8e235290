"""Jobs: the manager asset for scheduled runs, and the checks of the workers' tables."""

from __future__ import annotations

from typing import Final

import dagster as dg

from finpipe_dagster.assets import stock_indicators, stock_prices, stock_tasks
from finpipe_dagster.constants import MANAGER_CONCURRENCY_TAG, STOCK_TASKS

stock_tasks_job: Final = dg.define_asset_job(
    "stock_tasks_job",
    selection=dg.AssetSelection.assets(stock_tasks),
    tags={MANAGER_CONCURRENCY_TAG: STOCK_TASKS},
    description="Fetch tasks for one trading day (the daily schedule's job).",
)

market_data_checks_job: Final = dg.define_asset_job(
    "market_data_checks_job",
    selection=dg.AssetSelection.checks_for_assets(stock_prices.key, stock_indicators.key),
    description="Asset checks of stock_prices and stock_indicators.",
)
