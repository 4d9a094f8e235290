"""Dagster resources: finpipe's PostgreSQL database, the Kafka task producer, manager settings.

Each resource reads the shared ``finpipe_core.settings.Settings`` (env ``FINPIPE_*``) when it is
used, and any field set on the resource overrides the matching setting; a deployment can bind
a field to the environment with ``dg.EnvVar("FINPIPE_...")``. Nothing secret is written here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import psycopg2.extensions
from confluent_kafka import Producer
from pydantic import Field

from finpipe_core.db import connection
from finpipe_core.settings import Settings
from finpipe_manager.outbox import FLUSH_TIMEOUT_S, make_producer


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


class PostgresResource(dg.ConfigurableResource):
    """finpipe's PostgreSQL database (symbols, tasks, prices, indicators)."""

    host: str | None = Field(default=None, description="FINPIPE_PG_HOST if unset")
    port: int | None = Field(default=None, description="FINPIPE_PG_PORT if unset")
    database: str | None = Field(default=None, description="FINPIPE_PG_DATABASE if unset")
    user: str | None = Field(default=None, description="FINPIPE_PG_USER if unset")
    password: str | None = Field(default=None, description="FINPIPE_PG_PASSWORD if unset")

    def settings(self) -> Settings:
        return _settings(
            pg_host=self.host,
            pg_port=self.port,
            pg_database=self.database,
            pg_user=self.user,
            pg_password=self.password,
        )

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A new connection, closed on exit (transactions are the caller's)."""
        with connection(self.settings()) as conn:
            yield conn


class KafkaProducerResource(dg.ConfigurableResource):
    """An idempotent Kafka producer for fetch tasks (key = symbol)."""

    bootstrap_servers: str | None = Field(
        default=None, description="FINPIPE_KAFKA_BOOTSTRAP_SERVERS if unset"
    )
    tasks_topic: str | None = Field(default=None, description="FINPIPE_TASKS_TOPIC if unset")

    def settings(self) -> Settings:
        return _settings(
            kafka_bootstrap_servers=self.bootstrap_servers, tasks_topic=self.tasks_topic
        )

    @property
    def topic(self) -> str:
        return self.settings().tasks_topic

    @contextmanager
    def producer(self) -> Iterator[Producer]:
        """A producer flushed on exit."""
        producer = make_producer(self.settings())
        try:
            yield producer
        finally:
            producer.flush(FLUSH_TIMEOUT_S)


class ManagerResource(dg.ConfigurableResource):
    """What the manager requests: the universe, task size and stuck-task timeout."""

    universe: str | None = Field(
        default=None, description="'default', 'sample' or a CSV path; FINPIPE_UNIVERSE if unset"
    )
    max_sessions_per_task: int | None = Field(
        default=None, description="FINPIPE_MAX_SESSIONS_PER_TASK if unset"
    )
    task_timeout_seconds: int | None = Field(
        default=None, description="FINPIPE_TASK_TIMEOUT_SECONDS if unset"
    )

    def settings(self) -> Settings:
        return _settings(
            universe=self.universe,
            max_sessions_per_task=self.max_sessions_per_task,
            task_timeout_seconds=self.task_timeout_seconds,
        )

    @property
    def task_timeout(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.settings().task_timeout_seconds)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources of the code location; every value comes from the environment."""
    return {
        "postgres": PostgresResource(),
        "kafka": KafkaProducerResource(),
        "manager": ManagerResource(),
    }
