"""Local workers get the shared settings only, never the local stack's own."""

from __future__ import annotations

from finpipe.stack.local_workers import worker_env
from finpipe.stack.settings import StackSettings
from finpipe_core.settings import Settings


def test_workers_get_the_shared_settings_and_none_of_the_stack(monkeypatch) -> None:
    # The stack's variables in our own environment must not leak to a worker either.
    monkeypatch.setenv("FINPIPE_STATE_DIR", "/var/tmp/from-the-shell")
    monkeypatch.setenv("FINPIPE_KAFKA_HEAP", "2g")
    settings = StackSettings(state_dir="/var/tmp/stack", pg_port=15999, tasks_topic="t-private")
    env = worker_env(settings)

    stack_vars = {settings.env_var_names()[f] for f in StackSettings.stack_fields()}
    assert {"FINPIPE_STATE_DIR", "FINPIPE_KAFKA_HEAP", "FINPIPE_DAGSTER_PORT"} <= stack_vars
    assert not stack_vars & set(env), sorted(stack_vars & set(env))
    shared = Settings().env_var_names()
    assert env[shared["pg_port"]] == "15999"
    assert env[shared["tasks_topic"]] == "t-private"
    # Several workers on one machine: each takes any free health and metrics port.
    assert env[shared["health_port"]] == env[shared["metrics_port"]] == "0"


def test_stack_fields_are_not_shared_settings() -> None:
    assert StackSettings.stack_fields() == {
        "state_dir",
        "kafka_version",
        "kafka_controller_port",
        "kafka_cluster_base_port",
        "kafka_heap",
        "dagster_port",
    }
    assert not StackSettings.stack_fields() & set(Settings.model_fields)
