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
# Dagster pool of the manager asset; dagster_home/dagster.yaml limits every pool to one slot,
# so manager runs go one at a time however they are launched (CLI runs included).
MANAGER_POOL: Final = "finpipe_manager"

# A range run records one materialisation per partition. Dagster writes them one at a time
# (two new PostgreSQL connections each) unless these are set; every process that loads the
# code location (the CLI, run workers, code servers) picks them up here. The webserver and the
# daemon create runs too: `finpipe demo` passes them in their environment (`finpipe dev` should):
# - DAGSTER_EVENT_BATCH_SIZE: store a run's asset events in batches;
# - DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS: one "planned" event per range run rather
#   than one per partition (a failed range run then does not mark its partitions failed).
DAGSTER_EVENT_ENV: Final[dict[str, str]] = {
    "DAGSTER_EVENT_BATCH_SIZE": "2000",
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "true",
}
