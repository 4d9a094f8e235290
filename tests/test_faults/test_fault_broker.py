"""One of three brokers SIGKILLed in the middle of a 200,000-bar backfill, restarted later.

Topics have replication 3 and min.insync.replicas=2, producers acks=all with idempotence,
the agent writes in Kafka transactions: losing one broker must neither stop the pipeline nor
change the result. The final tables must equal a fault-free run (every price row and every
indicator value), and the workers started at the beginning must be the ones still running.

The victim is the processors' group coordinator (or, if that broker also coordinates the
agents' group, another broker): it leads a third of the partitions and serves the processors'
group. Killing the broker that coordinates the *agents'* group can hang the agent (6 of 11
attempts in this session): librdkafka 2.16's ``send_offsets_to_transaction`` may wait forever
for a coordinator that left the cluster (librdkafka issues #5511 and #5456; its timeout is not
applied to the coordinator lookup). Reproduce with tests/test_faults/repro_agent_hang.py, or run
this test with ``FAULT_BROKER_VICTIM=agent-coordinator``; see docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
from confluent_kafka.admin import AdminClient
from faultkit import (
    ProgressSampler,
    assert_exact,
    duplicate_deliveries,
    log_count,
    record_figures,
    wait_log,
    yearly_tasks,
)

from finpipe import stack
from tests.fixtures import kafka_nodes
from workers.sources.synthetic import SyntheticSource

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOLS = [f"BRK{i:02d}" for i in range(80)]
FIRST_YEAR, YEARS = 2010, 10  # 80 symbols x 10 yearly tasks: 201,280 bars
# Yearly waves kept in flight: enough that agents and processors are busy when the broker dies.
WAVES_AHEAD = 2
# The broker stays down at least this long, and until this many waves were processed.
MIN_DOWN_S = float(os.environ.get("FAULT_BROKER_DOWN_S", "20"))
WAVES_WHILE_DOWN = 2
TIMEOUT_S = 240.0
# No progress for this long means a worker is stuck (fail fast, do not wait TIMEOUT_S).
STALL_S = 60.0


def _choose_victim(admin: AdminClient, agent_group: str, processor_group: str) -> int:
    agents = _coordinator(admin, agent_group)
    if os.environ.get("FAULT_BROKER_VICTIM") == "agent-coordinator":
        return agents
    processors = _coordinator(admin, processor_group)
    return processors if processors != agents else next(i for i in (1, 2, 3) if i != agents)


def _coordinator(admin: AdminClient, group: str) -> int:
    desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    return desc.coordinator.id


def _under_replicated(admin: AdminClient, topics: list[str]) -> int:
    metadata = admin.list_topics(timeout=10)
    return sum(1 for t in topics for p in metadata.topics[t].partitions.values() if len(p.isrs) < 3)


def test_broker_killed_mid_backfill_changes_nothing(kafka_cluster, fault_pipelines):
    t_begin = time.monotonic()
    pipe = fault_pipelines(kafka_cluster, replication=3, min_insync=2)
    s = pipe.settings
    tasks = yearly_tasks(SYMBOLS, FIRST_YEAR, YEARS)
    src = SyntheticSource()
    wave_bars = [
        sum(len(src.fetch(sym, a, b)) for sym, a, b in tasks[i : i + len(SYMBOLS)])
        for i in range(0, len(tasks), len(SYMBOLS))
    ]
    total = sum(wave_bars)
    assert total >= 200_000

    workers = [pipe.start("agent"), pipe.start("processor")]
    wait_log(workers[0], "assigned partitions")
    wait_log(workers[1], "assigned [")
    admin = AdminClient(s.kafka_client_config())
    nodes = kafka_nodes.kafka_cluster_nodes(kafka_cluster)
    victim_id = _choose_victim(admin, s.agent_group, s.processor_group)
    victim = next(n for n in nodes if n.node_id == victim_id)

    ids: list[str] = []
    with ProgressSampler(s) as progress:

        def send_wave(i: int) -> None:
            # Keep WAVES_AHEAD waves in flight: wait for the earlier ones to be processed.
            progress.wait_bars(sum(wave_bars[: max(0, i - WAVES_AHEAD)]), timeout=STALL_S)
            ids.extend(pipe.send_tasks(tasks[i * len(SYMBOLS) : (i + 1) * len(SYMBOLS)]))

        t_first = time.monotonic()
        kill_wave = 3
        for i in range(kill_wave + 1):
            send_wave(i)
        progress.wait_bars(sum(wave_bars[: kill_wave - 1]), timeout=TIMEOUT_S)
        bars_at_kill = progress.latest_bars()
        t_kill = time.monotonic()
        victim.process(kafka_cluster).signal(signal.SIGKILL)
        assert not victim.running(kafka_cluster) or _wait_dead(victim, kafka_cluster)

        _debug_stacks(workers, after=6.0)
        i = kill_wave + 1
        while i < YEARS and (
            i <= kill_wave + WAVES_WHILE_DOWN or time.monotonic() - t_kill < MIN_DOWN_S
        ):
            send_wave(i)
            i += 1
        time.sleep(max(0.0, MIN_DOWN_S - (time.monotonic() - t_kill)))
        bars_while_down = progress.latest_bars() - bars_at_kill
        t_restart = time.monotonic()
        restart: dict[str, float] = {}
        restarter = threading.Thread(
            target=lambda: restart.setdefault(
                "ready_s", stack.kafka.start_nodes(kafka_cluster, [victim])[1]
            )
        )
        restarter.start()
        for j in range(i, YEARS):
            send_wave(j)
        pipe.wait_tasks(ids, timeout=TIMEOUT_S)
        t_done = time.monotonic()
        restarter.join(120)
        assert "ready_s" in restart, "the killed broker did not come back"

    topics = [s.tasks_topic, s.data_topic, s.dlq_topic]
    deadline = time.monotonic() + 90
    while (under := _under_replicated(admin, topics)) and time.monotonic() < deadline:
        time.sleep(0.5)
    isr_s = time.monotonic() - t_restart
    assert under == 0, f"{under} partitions still under-replicated after the restart"

    exact = assert_exact(pipe, tasks)
    # No manual restart: the two processes started first are the only ones, still running.
    assert len(pipe.workers) == 2
    for w in workers:
        assert w.proc.poll() is None, f"{w.kind} exited with {w.proc.returncode}"
    messages, dups = duplicate_deliveries(s)
    record_figures(
        "broker_sigkill",
        bars=exact.stored_bars,
        tasks=len(ids),
        faults=f"1xSIGKILL(node{victim.node_id})",
        down_s=t_restart - t_kill,
        bars_while_down=bars_while_down,
        first_row_after_kill_s=progress.first_progress_after(t_kill) or -1.0,
        longest_stall_s=progress.longest_stall(t_kill, t_done, total),
        broker_ready_s=restart["ready_s"],
        isr_restored_s=isr_s,
        aborted_txns=log_count(workers[:1], "transaction aborted"),
        bar_msgs=messages,
        dup_bar_msgs=dups,
        backfill_s=t_done - t_first,
        wall_s=time.monotonic() - t_begin,
    )
    assert bars_while_down > 0, "the pipeline stopped while one of three brokers was down"


def _debug_stacks(workers, after: float) -> None:
    """With FAULT_PYSPY=<py-spy binary>, dump the workers' stacks ``after`` s after the kill."""
    pyspy = os.environ.get("FAULT_PYSPY")
    if not pyspy:
        return

    def dump() -> None:
        time.sleep(after)
        for w in workers:
            out = subprocess.run(
                [pyspy, "dump", "--pid", str(w.proc.pid)],
                capture_output=True,
                text=True,
                check=False,
            )
            print(f"\n--- {w.kind} pid {w.proc.pid} ---\n{out.stdout}{out.stderr}", flush=True)

    threading.Thread(target=dump, daemon=True).start()


def _wait_dead(node, settings, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while node.running(settings):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
