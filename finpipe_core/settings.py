"""Every name finpipe shares between processes: topics, groups, tables, ports, env vars.

One frozen pydantic-settings model read from ``FINPIPE_*`` environment variables. The Dagster
side, the workers, the local stack and the Kubernetes values all take their names from here
(the Helm values are checked against it in tests), so a name is changed in exactly one place.
The local stack's own settings (state dir, broker version and ports) extend this model in
``finpipe.stack.settings``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "FINPIPE_"

SourceName = Literal["yfinance", "sample", "csv", "synthetic"]


class Settings(BaseSettings):
    """finpipe configuration; each field is the env var ``FINPIPE_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    tasks_topic: str = "Stock_topic"
    data_topic: str = "Stock_data_topic"
    dlq_topic: str = "Stock_dlq_topic"
    # 12 partitions: a KEDA replica beyond the partition count would only idle.
    topic_partitions: int = Field(default=12, ge=1)
    # 1 on a single local broker; 3 (with min.insync.replicas=2) in a real cluster.
    topic_replication: int = Field(default=1, ge=1)
    topic_min_insync_replicas: int = Field(default=1, ge=1)
    agent_group: str = "finpipe-agents"
    processor_group: str = "finpipe-processors"
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # TLS (SSL, SASL_SSL): the PEM file of the CA that signed the brokers' certificates
    # (Strimzi's cluster CA). Unset: librdkafka's built-in default trust store, which a
    # private cluster CA is not in.
    kafka_ssl_ca_location: str | None = None
    # Check that the broker's certificate names the host connected to ("https"), or not ("none":
    # only for brokers reached by an address their certificate does not list).
    kafka_ssl_endpoint_identification: Literal["https", "none"] = "https"
    # Group timing. A worker that stops heartbeating (killed, node lost) loses its partitions
    # after the session timeout; librdkafka's default 45 s stalled them for that long. With
    # static membership (worker_id set) a restarted worker takes them back before that.
    # Heartbeats come from librdkafka's own thread, not the poll loop, so a busy batch does
    # not miss them; 1 s heartbeats leave 10 chances within the default 10 s session.
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=1_800_000)
    kafka_heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    # The longest a poll batch may take before the worker is considered stuck and leaves the
    # group; well above the slowest fetch with backoff (the loops keep polling while waiting).
    kafka_max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    # Kafka's default max.message.bytes is 1 MiB; stay well under it per message.
    max_message_bytes: int = Field(default=900_000, ge=1024)

    # --- PostgreSQL --------------------------------------------------------------------------
    pg_host: str = "127.0.0.1"
    pg_port: int = 15432
    pg_database: str = "finpipe"
    pg_user: str = "finpipe"
    pg_password: SecretStr | None = None
    # Dagster's own storage (runs, events, schedules) lives in a second database.
    pg_dagster_database: str = "dagster"

    # Downloads kept across checkouts, outside the repo: the local stack's Kafka jars; the
    # scripts that fetch helm and the CRDs read the same variable. The rest of the local
    # stack's settings are in finpipe/stack/settings.py (StackSettings): no worker needs them.
    cache_dir: str = "~/.cache/finpipe"

    # --- Workers -----------------------------------------------------------------------------
    source: SourceName = "sample"
    csv_dir: str | None = None
    # Bars per Stock_data_topic message; 1,000 bars of 9 columns is about 150 kB of JSON.
    bars_per_message: int = Field(default=1000, ge=1, le=5000)
    # yfinance: one request budget shared by every agent behind the same outbound IP, kept
    # in PostgreSQL (Yahoo allows about 2,000 requests an hour per IP).
    yf_requests_per_minute: int = Field(default=60, ge=1)
    yf_requests_per_hour: int = Field(default=1500, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # A stable name of this worker's slot: the pod name of a StatefulSet in Kubernetes, the
    # slot (agent-0, processor-1) locally. Set, the worker is a static member of its group
    # (group.instance.id): a restarted worker takes its partitions back at once, without a
    # rebalance; and an agent's transactional.id derives from it, so a restarted agent fences
    # and aborts its predecessor's open transaction. Unset: dynamic membership, random id.
    worker_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,200}$")
    health_port: int = 8080
    metrics_port: int = 9100

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka settings every finpipe client shares (bootstrap and security)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username or ""
            config["sasl.password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
            )
        if self.kafka_security_protocol.endswith("SSL"):
            if self.kafka_ssl_ca_location:
                config["ssl.ca.location"] = self.kafka_ssl_ca_location
            config["ssl.endpoint.identification.algorithm"] = self.kafka_ssl_endpoint_identification
        return config

    def pg_connect_kwargs(self, database: str | None = None) -> dict[str, Any]:
        """psycopg2.connect keyword arguments; the password only when one is configured."""
        kwargs: dict[str, Any] = {
            "host": self.pg_host,
            "port": self.pg_port,
            "dbname": database or self.pg_database,
            "user": self.pg_user,
            "application_name": "finpipe",
        }
        if self.pg_password is not None:
            kwargs["password"] = self.pg_password.get_secret_value()
        return kwargs

    def to_env(self, include_secrets: bool = False) -> dict[str, str]:
        """These settings as ``FINPIPE_*`` variables, to hand to a child process."""
        names = self.env_var_names()
        env = {}
        for field, value in self.model_dump(exclude_none=True).items():
            if isinstance(getattr(self, field), SecretStr):
                if not include_secrets:
                    continue
                value = getattr(self, field).get_secret_value()
            env[names[field]] = str(value)
        return env

    def env_var_names(self) -> dict[str, str]:
        """Field name -> env var name, for docs and for checking Kubernetes files."""
        return {name: f"{ENV_PREFIX}{name.upper()}" for name in type(self).model_fields}

    # --- Manager (Dagster) ---
    # Symbols the manager requests: "default" (finpipe_manager/data/universe.csv), "sample" (the
    # offline bokeh sample set) or the path of a CSV file with columns symbol,name.
    universe: str = "default"
    # First daily partition of stock_tasks (ISO date); the sample data starts in 2000.
    partitions_start: str = "2000-01-03"
    # Range of the trading calendar (ISO dates): partitions and tasks must fall inside it. A fixed
    # end keeps the partitions definition (and its holiday list) the same from day to day.
    calendar_start: str = "1962-01-02"
    calendar_end: str = "2035-12-31"
    # Most sessions in one fetch task (about a trading year), so one bad chunk stays small.
    max_sessions_per_task: int = Field(default=252, ge=1, le=5000)
    # A task pending or published for longer than this is published again (stuck-task
    # sensor); long enough for a large backfill to drain through the agents first.
    task_timeout_seconds: int = Field(default=7200, ge=10)
    # The daily schedule also re-requests this many sessions before the new one, as
    # corrections: sources revise volumes and prices (and apply splits) days after a session.
    revision_window_sessions: int = Field(default=5, ge=0, le=60)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
