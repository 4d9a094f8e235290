"""Asset checks: stock_indicators against the trading calendar and its value rules, and the
health of the work behind stock_prices (failed tasks, parked symbols).

The queries live in ``finpipe_manager.health``; ``pipeline_health`` is shared with the
stuck-task sensor, which reports the same check on every change without a run.
"""

from typing import Final

import dagster as dg

from finpipe_dagster.assets.market_data import stock_indicators, stock_prices
from finpipe_dagster.resources import ManagerResource, PostgresResource
from finpipe_manager.health import (
    EXAMPLES,
    PipelineHealth,
    find_calendar_gaps,
    find_nan_after_warmup,
    find_rsi_out_of_range,
    pipeline_health,
)

SYMBOLS_HEALTHY: Final = "symbols_healthy"


@dg.asset_check(asset=stock_indicators.key, name="no_calendar_gaps", blocking=False)
def no_calendar_gaps(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Every session between a symbol's first and last indicator row is stored, and only
    sessions are."""
    with postgres.connection() as conn:
        found = find_calendar_gaps(conn)
    bad = found["bad"]
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={
            "symbols_checked": dg.MetadataValue.int(found["symbols"]),
            "symbols_with_gaps": dg.MetadataValue.int(len(bad)),
            "examples": dg.MetadataValue.json(dict(list(bad.items())[:EXAMPLES])),
        },
    )


@dg.asset_check(asset=stock_indicators.key, name="rsi_in_range", blocking=False)
def rsi_in_range(postgres: PostgresResource) -> dg.AssetCheckResult:
    """RSI values lie within [0, 100]."""
    with postgres.connection() as conn:
        found = find_rsi_out_of_range(conn)
    return dg.AssetCheckResult(
        passed=not found["bad"],
        metadata={
            "rows_out_of_range": dg.MetadataValue.int(sum(found["bad"].values())),
            "examples": dg.MetadataValue.json(found["examples"]),
        },
    )


@dg.asset_check(asset=stock_indicators.key, name="no_nan_after_warmup", blocking=False)
def no_nan_after_warmup(postgres: PostgresResource) -> dg.AssetCheckResult:
    """No indicator is NULL or NaN once its warm-up (TA-Lib lookback) has passed."""
    # Imported here: the indicator engine (TA-Lib, numba) is only needed when the check runs.
    from finpipe_core.indicators import LOOKBACK

    with postgres.connection() as conn:
        found = find_nan_after_warmup(conn, dict(LOOKBACK))
    return dg.AssetCheckResult(
        passed=not found["bad"],
        metadata={
            "rows_with_nan": dg.MetadataValue.int(sum(found["bad"].values())),
            "columns_with_nan": dg.MetadataValue.json(found["bad"]),
            "examples": dg.MetadataValue.json(found["examples"]),
            "engine_columns_not_in_table": dg.MetadataValue.json(found["missing_columns"]),
        },
    )


# --- stock_prices: the work behind it ------------------------------------------------------


def health_metadata(health: PipelineHealth) -> dict[str, dg.MetadataValue]:
    """The check's metadata: counts as ints, examples as JSON."""
    return {
        key: dg.MetadataValue.int(value) if isinstance(value, int) else dg.MetadataValue.json(value)
        for key, value in health.summary().items()
    }


@dg.asset_check(asset=stock_prices.key, name=SYMBOLS_HEALTHY, blocking=False)
def symbols_healthy(postgres: PostgresResource, manager: ManagerResource) -> dg.AssetCheckResult:
    """No failed task, parked or failed symbol, or task stuck after repeated publishes."""
    with postgres.connection() as conn:
        health = pipeline_health(conn, timeout=manager.task_timeout)
    return dg.AssetCheckResult(passed=health.passed, metadata=health_metadata(health))


indicator_checks: Final = [no_calendar_gaps, rsi_in_range, no_nan_after_warmup]
all_checks: Final = [*indicator_checks, symbols_healthy]
