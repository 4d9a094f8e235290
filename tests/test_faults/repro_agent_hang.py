"""Reproduction (not a test): the agent hangs in ``send_offsets_to_transaction`` after the
broker coordinating its consumer group is SIGKILLed.

    .venv/bin/python -m tests.test_faults.repro_agent_hang [--runs N] [--pyspy PATH]

Each run: a private 3-broker cluster (ports 19401-19403, state under /tmp), private topics
(replication 3, min.insync.replicas=2) and a scratch database on the shared PostgreSQL; one
agent and one processor; 320 yearly tasks (80,480 bars) processed; the agents' group
coordinator SIGKILLed; 480 more tasks sent. It prints, every 5 s for 40 s, the bars processed,
then ``HANG`` if none of the new tasks' bars arrived, and (with ``--pyspy``) the agent's stack.

The hang is a race. In this session the agents' group coordinator was SIGKILLed 11 times
(this script, its earlier variants and test_fault_broker.py with
FAULT_BROKER_VICTIM=agent-coordinator): 6 times the agent hung in workers/agent/main.py's
``send_offsets_to_transaction`` call (librdkafka 2.16.0; py-spy showed
rd_kafka_send_offsets_to_transaction -> rd_kafka_txn_op_req0 -> cnd_wait; in the run that
restarted the broker it was still hung 14 s after the broker was back), and 5 times it
recovered after ~16 s. All 6 hangs came while the machine was busy with other test runs; the
4 attempts on a quieter machine recovered.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient
from psycopg2 import sql

from finpipe import stack
from finpipe.stack.postgres import PostgresCluster
from finpipe.stack.settings import get_stack_settings
from finpipe_core.db import apply_migrations
from tests.fixtures import kafka_nodes
from tests.fixtures.pipeline import Pipeline
from tests.test_faults.faultkit import ProgressSampler, wait_log, yearly_tasks


def one_run(pyspy: str | None) -> bool:
    """True if the agent hung."""
    base = get_stack_settings()
    home = Path("/tmp") / f"finpipe-repro-{uuid.uuid4().hex[:8]}"
    cluster = base.model_copy(update={"state_dir": str(home), "kafka_cluster_base_port": 19400})
    bootstrap, seconds = kafka_nodes.cluster_up(cluster)
    print(f"cluster {bootstrap} ready in {seconds:.0f} s", flush=True)
    cluster = cluster.model_copy(update={"kafka_bootstrap_servers": bootstrap})
    tag = uuid.uuid4().hex[:8]
    topics = {
        k: f"repro-{k.split('_')[0]}-{tag}" for k in ("tasks_topic", "data_topic", "dlq_topic")
    }
    stack.ensure_topics(
        cluster,
        list(topics.values()),
        partitions=12,
        replication=3,
        min_insync=2,
        bootstrap=bootstrap,
    )
    db = f"repro_{tag}"
    admin_pg = PostgresCluster(base).admin_connection()
    with admin_pg.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(db), sql.Identifier(base.pg_user)
            )
        )
    settings = cluster.model_copy(
        update={
            **topics,
            "agent_group": f"repro-agents-{tag}",
            "processor_group": f"repro-processors-{tag}",
            "pg_database": db,
            "source": "synthetic",
        }
    )
    apply_migrations(settings)
    (home / "logs-workers").mkdir(parents=True, exist_ok=True)
    pipe = Pipeline(settings, home / "logs-workers")
    hung = False
    try:
        agent, processor = pipe.start("agent"), pipe.start("processor")
        wait_log(agent, "assigned partitions")
        wait_log(processor, "assigned [")
        admin = AdminClient(settings.kafka_client_config())
        group = settings.agent_group
        coordinator = admin.describe_consumer_groups([group])[group].result().coordinator.id
        tasks = yearly_tasks([f"BRK{i:02d}" for i in range(80)], 2010, 10)
        with ProgressSampler(settings) as progress:
            pipe.send_tasks(tasks[:320])
            progress.wait_bars(30_000, 120)
            victim = kafka_nodes.kafka_cluster_nodes(cluster)[coordinator - 1]
            victim.process(cluster).signal(signal.SIGKILL)
            killed_at = time.monotonic()
            before = progress.latest_bars()
            print(f"killed node {coordinator} (agents' coordinator) at {before} bars", flush=True)
            pipe.send_tasks(tasks[320:])
            for _ in range(8):
                time.sleep(5)
                print(
                    f"  t+{time.monotonic() - killed_at:.0f}s bars={progress.latest_bars()}",
                    flush=True,
                )
            hung = progress.latest_bars() <= 80_480
        print("HANG" if hung else "no hang", flush=True)
        if hung and pyspy:
            subprocess.run([pyspy, "dump", "--pid", str(agent.proc.pid)], check=False)
    finally:
        pipe.stop_all()
        kafka_nodes.cluster_down(cluster)
        with admin_pg.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
        admin_pg.close()
        shutil.rmtree(home, ignore_errors=True)
    return hung


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--pyspy", help="py-spy binary, to print the hung agent's stack")
    args = parser.parse_args()
    hangs = sum(one_run(args.pyspy) for _ in range(args.runs))
    print(f"{hangs} of {args.runs} runs hung")
    return 1 if hangs else 0


if __name__ == "__main__":
    sys.exit(main())
