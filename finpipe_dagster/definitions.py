"""The finpipe code location: the one place ``dg.Definitions`` is built.

Found by ``dagster dev`` through ``[tool.dagster] module_name`` in pyproject.toml and by
``workspace.yaml``; the CLI loads it with ``-m finpipe_dagster.definitions``.
"""

from __future__ import annotations

import os

import dagster as dg

from finpipe_dagster.assets import indicator_report, stock_indicators, stock_prices, stock_tasks
from finpipe_dagster.checks import all_checks
from finpipe_dagster.constants import DAGSTER_EVENT_ENV
from finpipe_dagster.jobs import market_data_checks_job, stock_tasks_job
from finpipe_dagster.quality_checks import quality_checks
from finpipe_dagster.resources import default_resources
from finpipe_dagster.schedules import build_checks_schedule, build_stock_tasks_schedule
from finpipe_dagster.sensors import build_completion_sensor, build_stuck_tasks_sensor

# Batched event writes for every process that loads this code location (see constants).
for _name, _value in DAGSTER_EVENT_ENV.items():
    os.environ.setdefault(_name, _value)

defs = dg.Definitions(
    assets=[stock_tasks, stock_prices, stock_indicators, indicator_report],
    asset_checks=[*all_checks, *quality_checks],
    jobs=[stock_tasks_job, market_data_checks_job],
    schedules=[
        build_stock_tasks_schedule(stock_tasks_job),
        build_checks_schedule(market_data_checks_job),
    ],
    sensors=[build_completion_sensor(), build_stuck_tasks_sensor()],
    resources=default_resources(),
    # Every job here is one short step (or only checks): a step subprocess would cost more
    # (re-importing the code location) than it could ever save.
    executor=dg.in_process_executor,
)
