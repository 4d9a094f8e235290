"""Names used across finpipe's Dagster code: each group, tag and asset name typed once."""

from typing import Final

# Asset groups.
INGEST: Final = "ingest"  # the manager: fetch tasks published to Kafka
MARKET_DATA: Final = "market_data"  # tables the workers fill (external assets)
REPORTS: Final = "reports"  # summaries for people

# Asset names.
STOCK_TASKS: Final = "stock_tasks"
STOCK_PRICES: Final = "stock_prices"
STOCK_INDICATORS: Final = "stock_indicators"

OWNERS: Final = ["team:data-platform"]

# Run tag limited to one concurrent run by dagster_home/dagster.yaml (QueuedRunCoordinator):
# the outbox lock already makes overlapping manager runs safe; this just queues them.
MANAGER_CONCURRENCY_TAG: Final = "finpipe/manager"
