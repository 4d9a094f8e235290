"""Fixtures of the fault tests: a private 3-broker KRaft cluster, a private PostgreSQL cluster
that may be stopped, and pipelines (private topics, groups, database, worker processes) on
any of them. Nothing here touches the shared local stack beyond creating and dropping its own
topics and databases; everything started here is stopped in teardown."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka.admin import AdminClient
from psycopg2 import sql

from finpipe import stack
from finpipe.stack.paths import postgres_can_enter
from finpipe.stack.postgres import PostgresCluster
from finpipe_core.db import apply_migrations
from finpipe_core.settings import Settings
from tests.fixtures import kafka_nodes
from tests.fixtures.pipeline import Pipeline

# The fault-test Kafka cluster gets its own ports (brokers 19401-19403, controllers
# 19411-19413) and state dir, so it never meets the shared broker, the security tests' SASL
# node or tests/test_finpipe/test_kafka_cluster.py's cluster (19101-19103) run at the same time.
CLUSTER_BASE_PORT = 19400
# The private PostgreSQL cluster's port (the shared one is 15432).
SCRATCH_PG_PORTS = range(15442, 15452)


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def pytest_terminal_summary(terminalreporter) -> None:
    from faultkit import FIGURES

    if FIGURES:
        terminalreporter.section("fault-test figures (docs/reliability.md)")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def kafka_cluster(settings: Settings, tmp_path_factory) -> Iterator[Settings]:
    """A 3-node KRaft cluster (broker + controller per node) on private ports and state.

    Yields settings whose bootstrap servers list all three brokers; the nodes are stopped
    (SIGTERM together, SIGKILL after 30 s) in teardown, even if a test killed one.
    """
    home = tmp_path_factory.mktemp("kafka-cluster")
    cluster = settings.model_copy(
        update={
            "state_dir": str(home),
            "kafka_cluster_base_port": CLUSTER_BASE_PORT,
        }
    )
    nodes = kafka_nodes.kafka_cluster_nodes(cluster)
    taken = [p for n in nodes for p in (n.broker_port, n.controller_port) if not _free(p)]
    if taken:
        pytest.fail(f"ports {taken} are in use; the fault tests' cluster needs them", pytrace=False)
    try:
        bootstrap, seconds = kafka_nodes.cluster_up(cluster)
        print(f"\n3-broker cluster {bootstrap} ready in {seconds:.1f} s (state {home})")
        yield cluster.model_copy(update={"kafka_bootstrap_servers": bootstrap})
    finally:
        kafka_nodes.cluster_down(cluster)
        for node in nodes:  # a node a test restarted late may still be starting
            node.process(cluster).signal(signal.SIGKILL)


@pytest.fixture
def scratch_postgres(settings: Settings) -> Iterator[tuple[Settings, PostgresCluster]]:
    """A private PostgreSQL cluster (own data dir and port) that a test may stop and start.

    The data dir lives under /var/tmp: pytest's tmp_path is under /tmp/pytest-of-root (mode
    0700), which the ``postgres`` OS user cannot enter. Stopped and removed in teardown.
    """
    port = next((p for p in SCRATCH_PG_PORTS if _free(p)), None)
    if port is None:
        pytest.fail(f"no free port in {SCRATCH_PG_PORTS} for a scratch PostgreSQL cluster")
    state = Path("/var/tmp") / f"finpipe-faults-{uuid.uuid4().hex[:8]}"
    state.mkdir(mode=0o755)
    assert postgres_can_enter(state), f"the postgres user cannot enter {state}"
    scratch = settings.model_copy(update={"state_dir": str(state), "pg_port": port})
    cluster = PostgresCluster(scratch)
    try:
        cluster.init()
        cluster.start()
        cluster.ensure_role_and_databases()
        apply_migrations(scratch)
        yield scratch, cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop(mode="immediate")
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def fault_pipelines(local_stack: Settings, tmp_path) -> Iterator[Callable[..., Pipeline]]:
    """Makes Pipelines on any Kafka and PostgreSQL given by ``base`` (default: the shared
    stack): private topics (12 partitions), groups and database, worker logs in tmp_path.

    :param base: settings naming the bootstrap servers and the PostgreSQL port.
    :param replication/min_insync: of the private topics.
    :param database: use this existing database instead of creating one.
    """
    made: list[tuple[Pipeline, Settings, str | None]] = []

    def make(
        base: Settings | None = None,
        *,
        replication: int = 1,
        min_insync: int = 1,
        database: str | None = None,
        **overrides: object,
    ) -> Pipeline:
        base = base or local_stack
        tag = uuid.uuid4().hex[:10]
        topics = {
            k: f"fault-{k.split('_')[0]}-{tag}" for k in ("tasks_topic", "data_topic", "dlq_topic")
        }
        stack.ensure_topics(
            base,
            list(topics.values()),
            partitions=12,
            replication=replication,
            min_insync=min_insync,
            bootstrap=base.kafka_bootstrap_servers,
        )
        created_db = None
        if database is None:
            database = created_db = f"finpipe_fault_{tag}"
            admin = PostgresCluster(base).admin_connection()
            with admin.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(base.pg_user)
                    )
                )
            admin.close()
        settings = base.model_copy(
            update={
                **topics,
                "agent_group": f"fault-agents-{tag}",
                "processor_group": f"fault-processors-{tag}",
                "pg_database": database,
                "source": "synthetic",
                **overrides,
            }
        )
        apply_migrations(settings)
        log_dir = tmp_path / f"logs-{len(made)}"
        log_dir.mkdir()
        pipe = Pipeline(settings, log_dir)
        made.append((pipe, base, created_db))
        print(f"\npipeline logs: {log_dir}")
        return pipe

    yield make
    for pipe, _, _ in made:
        pipe.stop_all()
    for pipe, base, created_db in made:
        s = pipe.settings
        with contextlib.suppress(Exception):
            admin = AdminClient({**base.kafka_client_config(), "socket.timeout.ms": 5000})
            for future in admin.delete_topics(
                [s.tasks_topic, s.data_topic, s.dlq_topic], operation_timeout=20
            ).values():
                with contextlib.suppress(Exception):
                    future.result(timeout=30)
        if created_db is not None:
            with contextlib.suppress(psycopg2.Error):
                admin = psycopg2.connect(
                    host=base.pg_host,
                    port=base.pg_port,
                    user="postgres",
                    dbname="postgres",
                    connect_timeout=5,
                )
                admin.autocommit = True
                with admin.cursor() as cur:
                    cur.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(created_db)
                        )
                    )
                admin.close()
