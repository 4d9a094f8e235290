"""Chaos: a 1.5M-bar backfill while agents and processors are SIGKILLed, restarted, rescaled.

300 synthetic symbols x 20 years (about 1,510,000 bars, 6,000 tasks) through 2 agents and 2
processors. One worker is SIGKILLed every few seconds and replaced at once under the same slot
(a pod restart: same FINPIPE_WORKER_ID), alternating agents and processors, at least
``KILLS_PER_KIND`` of each, each kill hitting a worker whose partitions have work waiting,
and the next kill of a kind waiting until the previous one's partitions flow again (so each
recovery is measured, not cut short by the next kill); the processor count goes 2 -> 3 -> 1
-> 2 meanwhile (scale-down: one pod lost with its node, SIGKILL and never back; one stopped by
SIGTERM, as KEDA does). Afterwards every symbol must equal a fresh computation (prices, all
indicators against TA-Lib, every task done once with its own bar count).

Liveness is measured per kill: for each partition the victim owned that had work waiting, the
time from the kill (or SIGTERM) until the next offset committed on that partition by anyone
(processors: ``consumer_offsets`` in PostgreSQL; agents: the group's committed offsets in
Kafka). ``FINPIPE_CHAOS_MODE=dynamic-45s`` runs the same schedule with what the workers did
before static membership (no worker id, librdkafka's 45 s session timeout) for comparison
(docs/reliability.md); CI runs the default mode.
"""

from __future__ import annotations

import os
import random
import re
import signal
import statistics
import time
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Consumer, TopicPartition
from faultkit import (
    OffsetWatch,
    ProgressSampler,
    assert_exact,
    dlq_counts,
    duplicate_deliveries,
    log_count,
    owned_partitions,
    p95,
    record_figures,
    start_script,
    summary,
    yearly_tasks,
)

from tests.fixtures.pipeline import Pipeline, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOLS = [f"CHS{i:03d}" for i in range(300)]
FIRST_YEAR, YEARS = 2004, 20  # 300 x 20 yearly tasks: about 1,510,000 bars
KILLS_PER_KIND = 10
# Seconds between two disruptions: a few batches of work in between.
GAP_S = (1.5, 3.5)
# The next kill of a kind waits until the last one's partitions flow again, at most this long.
MAX_RECOVERY_WAIT_S = 30.0
# After this many kills the processor count changes (2 -> 3 -> 1 -> 2).
SCALE_AT = {4: 3, 10: 1, 16: 2}
TIMEOUT_S = 600.0
MODE = os.environ.get("FINPIPE_CHAOS_MODE", "static")
# Each fetch takes this long (a live source's latency): 6,000 tasks keep 2 agents busy ~135 s
# while they produce about 11,000 bars/s, under what 2 processors store, so both kinds have
# work in flight throughout the kills, and the 20 kills (each waiting for the previous one of
# its kind to flow again) fit inside the backfill even when recoveries are slow (at 0.03 s a
# loaded run ran out of backfill after 9 kills of each kind).
FETCH_S = 0.045
# The goal: a killed worker's partitions flow again within 10 s (p95) when its replacement
# starts (docs/reliability.md has the measured figures). With 10 kills the p95 is the slowest
# kill, which one slow start on this shared 2-core machine can push past any bound (25 s seen
# once in CI, p50 5.7 s), so the test fails on the median: above twice the goal, which the
# 45 s of librdkafka's default session timeout (no static membership) always is.
RESTART_P95_GOAL_S = 10.0
RESTART_P50_LIMIT_S = 2 * RESTART_P95_GOAL_S


@dataclass
class Disruption:
    kind: str  # agent | processor
    slot: str
    t: float
    how: str  # "restart": SIGKILL + replacement; "sigterm": scale-down; "lost": SIGKILL only
    pending: dict[int, int] = field(default_factory=dict)  # partition -> offset at the kill
    stalls: dict[int, float | None] = field(default_factory=dict)

    @property
    def resumed(self) -> float | None:
        """Seconds until the first commit on any of the victim's pending partitions."""
        known = [s for s in self.stalls.values() if s is not None]
        return min(known) if known else None


class Chaos:
    """The schedule: kills with replacement, alternating kinds, and processor rescaling."""

    def __init__(self, pipe: Pipeline, watch: OffsetWatch, static: bool, seed: int) -> None:
        self.pipe, self.watch, self.static = pipe, watch, static
        # Before: dynamic membership with librdkafka's default session timeout.
        self.env = {} if static else {"FINPIPE_KAFKA_SESSION_TIMEOUT_MS": "45000"}
        self.rng = random.Random(seed)
        self.live: dict[str, WorkerProcess] = {}
        self.disruptions: list[Disruption] = []
        self._watermarks = Consumer(
            {**pipe.settings.kafka_client_config(), "group.id": "chaos-watermarks"}
        )

    def start(self, kind: str, index: int) -> None:
        slot = f"{kind}-{index}"
        env = dict(self.env)
        if self.static:
            env["FINPIPE_WORKER_ID"] = slot
        if kind == "agent":  # a source with latency, so agents always have work in flight
            worker = start_script(
                self.pipe, "slow_agent.py", "agent", FAULT_FETCH_SECONDS=str(FETCH_S), **env
            )
        else:
            worker = self.pipe.start(kind, **env)
        self.live[slot] = worker

    def _pending(self, kind: str, partitions: set[int], t: float) -> dict[int, int]:
        """Partitions with work waiting at ``t`` -> their committed offset then."""
        s = self.pipe.settings
        topic = s.tasks_topic if kind == "agent" else s.data_topic
        # Agents read a plain topic; processors a transactional one, whose last record is
        # a commit marker that no consumer ever commits past: a gap of 1 is no work.
        slack = 0 if kind == "agent" else 1
        pending = {}
        for p in partitions:
            _, high = self._watermarks.get_watermark_offsets(TopicPartition(topic, p), 10)
            committed = self.watch.offset_at(kind, p, t)
            if high - committed > slack:
                pending[p] = committed
        return pending

    def has_work(self, slot: str) -> bool:
        worker = self.live[slot]
        partitions = owned_partitions(worker.log.read_text(errors="replace"))
        return bool(self._pending(worker.kind, partitions, time.monotonic()))

    def disrupt(self, slot: str, how: str) -> None:
        worker = self.live.pop(slot)
        partitions = owned_partitions(worker.log.read_text(errors="replace"))
        t = time.monotonic()
        if how == "sigterm":
            worker.stop()
            # It commits its batch in hand before it exits: count only commits after that.
            t = time.monotonic()
        else:
            worker.kill(signal.SIGKILL)
        pending = self._pending(worker.kind, partitions, t)
        self.disruptions.append(Disruption(worker.kind, slot, t, how, pending))
        if how == "restart":  # the pod restarts under its own name
            index = int(slot.rsplit("-", 1)[1])
            self.start(worker.kind, index)

    def recovered(self, kind: str) -> bool:
        """Every recent disruption of ``kind`` is over: the partitions of each flow again, or
        it is long ago. All of them, not only the last: a rescale disrupts several workers at
        once, and a kill during the session of a lost one would measure that session too."""
        now = time.monotonic()
        return all(
            any(self.watch.first_advance(kind, p, d.t) is not None for p in d.pending)
            for d in self.disruptions
            if d.kind == kind and d.pending and now - d.t <= MAX_RECOVERY_WAIT_S
        )

    def rescale_processors(self, count: int) -> None:
        slots = sorted(s for s in self.live if s.startswith("processor-"))
        # Scale-down: the first pod removed is lost with its node (SIGKILL, never back), the
        # others stop gracefully (SIGTERM), as KEDA's scale-down does.
        for i, slot in enumerate(slots[count:]):
            self.disrupt(slot, "lost" if i == 0 else "sigterm")
        for index in range(count):
            if f"processor-{index}" not in self.live:
                self.start("processor", index)

    def measure(self) -> None:
        for d in self.disruptions:
            d.stalls = {p: self.watch.first_advance(d.kind, p, d.t) for p in d.pending}

    def close(self) -> None:
        self._watermarks.close()


def test_chaos_backfill_with_kills_and_rescaling(pipeline_factory):
    static = MODE == "static"
    pipe = pipeline_factory(source="synthetic")
    tasks = yearly_tasks(SYMBOLS, FIRST_YEAR, YEARS)
    t0 = time.monotonic()
    with OffsetWatch(pipe) as watch, ProgressSampler(pipe.settings) as progress:
        chaos = Chaos(pipe, watch, static, seed=20261128)
        for i in range(2):
            chaos.start("agent", i)
            chaos.start("processor", i)
        ids = pipe.send_tasks(tasks)
        progress.wait_bars(1, timeout=120)  # the pipeline is flowing
        kills = {"agent": 0, "processor": 0}
        scaled: set[int] = set()
        while min(kills.values()) < KILLS_PER_KIND:
            time.sleep(chaos.rng.uniform(*GAP_S))
            if progress.samples and progress.samples[-1].finished == len(ids):
                break  # the backfill finished first: asserted below
            n = sum(kills.values())
            if n in SCALE_AT and n not in scaled:
                scaled.add(n)
                chaos.rescale_processors(SCALE_AT[n])
            kind = "agent" if n % 2 == 0 else "processor"
            if not chaos.recovered(kind):
                continue  # one kill of a kind at a time, so each kill's recovery is seen
            # Kill a worker at work: one whose partitions have work waiting (a process still
            # starting, or one whose partitions are drained, has nothing in flight to lose).
            working = sorted(
                slot for slot in chaos.live if slot.startswith(kind) and chaos.has_work(slot)
            )
            if working:
                chaos.disrupt(chaos.rng.choice(working), "restart")
                kills[kind] += 1
        chaos.rescale_processors(2)
        kills_done_s = time.monotonic() - t0
        pipe.wait_tasks(ids, timeout=TIMEOUT_S)
        wall_s = time.monotonic() - t0
        time.sleep(0.5)  # one more offsets sample after the last commit
    chaos.measure()
    chaos.close()
    pipe.stop_all()

    exact = assert_exact(pipe, tasks)
    messages, repeats = duplicate_deliveries(pipe.settings)
    dead = dlq_counts(pipe.settings)
    logs = pipe.workers
    restarts = [d for d in chaos.disruptions if d.how == "restart"]
    graceful = [d for d in chaos.disruptions if d.how == "sigterm"]
    lost = [d.resumed for d in chaos.disruptions if d.how == "lost" and d.resumed is not None]
    in_flight = {
        k: sum(1 for d in restarts if d.kind == k and d.pending) for k in ("agent", "processor")
    }
    # Per kill: until the victim's partitions flow again (the first commit on any of them),
    # and per partition: until each one does (includes waiting behind other partitions).
    resumed = {
        k: [d.resumed for d in restarts if d.kind == k and d.resumed is not None]
        for k in ("agent", "processor")
    }
    per_partition = {
        k: [s for d in restarts if d.kind == k for s in d.stalls.values() if s is not None]
        for k in ("agent", "processor")
    }
    handovers = [d.resumed for d in graceful if d.resumed is not None]
    unanswered = sum(1 for d in chaos.disruptions for s in d.stalls.values() if s is None)
    fenced = sum(
        int(n)
        for w in logs
        if w.kind == "processor"
        for n in re.findall(
            r"dropped (\d+) messages another processor", w.log.read_text(errors="replace")
        )
    )
    dropped = sum(
        int(n)
        for w in logs
        if w.kind == "processor"
        for n in re.findall(
            r"dropped (\d+) messages of partitions no longer owned",
            w.log.read_text(errors="replace"),
        )
    )
    record_figures(
        f"chaos[{MODE}]",
        bars=exact.stored_bars,
        tasks=len(ids),
        wall_s=wall_s,
        kills_phase_s=kills_done_s,
        agent_kills=kills["agent"],
        processor_kills=kills["processor"],
        agent_kills_in_flight=in_flight["agent"],
        processor_kills_in_flight=in_flight["processor"],
        graceful_stops=len(graceful),
        assignments=log_count(logs, " assigned "),
        batch_retries=log_count(logs, "batch not committed"),
        agent_aborts=log_count(logs, "transaction aborted"),
        fenced_messages=fenced,
        dropped_revoked=dropped,
        duplicate_deliveries=repeats,
        bar_messages=messages,
        dead_letters=sum(dead.values()),
        unanswered=unanswered,
    )
    for kind in ("agent", "processor"):
        met = bool(resumed[kind]) and p95(resumed[kind]) <= RESTART_P95_GOAL_S
        record_figures(
            f"chaos[{MODE}] {kind} SIGKILL->flowing again",
            per_kill=summary(resumed[kind]),
            per_partition=summary(per_partition[kind]),
            goal=f"p95<={RESTART_P95_GOAL_S:.0f}s:{'met' if met else 'missed'}",
        )
    record_figures(
        f"chaos[{MODE}] processor SIGTERM->flowing again (from its exit)",
        per_stop=summary(handovers),
    )
    record_figures(
        f"chaos[{MODE}] processor lost for good (SIGKILL, no replacement)->flowing again",
        per_loss=summary(lost),
    )

    assert exact.lost == 0 and exact.doubled == 0
    assert sum(dead.values()) == 0
    assert min(kills.values()) >= KILLS_PER_KIND, f"backfill ended after {kills} kills"
    # The kills must hit work in flight, or they prove nothing.
    for kind in ("agent", "processor"):
        assert in_flight[kind] >= KILLS_PER_KIND // 2, f"{kind} kills that hit work: {in_flight}"
        assert resumed[kind], f"no {kind} kill measured"
    if static:
        for kind in ("agent", "processor"):
            assert statistics.median(resumed[kind]) <= RESTART_P50_LIMIT_S, (
                f"{kind} SIGKILL->flowing again {summary(resumed[kind])}"
            )
