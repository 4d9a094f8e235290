"""One Dagster run of the manager asset ``stock_tasks`` over a partition range, optionally
killed (SIGKILL, no cleanup) at a chosen point; used by test_fault_manager.py.

    python tests/test_faults/manager_run.py START END [--die before_publish|after_delivery]

- ``before_publish``: dies in the outbox's ``before_publish`` hook, i.e. after the DB commit of
  the new tasks and before anything is sent.
- ``after_delivery``: dies after the producer's flush reported every task delivered, before
  the ``published`` mark is committed: the tasks are on Kafka but still ``pending`` in the DB,
  so the retried run sends them a second time.

Settings come from the environment (``FINPIPE_*``), like a deployed run.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import warnings


def _die(_: object = None) -> None:
    print(f"manager_run: SIGKILL pid={os.getpid()}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("start")
    parser.add_argument("end")
    parser.add_argument("--die", choices=["before_publish", "after_delivery"])
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    import dagster as dg

    import finpipe_dagster.assets.stock_tasks  # noqa: F401  (the module, for sys.modules)
    from finpipe_dagster import resources
    from finpipe_dagster.resources import default_resources

    # The package re-exports the asset under the module's name: take the module itself.
    asset_module = sys.modules["finpipe_dagster.assets.stock_tasks"]

    if args.die == "before_publish":
        asset_module.emit_tasks = functools.partial(asset_module.emit_tasks, before_publish=_die)
    elif args.die == "after_delivery":
        real_make_producer = resources.make_producer

        class DyingProducer:
            """The real producer; dies once a flush has delivered everything it had."""

            def __init__(self, *a: object, **k: object) -> None:
                self._producer = real_make_producer(*a, **k)

            def produce(self, *a: object, **k: object) -> None:
                self._producer.produce(*a, **k)

            def poll(self, timeout: float) -> int:
                return self._producer.poll(timeout)

            def flush(self, timeout: float) -> int:
                left = self._producer.flush(timeout)
                if left == 0:
                    _die()
                return left

        resources.make_producer = DyingProducer

    result = dg.materialize(
        [asset_module.stock_tasks],
        tags={
            "dagster/asset_partition_range_start": args.start,
            "dagster/asset_partition_range_end": args.end,
        },
        resources=default_resources(),
        raise_on_error=False,
    )
    events = result.asset_materializations_for_node("stock_tasks") if result.success else []
    # Totals are on every partition's event, the run's other figures on the last one.
    meta = {k: v.value for e in events for k, v in e.metadata.items()}
    print(
        f"manager_run: success={result.success} run_id={result.run_id} "
        f"tasks_emitted={meta.get('tasks_emitted')} "
        f"tasks_published={meta.get('tasks_published')} "
        f"earlier_pending_published={meta.get('earlier_pending_published')}",
        flush=True,
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
