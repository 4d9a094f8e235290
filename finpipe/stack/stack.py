"""``up``, ``down`` and ``status`` of the whole local stack."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from finpipe.stack import paths
from finpipe.stack.kafka import (
    admin_client,
    ensure_topics,
    is_broker,
    kafka_libs,
    kafka_single_node,
    start_nodes,
)
from finpipe.stack.postgres import PostgresCluster
from finpipe.stack.processes import ManagedProcess
from finpipe.stack.settings import StackSettings
from finpipe_core.db import apply_migrations

logger = logging.getLogger(__name__)

# ``down`` gives each process this long after SIGTERM before SIGKILL (dagster dev took 3-21 s
# to exit on the shared 2-core machine; workers finish their open batch first).
STOP_TIMEOUT_S = 30.0


class StackDownError(RuntimeError):
    """A service the command needs is not reachable (the CLI prints it in plain words)."""


@dataclass
class StackReport:
    """What ``up`` did: an empty ``changes`` list means everything was already in place."""

    changes: list[str] = field(default_factory=list)
    kafka_ready_seconds: float = 0.0
    total_seconds: float = 0.0


def up(settings: StackSettings) -> StackReport:
    """Fetch the jars, start Kafka and PostgreSQL, create topics, apply migrations.

    Idempotent: on a running, up-to-date stack it changes nothing and says so.
    """
    t0 = time.monotonic()
    report = StackReport()
    kafka_libs(settings)

    pg = PostgresCluster(settings)
    if pg.init():
        report.changes.append("initialised PostgreSQL cluster")
    if pg.start():
        report.changes.append(f"started PostgreSQL on {settings.pg_host}:{settings.pg_port}")
    report.changes += [f"created {what}" for what in pg.ensure_role_and_databases()]

    started, report.kafka_ready_seconds = start_nodes(settings, [kafka_single_node(settings)])
    report.changes += [f"started {name} on {settings.kafka_bootstrap_servers}" for name in started]
    report.changes += [f"created topic {t}" for t in ensure_topics(settings)]
    report.changes += [f"applied migration {m}" for m in apply_migrations(settings)]
    report.total_seconds = time.monotonic() - t0
    return report


def managed_processes(settings: StackSettings) -> list[ManagedProcess]:
    """Every background process finpipe has started (workers, dagster, brokers)."""
    run = paths.run_dir(settings)
    return (
        [
            ManagedProcess(pid_file.stem, run, paths.log_dir(settings))
            for pid_file in sorted(run.glob("*.pid"))
        ]
        if run.exists()
        else []
    )


def down(settings: StackSettings) -> list[str]:
    """Stop everything finpipe started here; return what was stopped."""
    stopped = []
    # Workers and Dagster first, so they do not log connection errors while brokers stop.
    for proc in sorted(managed_processes(settings), key=lambda p: is_broker(p.name)):
        if proc.stop(timeout=STOP_TIMEOUT_S):
            stopped.append(proc.name)
    if PostgresCluster(settings).stop():
        stopped.append("postgres")
    return stopped


def status(settings: StackSettings) -> dict[str, str]:
    """Component -> one line of state, for ``finpipe status`` and health checks."""
    result: dict[str, str] = {"state dir": str(paths.state_dir(settings))}
    pg = PostgresCluster(settings)
    result["postgres"] = (
        f"running on {settings.pg_host}:{settings.pg_port}"
        if pg.running()
        else "stopped (run: make up)"
    )
    node = kafka_single_node(settings)
    if node.running(settings):
        try:
            md = admin_client(settings).list_topics(timeout=5)
            topics = [
                t
                for t in (settings.tasks_topic, settings.data_topic, settings.dlq_topic)
                if t in md.topics
            ]
            result["kafka"] = (
                f"running on {settings.kafka_bootstrap_servers}, "
                f"topics: {', '.join(topics) or 'none'}"
            )
        except Exception as exc:  # status reports, it does not fail
            result["kafka"] = f"process up but not answering: {exc}"
    else:
        result["kafka"] = "stopped (run: make up)"
    for proc in managed_processes(settings):
        if proc.name != node.name:
            result[proc.name] = f"running, pid {proc.pid()}" if proc.running() else "stopped"
    return result
