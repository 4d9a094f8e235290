"""Agents and processors run on this machine as managed processes (``finpipe workers start``,
``finpipe dev``, ``finpipe demo``): pid files and logs under the state dir, stopped by
``finpipe down`` or ``finpipe workers stop``."""

from __future__ import annotations

import hashlib
import os
import sys

from finpipe.stack import paths
from finpipe.stack.processes import ManagedProcess
from finpipe.stack.settings import StackSettings
from finpipe.stack.stack import managed_processes

KINDS = ("agent", "processor")
# A worker asked to stop finishes its open batch first (up to a minute on a large backfill).
WORKER_STOP_TIMEOUT_S = 60.0


def worker_names(settings: StackSettings, kind: str, count: int) -> list[str]:
    """``agent-<tag>-N``: the tag names the topics and database the workers serve, so
    differently configured workers (a test's private topics) never share a pid file."""
    key = f"{settings.tasks_topic}|{settings.data_topic}|{settings.pg_database}"
    tag = hashlib.sha256(key.encode()).hexdigest()[:6]
    return [f"{kind}-{tag}-{i}" for i in range(1, count + 1)]


def worker_process(settings: StackSettings, name: str) -> ManagedProcess:
    return ManagedProcess(name, paths.run_dir(settings), paths.log_dir(settings))


def worker_env(settings: StackSettings) -> dict[str, str]:
    """The environment plus every shared setting, so a worker serves what we serve.

    The local stack's own variables (state dir, broker ports) are left out, also when they
    come from our environment: a worker reads only the shared settings.
    """
    stack_vars = {settings.env_var_names()[f] for f in StackSettings.stack_fields()}
    env = {k: v for k, v in os.environ.items() if k not in stack_vars}
    env.update(settings.shared().to_env(include_secrets=True))
    # Several local workers: each takes any free health and metrics port.
    env["FINPIPE_HEALTH_PORT"] = env["FINPIPE_METRICS_PORT"] = "0"
    return env


def start_workers(settings: StackSettings, agents: int, processors: int) -> list[str]:
    """Start the missing agents and processors for ``settings``; return the names started."""
    started = []
    for kind, count in zip(KINDS, (agents, processors), strict=True):
        for name in worker_names(settings, kind, count):
            proc = worker_process(settings, name)
            if proc.running():
                continue
            # The slot name is the worker's stable identity (static group membership, the
            # agent's transactional.id): a restarted slot takes its partitions back at once.
            env = {**worker_env(settings), "FINPIPE_WORKER_ID": name}
            proc.start([sys.executable, "-m", f"workers.{kind}"], env=env, cwd=paths.REPO_ROOT)
            started.append(proc.name)
    return started


def stop_workers(settings: StackSettings) -> list[str]:
    """Stop every local agent and processor (each finishes its batch); return the names."""
    return [
        p.name
        for p in managed_processes(settings)
        if p.name.startswith(tuple(f"{kind}-" for kind in KINDS))
        and p.stop(timeout=WORKER_STOP_TIMEOUT_S)
    ]
