"""Stuck-task sensor: publish again the tasks left pending/published past a timeout, and keep
the ``symbols_healthy`` check of stock_prices up to date (failed tasks, parked symbols).

Each tick republishes at most ``limit`` tasks (``attempts`` counts publishes; tasks published
``max_attempts`` times are reported instead of sent again), records an observation of
stock_prices when it did, and emits a ``symbols_healthy`` check evaluation whenever the health
report differs from the previous tick's (its fingerprint is the cursor).
"""

import datetime as dt
import hashlib
import json
from typing import Final

import dagster as dg

from finpipe_dagster.checks import SYMBOLS_HEALTHY, health_metadata
from finpipe_dagster.constants import STOCK_PRICES
from finpipe_dagster.resources import KafkaProducerResource, ManagerResource, PostgresResource
from finpipe_manager.health import MAX_PUBLISH_ATTEMPTS, pipeline_health
from finpipe_manager.outbox import republish_stale

# Tasks republished per tick: one tick stays well under a minute even on a slow broker.
REPUBLISH_LIMIT: Final = 1_000
EXAMPLES: Final = 10


def build_stuck_tasks_sensor(
    *,
    name: str = "stuck_tasks_sensor",
    timeout: dt.timedelta | None = None,
    max_attempts: int = MAX_PUBLISH_ATTEMPTS,
    limit: int = REPUBLISH_LIMIT,
    minimum_interval_seconds: int = 300,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The stuck-task sensor (see the module docstring).

    :param timeout: age after which an open task is sent again; settings by default
        (FINPIPE_TASK_TIMEOUT_SECONDS).
    """

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Republishes stuck fetch tasks; reports failed tasks and parked symbols.",
    )
    def stuck_tasks_sensor(
        context: dg.SensorEvaluationContext,
        postgres: PostgresResource,
        kafka: KafkaProducerResource,
        manager: ManagerResource,
    ) -> dg.SensorResult:
        age = timeout or manager.task_timeout
        previous = json.loads(context.cursor) if context.cursor else {}
        with postgres.connection() as conn:
            with kafka.producer() as producer:
                report = republish_stale(
                    conn,
                    producer,
                    kafka.topic,
                    older_than=age,
                    max_attempts=max_attempts,
                    limit=limit,
                )
            health = pipeline_health(conn, timeout=age, max_attempts=max_attempts)
        events: list[dg.AssetObservation | dg.AssetCheckEvaluation] = []
        if report.published or report.failed:
            context.log.warning(
                f"republished {len(report.published)} stuck tasks, {len(report.failed)} failed"
            )
            events.append(
                dg.AssetObservation(
                    asset_key=STOCK_PRICES,
                    metadata={
                        "republished_tasks": dg.MetadataValue.int(len(report.published)),
                        "undelivered_tasks": dg.MetadataValue.int(len(report.failed)),
                        "examples": dg.MetadataValue.json(report.published[:EXAMPLES]),
                        "timeout_seconds": dg.MetadataValue.int(int(age.total_seconds())),
                    },
                )
            )
        fingerprint = hashlib.sha256(health.fingerprint().encode()).hexdigest()[:16]
        if fingerprint != previous.get("health"):
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey(STOCK_PRICES),
                    check_name=SYMBOLS_HEALTHY,
                    passed=health.passed,
                    metadata=health_metadata(health),
                    severity=dg.AssetCheckSeverity.ERROR,
                )
            )
        cursor = json.dumps({"health": fingerprint})
        if not events:
            return dg.SensorResult(
                cursor=cursor, skip_reason=dg.SkipReason("no stuck task, health unchanged")
            )
        return dg.SensorResult(asset_events=events, cursor=cursor)

    return stuck_tasks_sensor
