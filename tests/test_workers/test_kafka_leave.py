"""A graceful stop hands a static member's partitions over at once, on the real broker.

``leave_group`` must make the LeaveGroup go out before the consumer closes: a static member
(``group.instance.id``) that closes without it keeps its partitions until its session
expires (10 s by default), which is what a SIGTERMed worker did before (issue 17).
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer

from finpipe_core.kafka import consumer_config, leave_group
from finpipe_core.settings import Settings

pytestmark = pytest.mark.integration

# Well under the 10 s session timeout that a member closing without leaving costs.
HANDOVER_LIMIT_S = 5.0


def test_leave_group_hands_a_static_members_partitions_over(
    local_stack: Settings, topic_factory, group_factory
):
    topic = topic_factory("leave", partitions=4)
    group = group_factory("leave")

    def member(worker_id: str) -> tuple[Consumer, list[set[int]]]:
        settings = local_stack.model_copy(update={"worker_id": worker_id})
        consumer = Consumer(consumer_config(settings, group))
        seen: list[set[int]] = []
        consumer.subscribe(
            [topic], on_assign=lambda c, parts: seen.append({p.partition for p in parts})
        )
        return consumer, seen

    leaving, leaving_seen = member("leave-a")
    staying, staying_seen = member("leave-b")
    stop = threading.Event()
    handed_over_at: list[float] = []

    def poll_staying() -> None:
        while not stop.is_set():
            staying.poll(0.1)
            if staying_seen and len(staying_seen[-1]) == 4 and not handed_over_at:
                handed_over_at.append(time.monotonic())

    deadline = time.monotonic() + 60
    while not (
        leaving_seen and staying_seen and len(leaving_seen[-1]) == len(staying_seen[-1]) == 2
    ):
        assert time.monotonic() < deadline, "the two members never shared the partitions"
        leaving.poll(0.1)
        staying.poll(0.1)
    poller = threading.Thread(target=poll_staying, daemon=True)
    poller.start()
    try:
        left_at = time.monotonic()
        leave_group(leaving)
        while not handed_over_at and time.monotonic() - left_at < 20:
            time.sleep(0.05)
    finally:
        stop.set()
        poller.join(10)
        staying.close()
    assert handed_over_at, "the staying member never got the leaving member's partitions"
    seconds = handed_over_at[0] - left_at
    print(f"\nstatic member left; its partitions reassigned after {seconds:.2f} s")
    assert seconds <= HANDOVER_LIMIT_S
