"""Settings of the local stack (``finpipe up/down/status/dev``), on top of the shared ones.

Only the CLI, the local stack and the tests that start brokers read these: the workers and the
Dagster code location run on ``finpipe_core.settings.Settings`` alone, so a worker pod's
environment never carries a state dir or a broker heap. The env var names keep the
``FINPIPE_`` prefix of the shared settings.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from finpipe_core.settings import Settings


class StackSettings(Settings):
    """The shared settings plus where and how the local Kafka and PostgreSQL run."""

    # Where the local broker's and database's data, logs and pid files live; default
    # <repo>/.state (see finpipe.stack.paths.state_dir).
    state_dir: str | None = None
    kafka_version: str = "4.1.1"
    kafka_controller_port: int = 19093
    # The tests' 3-broker cluster and SASL node (tests/fixtures/kafka_nodes.py) take their
    # ports from here: broker i on base + i, the SASL node on base + 50..52.
    kafka_cluster_base_port: int = 19100
    kafka_heap: str = "512m"
    # `finpipe dev`: where the Dagster UI listens.
    dagster_port: int = Field(default=3000, ge=1, le=65535)

    @classmethod
    def stack_fields(cls) -> frozenset[str]:
        """The fields only the local stack reads (not in the shared ``Settings``)."""
        return frozenset(cls.model_fields) - frozenset(Settings.model_fields)

    def shared(self) -> Settings:
        """The shared settings alone, as a worker or Dagster process should get them."""
        return Settings.model_construct(**{f: getattr(self, f) for f in Settings.model_fields})


@lru_cache(maxsize=1)
def get_stack_settings() -> StackSettings:
    """The process-wide stack settings, read once from the environment."""
    return StackSettings()
