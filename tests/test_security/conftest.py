"""Fixtures of the security tests: a Kafka node that requires SASL/SCRAM, and a scratch
database with login users in finpipe's least-privilege group roles (migration 0003).

Credentials are generated per test run (``secrets``), never written to the repository.
PostgreSQL runs with ``trust`` on loopback locally, so the passwords set here are not checked
by this cluster; what the tests prove is what each role may do once connected.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg2 import sql
from pydantic import SecretStr

from finpipe.stack.postgres import PostgresCluster
from finpipe_core.db import apply_migrations
from finpipe_core.settings import Settings
from tests.fixtures import kafka_nodes

# The group roles migration 0003 creates, by the process kind that logs in with them.
# Two agent logins: the rate-limit budget must work for every member of finpipe_agent.
GROUP_ROLES = {
    "manager": "finpipe_manager",
    "processor": "finpipe_processor",
    "agent": "finpipe_agent",
    "agent2": "finpipe_agent",
    "reader": "finpipe_reader",
}
RATELIMIT_SCHEMA = "finpipe_ratelimit"


def _password() -> str:
    return secrets.token_urlsafe(24)


# --- Kafka with SASL/SCRAM -------------------------------------------------------------------
@dataclass
class SaslBroker:
    """The running SASL node and the SCRAM users made for this test module."""

    bootstrap: str
    tls_bootstrap: str
    ca_file: str
    admin: dict[str, str] = field(repr=False)
    users: dict[str, str] = field(repr=False)  # kind (manager/agent/processor) -> password

    def user(self, kind: str) -> str:
        return f"finpipe-{kind}"

    def client_config(self, kind: str, *, password: str | None = None) -> dict[str, Any]:
        """librdkafka settings of user ``kind`` (or with another ``password``)."""
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": kafka_nodes.SASL_MECHANISM,
            "sasl.username": self.user(kind),
            "sasl.password": self.users[kind] if password is None else password,
        }

    def worker_env(self, kind: str) -> dict[str, str]:
        """The FINPIPE_* variables a worker of ``kind`` gets to reach this broker."""
        return {
            "FINPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "FINPIPE_KAFKA_SASL_MECHANISM": kafka_nodes.SASL_MECHANISM,
            "FINPIPE_KAFKA_SASL_USERNAME": self.user(kind),
            "FINPIPE_KAFKA_SASL_PASSWORD": self.users[kind],
        }

    def settings_for(self, base: Settings, kind: str) -> Settings:
        """``base`` pointed at this broker as user ``kind``."""
        return base.model_copy(
            update={
                "kafka_bootstrap_servers": self.bootstrap,
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": kafka_nodes.SASL_MECHANISM,
                "kafka_sasl_username": self.user(kind),
                "kafka_sasl_password": SecretStr(self.users[kind]),
            }
        )

    def create_topics(self, names: list[str], partitions: int = 3) -> None:
        admin = AdminClient(self.admin)
        new = [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        for future in admin.create_topics(new, operation_timeout=30).values():
            future.result()


@pytest.fixture(scope="module")
def sasl_broker(local_stack: Settings) -> Iterator[SaslBroker]:
    """A fresh SASL/SCRAM node (ACLs enforced, SASL_SSL listener too) for one test module."""
    users = {kind: _password() for kind in ("manager", "agent", "processor")}
    broker = SaslBroker("", "", "", {}, users)
    try:
        broker.bootstrap = kafka_nodes.sasl_node_up(
            local_stack, {broker.user(k): p for k, p in users.items()}, tls=True
        )
        broker.tls_bootstrap = kafka_nodes.sasl_tls_bootstrap(local_stack)
        broker.ca_file = str(kafka_nodes.sasl_ca_file(local_stack))
        broker.admin = kafka_nodes.sasl_admin_config(local_stack)
        yield broker
    finally:
        kafka_nodes.sasl_node_down(local_stack)


# --- PostgreSQL least privilege --------------------------------------------------------------
@dataclass
class SecureDatabase:
    """A migrated scratch database and one login user per group role."""

    owner_settings: Settings  # the schema owner (finpipe), for set-up and inspection
    logins: dict[str, tuple[str, str]] = field(repr=False)  # kind -> (user, password)
    _conns: list[psycopg2.extensions.connection] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return self.owner_settings.pg_database

    def settings_for(self, kind: str) -> Settings:
        user, password = self.logins[kind]
        return self.owner_settings.model_copy(
            update={"pg_user": user, "pg_password": SecretStr(password)}
        )

    def env_for(self, kind: str) -> dict[str, str]:
        user, password = self.logins[kind]
        return {"FINPIPE_PG_USER": user, "FINPIPE_PG_PASSWORD": password}

    def connect(
        self, kind: str = "owner", autocommit: bool = False
    ) -> psycopg2.extensions.connection:
        settings = self.owner_settings if kind == "owner" else self.settings_for(kind)
        conn = psycopg2.connect(**settings.pg_connect_kwargs(), connect_timeout=10)
        conn.autocommit = autocommit
        self._conns.append(conn)
        return conn

    def libpq_conninfo(self, kind: str) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **self.settings_for(kind).pg_connect_kwargs())

    def close(self) -> None:
        for conn in self._conns:
            if not conn.closed:
                conn.close()


@pytest.fixture(scope="module")
def secure_db(local_stack: Settings) -> Iterator[SecureDatabase]:
    """A scratch database with migrations applied (as the owner) and LOGIN users that are
    members of exactly one finpipe group role each; all dropped afterwards."""
    admin = PostgresCluster(local_stack).admin_connection()
    tag = uuid.uuid4().hex[:8]
    database = f"finpipe_test_sec_{tag}"
    logins = {kind: (f"fp_test_{kind}_{tag}", _password()) for kind in GROUP_ROLES}
    created_roles: list[str] = []
    db: SecureDatabase | None = None
    try:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(local_stack.pg_user)
                )
            )
        owner = local_stack.model_copy(update={"pg_database": database})
        apply_migrations(owner)
        with admin.cursor() as cur:
            for kind, (user, password) in logins.items():
                cur.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s IN ROLE {}").format(
                        sql.Identifier(user), sql.Identifier(GROUP_ROLES[kind])
                    ),
                    (password,),
                )
                created_roles.append(user)
                if GROUP_ROLES[kind] == "finpipe_agent":
                    # pyrate-limiter names its tables unqualified: agents find theirs in the
                    # budget schema (docs/security.md).
                    cur.execute(
                        sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(
                            sql.Identifier(user),
                            sql.Identifier(database),
                            sql.Identifier(RATELIMIT_SCHEMA),
                        )
                    )
        db = SecureDatabase(owner, logins)
        yield db
    finally:
        if db is not None:
            db.close()
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
            for user in created_roles:
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))
        admin.close()
