"""finpipe's assets: the manager's fetch tasks and the tables the workers fill."""

from finpipe_dagster.assets.market_data import stock_indicators, stock_prices
from finpipe_dagster.assets.report import indicator_report
from finpipe_dagster.assets.stock_tasks import StockTasksConfig, stock_tasks

__all__ = [
    "StockTasksConfig",
    "indicator_report",
    "stock_indicators",
    "stock_prices",
    "stock_tasks",
]
