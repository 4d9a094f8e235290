"""Handover: how long a worker's partitions stand still when it is lost for good or stopped.

The chaos test measures SIGKILL with a replacement (a pod restart). This test measures what it
cannot: a worker that never comes back (scale-down with its node lost: SIGKILL, no
replacement) and graceful stops (SIGTERM, as KEDA's scale-down and a rolling update do),
alone and while a rebalance is pending. Agents and processors are disrupted at the same
moments (their groups are independent).

Tasks arrive at a steady rate (a feeder thread, one month of bars per task), so every
partition of both topics gets new work several times a second and its committed offset moves
about once a second while it has an owner. After a disruption the victim's partitions only
move again once another worker owns them; per partition the test records:

- ``handover``: seconds from the disruption until a live worker logs it assigned, and
- ``flowing``: seconds until its committed offset moves again (processors:
  ``consumer_offsets`` in PostgreSQL; agents: the group's committed offsets in Kafka),
  i.e. the handover plus the fetch and first batch of the new owner.

The scenarios, one after the other, 5 workers of each kind to start with (static members,
as in Kubernetes; ``owned`` is a victim's last assignment):

1. ``lost``: SIGKILL of one worker, no replacement. Its partitions move when its session
   expires: ``handover`` within the session timeout plus ``LOSS_HANDOVER_MARGIN_S``,
   ``flowing`` within the session timeout plus ``LOSS_FLOW_MARGIN_S`` (the goal, printed
   with the figures, is plus ``LOSS_GOAL_MARGIN_S``).
2. ``sigterm``: SIGTERM on a quiet group: ``handover`` within ``SIGTERM_GOAL_S``, and
   ``flowing`` at most ``FIRST_COMMIT_S`` later.
3. ``sigterm-in-join``: the same while the rebalance that a newly started worker asked for
   is under way.
4. ``sigterm-behind-dead``: SIGTERM while a rebalance waits for a member that was SIGKILLed
   (a new worker joined after the kill; the kill is a second ``lost``): nothing moves before
   the dead member's session expires, so the stopped worker's partitions must flow within
   ``SIGTERM_GOAL_S`` of the dead one's (a stop must not add a session timeout of its own).

Afterwards every task sent must be stored exactly (no loss, no duplicate) as in the other
fault tests.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Producer
from faultkit import (
    OffsetWatch,
    assert_exact,
    assignments,
    record_figures,
    summary,
    wait_log,
)

from finpipe_core import contracts
from finpipe_core.kafka import producer_config
from tests.fixtures.pipeline import Pipeline, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KINDS = ("agent", "processor")
SYMBOLS = [f"HND{i:03d}" for i in range(60)]
FIRST_MONTH = dt.date(2010, 1, 1)
# Tasks per second fed to the agents: more than one per partition per second, a small load.
FEED_PER_S = 20
# The goal (issue 17): a SIGTERMed worker's partitions are handed over within 5 s.
SIGTERM_GOAL_S = 5.0
# From a handover to the new owner's first commit on the partition: its offset read, fetch,
# a consume() that waits up to 1 s to fill a batch, the batch's transaction, and the 0.1 s
# offsets sampling; 1.5-3.7 s measured at load 5-10 on this 2-core machine.
FIRST_COMMIT_S = 3.0
# A lost worker's partitions cannot move before its session expires. After that: up to one
# heartbeat (1 s) until the survivors hear of the rebalance, and the batch each has in hand
# (about 1 s at most: a processor's BATCH_BYTES, an agent's transaction budget) before the
# join and sync round trips. So the handover within session + 2 s.
LOSS_HANDOVER_MARGIN_S = 2.0
# ...and the first commit within session + 5 s, the "at most 15 s" with the default
# 10 s session: the handover, then the new owner's first batch, which holds what piled up
# during the stall. Measured 11-14.4 s at load 5-7; at load 10 that first batch took up to
# 9 s (docs/reliability.md), so the test allows 3 s more than the goal on a busy machine
# and prints the figures against the goal.
LOSS_GOAL_MARGIN_S = 5.0
LOSS_FLOW_MARGIN_S = LOSS_GOAL_MARGIN_S + 3.0
# Commits seen up to this long after a victim's exit may still be its own (offsets are
# sampled every 0.1 s); later ones are another worker's.
EXIT_SLACK_S = 0.15
# How long to wait for a disruption's partitions to flow again before giving up on it.
WAIT_CAP_S = 40.0


@dataclass
class Disruption:
    kind: str
    slot: str
    how: str  # lost | sigterm | sigterm-in-join | sigterm-behind-dead
    t: float  # time.monotonic() of the signal
    wall: float  # time.time() of the signal (worker logs carry wall-clock times)
    owned: set[int]
    victim: WorkerProcess
    exited: float | None = None  # time.monotonic() when the victim's process had ended
    handover: dict[int, float | None] = field(default_factory=dict)
    flowing: dict[int, float | None] = field(default_factory=dict)

    def done(self) -> bool:
        return bool(self.owned) and all(
            self.flowing.get(p) is not None and self.handover.get(p) is not None for p in self.owned
        )

    def slowest(self) -> float | None:
        """Seconds until the last of its partitions flowed again (None: one never did)."""
        values = [self.flowing.get(p) for p in self.owned]
        return None if not values or None in values else max(values)


def _timed_lines(worker: WorkerProcess) -> list[tuple[float, str]]:
    """The worker's log lines with their wall-clock times."""
    out = []
    for line in worker.log.read_text(errors="replace").splitlines():
        try:
            when = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        out.append((when, line))
    return out


class Feeder:
    """Sends monthly tasks at ``FEED_PER_S`` in a background thread, month by month (each
    symbol's tasks in date order), like a manager whose tasks trickle in."""

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        self.sent: list[tuple[str, dt.date, dt.date]] = []
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="feeder")

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _tasks(self):
        month = FIRST_MONTH
        while True:
            end = (month + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
            for symbol in SYMBOLS:
                yield symbol, month, end
            month = end + dt.timedelta(days=1)

    def _run(self) -> None:
        producer = Producer(producer_config(self.pipe.settings))
        tick, per_tick = 0.1, max(1, round(FEED_PER_S * 0.1))
        tasks = self._tasks()
        while not self._stop.wait(tick):
            batch = [next(tasks) for _ in range(per_tick)]
            # Stored first, as the manager does: processors only move stored tasks on.
            self.pipe.register_tasks(
                [(contracts.make_task_id(s, a, b), s, a, b) for s, a, b in batch]
            )
            for symbol, start, end in batch:
                task_id = contracts.make_task_id(symbol, start, end)
                task = contracts.FetchTask(
                    schema_version=contracts.SCHEMA_VERSION,
                    task_id=task_id,
                    symbol=symbol,
                    start=start,
                    end=end,
                    requested_by="test",
                )
                producer.produce(
                    self.pipe.settings.tasks_topic,
                    key=symbol.encode(),
                    value=contracts.encode(task),
                )
                self.sent.append((symbol, start, end))
                self.ids.append(task_id)
            producer.poll(0)
        assert producer.flush(30) == 0


class Workers:
    """Live agents and processors by slot (``agent-0`` ...), each a static member."""

    def __init__(self, pipe: Pipeline, watch: OffsetWatch) -> None:
        self.pipe, self.watch = pipe, watch
        self.live: dict[str, WorkerProcess] = {}
        self.disruptions: list[Disruption] = []

    def start(self, kind: str, index: int) -> WorkerProcess:
        slot = f"{kind}-{index}"
        worker = self.pipe.start(kind, slot=slot)
        self.live[slot] = worker
        return worker

    def wait_assigned(self, workers: list[WorkerProcess], settle_s: float = 2.0) -> None:
        """Until each of ``workers`` has been assigned partitions, then ``settle_s`` more
        (the rebalance its join caused is over)."""
        for worker in workers:
            wait_log(worker, "assigned", timeout=60)
        time.sleep(settle_s)

    def disrupt_in_rebalance(
        self, joiners: list[WorkerProcess], slot_index: int, how: str, timeout: float = 60.0
    ) -> list[Disruption]:
        """Disrupt worker ``slot_index`` of each joiner's kind (SIGTERM) as soon as the
        rebalance that the joiner asked for is under way: a worker of its kind that was
        there before logs a revocation after the joiner started (eager protocol: it gave
        everything up and is rejoining)."""
        waiting = {j.kind: j for j in joiners}
        done: list[Disruption] = []
        deadline = time.monotonic() + timeout
        while waiting:
            assert time.monotonic() < deadline, f"no rebalance for {list(waiting)}"
            for kind, joiner in list(waiting.items()):
                mine = _timed_lines(joiner)
                started = next((when for when, line in mine if " started" in line), None)
                if started is None:
                    continue
                others = [w for w in self.live.values() if w.kind == kind and w is not joiner]
                if any(
                    when >= started and " revoked " in line
                    for w in others
                    for when, line in _timed_lines(w)
                ):
                    done.append(self.disrupt(f"{kind}-{slot_index}", how))
                    del waiting[kind]
            time.sleep(0.05)
        return done

    def disrupt(self, slot: str, how: str) -> Disruption:
        worker = self.live.pop(slot)
        # Its last assignment: in an eager rebalance it has just revoked them, and they are
        # what it would have got back.
        taken = assignments(worker.log.read_text(errors="replace"))
        owned = taken[-1][1] if taken else set()
        t, wall = time.monotonic(), time.time()
        if how == "lost":
            worker.kill(signal.SIGKILL)
        else:  # SIGTERM without waiting: the worker finishes its batch and leaves the group
            worker.expected_exit = True
            worker.proc.send_signal(signal.SIGTERM)
        d = Disruption(worker.kind, slot, how, t, wall, owned, worker)

        def note_exit() -> None:
            worker.proc.wait()
            d.exited = time.monotonic()

        threading.Thread(target=note_exit, daemon=True).start()
        self.disruptions.append(d)
        return d

    def measure(self, d: Disruption) -> None:
        others = [w for w in self.pipe.workers if w.kind == d.kind and w is not d.victim]
        taken = [
            (when, parts)
            for w in others
            for when, parts in assignments(w.log.read_text(errors="replace"))
            if when >= d.wall
        ]
        for p in d.owned:
            times = [when - d.wall for when, parts in taken if p in parts]
            d.handover[p] = min(times) if times else None
            if d.exited is None:
                continue
            # A SIGTERMed worker commits the batch in hand before it leaves: only commits
            # after its exit (plus one offsets sample) are another worker's.
            since = d.exited + EXIT_SLACK_S
            advance = self.watch.first_advance(d.kind, p, since)
            d.flowing[p] = None if advance is None else since - d.t + advance

    def wait_flowing(self, ds: list[Disruption]) -> None:
        """Until every partition of ``ds`` flows again, or ``WAIT_CAP_S`` after the first."""
        deadline = min(d.t for d in ds) + WAIT_CAP_S
        while time.monotonic() < deadline:
            for d in ds:
                self.measure(d)
            if all(d.done() for d in ds):
                return
            time.sleep(0.2)
        for d in ds:
            self.measure(d)

    def reap(self) -> None:
        """Wait for the SIGTERMed workers to exit (they must, by themselves)."""
        for w in self.pipe.workers:
            if w.expected_exit and w.proc.poll() is None:
                w.proc.wait(30)


def test_lost_and_stopped_workers_hand_their_partitions_over(pipeline_factory):
    pipe = pipeline_factory(source="synthetic")
    session_s = pipe.settings.kafka_session_timeout_ms / 1000
    t0 = time.monotonic()
    with OffsetWatch(pipe) as watch, Feeder(pipe) as feeder:
        group = Workers(pipe, watch)
        group.wait_assigned([group.start(k, i) for k in KINDS for i in range(5)])

        # 1. Lost for good: worker 0 SIGKILLed, no replacement (1-4 left).
        lost = [group.disrupt(f"{k}-0", "lost") for k in KINDS]
        group.wait_flowing(lost)
        time.sleep(1.0)

        # 2. A graceful stop in a quiet group: worker 1 (2-4 left).
        quiet = [group.disrupt(f"{k}-1", "sigterm") for k in KINDS]
        group.wait_flowing(quiet)
        time.sleep(1.0)

        # 3. A graceful stop while a join's rebalance is under way: worker 5 starts, and
        # once the others are rejoining, worker 2 is stopped (3-5 left).
        joiners = [group.start(k, 5) for k in KINDS]
        in_join = group.disrupt_in_rebalance(joiners, 2, "sigterm-in-join")
        group.wait_flowing(in_join)
        group.wait_assigned(joiners, settle_s=1.0)

        # 4. A graceful stop while the rebalance waits for a dead member: worker 3 is
        # SIGKILLed, worker 6 starts, and once the rebalance is under way worker 4 is
        # stopped (5 and 6 left).
        dead = [group.disrupt(f"{k}-3", "lost") for k in KINDS]
        late = [group.start(k, 6) for k in KINDS]
        behind = group.disrupt_in_rebalance(late, 4, "sigterm-behind-dead")
        group.wait_flowing(dead + behind)
        group.reap()
        scenarios_s = time.monotonic() - t0
    pipe.wait_tasks(feeder.ids, timeout=120)
    pipe.stop_all()
    exact = assert_exact(pipe, feeder.sent, feeder.ids)

    for d in group.disruptions:
        print(
            f"{d.kind} {d.how} {d.slot} at {time.strftime('%H:%M:%S', time.localtime(d.wall))}"
            f": flowing={d.flowing} assigned={d.handover}"
        )
    unmeasured = [f"{d.kind}-{d.how}" for d in group.disruptions if not d.owned]
    record_figures(
        "handover",
        tasks=len(feeder.ids),
        bars=exact.stored_bars,
        rows_lost=exact.lost,
        rows_doubled=exact.doubled,
        session_s=session_s,
        disruptions=len(group.disruptions),
        unmeasured=len(unmeasured),
        scenarios_s=scenarios_s,
        wall_s=time.monotonic() - t0,
    )
    for kind in KINDS:
        for how in ("lost", "sigterm", "sigterm-in-join", "sigterm-behind-dead"):
            ds = [d for d in group.disruptions if d.kind == kind and d.how == how]
            flowing = [v for d in ds for v in d.flowing.values() if v is not None]
            handover = [v for d in ds for v in d.handover.values() if v is not None]
            never = sum(1 for d in ds for p in d.owned if d.flowing.get(p) is None)
            # The goals: a loss flows again within session + 5 s (15 s by default); a
            # SIGTERM hands over (is reassigned) within 5 s.
            if how == "lost":
                limit = session_s + LOSS_GOAL_MARGIN_S
                met = bool(flowing) and max(flowing) <= limit
                goal = f"flowing<={limit:.0f}s:{'met' if met else 'missed'}"
            elif how in ("sigterm", "sigterm-in-join"):
                met = bool(handover) and max(handover) <= SIGTERM_GOAL_S
                goal = f"assigned<={SIGTERM_GOAL_S:.0f}s:{'met' if met else 'missed'}"
            else:
                goal = "flowing-within-5s-of-the-dead-member's"
            record_figures(
                f"handover {kind} {how}",
                events=len(ds),
                flowing_per_partition=summary(flowing),
                assigned_per_partition=summary(handover),
                never_flowed=never,
                goal=goal,
            )

    assert exact.lost == 0 and exact.doubled == 0
    assert not unmeasured, f"victims that owned no partition: {unmeasured}"
    for d in group.disruptions:
        label = f"{d.kind} {d.how} ({d.slot}): flowing={d.flowing} assigned={d.handover}"
        assert d.slowest() is not None, f"a partition never flowed again: {label}"
        if d.how == "lost":
            assert max(d.handover.values()) <= session_s + LOSS_HANDOVER_MARGIN_S, label
            assert d.slowest() <= session_s + LOSS_FLOW_MARGIN_S, label
        elif d.how in ("sigterm", "sigterm-in-join"):
            # The handover itself within the goal; the first commit after it within
            # FIRST_COMMIT_S more (a worker that failed to leave shows ~session_s in both).
            assert max(d.handover.values()) <= SIGTERM_GOAL_S, label
            assert d.slowest() <= SIGTERM_GOAL_S + FIRST_COMMIT_S, label
    for kind in KINDS:
        (dead_one,) = [d for d in dead if d.kind == kind]
        (stopped,) = [d for d in behind if d.kind == kind]
        # Both flow again after the dead member's session: the stop adds no session of its own.
        dead_done = dead_one.t + dead_one.slowest()
        stopped_done = stopped.t + stopped.slowest()
        assert stopped_done <= dead_done + SIGTERM_GOAL_S, (
            f"{kind}: stopped worker's partitions flowed {stopped_done - dead_done:.1f} s after "
            f"the dead one's; dead={dead_one.flowing} stopped={stopped.flowing}"
        )
