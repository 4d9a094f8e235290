"""Kafka with SASL/SCRAM-SHA-512 and ACLs: the whole pipeline runs through it, configured
from FINPIPE_* variables only, and clients without valid credentials or ACLs are refused.

The node (``tests.fixtures.kafka_nodes.sasl_node_up``) is a separate single KRaft node with
fresh SCRAM users per module; the development broker is not touched.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from finpipe_core.calendar import trading_days
from finpipe_manager.outbox import emit_tasks, make_producer
from finpipe_manager.universe import UniverseEntry, sync_universe
from tests.fixtures.kafka_nodes import create_acls, pipeline_acls
from tests.fixtures.pipeline import Pipeline, assert_indicators_exact

pytestmark = [
    pytest.mark.integration,
    # exchange_calendars (the trading calendar) under pandas 3.
    pytest.mark.filterwarnings(
        "ignore:.*returning an ndarray that drops timezone:pandas.errors.Pandas4Warning"
    ),
]

SYMBOLS = ["SECA", "SECB", "SECC"]
START, END = dt.date(2018, 1, 2), dt.date(2019, 6, 28)


def _errors_seen(config: dict[str, Any], action) -> tuple[list[KafkaError], Exception | None]:
    """Run ``action(client_config)`` with an error callback; return the client-level errors
    librdkafka reported and the exception ``action`` raised, if any."""
    errors: list[KafkaError] = []
    lock = threading.Lock()

    def on_error(err: KafkaError) -> None:
        with lock:
            errors.append(err)

    raised = None
    clients: list[Any] = []
    try:
        action({**config, "error_cb": on_error, "log_level": 0}, clients)
    except KafkaException as exc:
        raised = exc
    for client in clients:  # serve the error callbacks still queued
        client.poll(0.5)
    return errors, raised


def _list_topics(config: dict[str, Any], clients: list[Any]) -> None:
    admin = AdminClient(config)
    clients.append(admin)
    admin.list_topics(timeout=2)


def _produce_once(topic: str):
    def run(config: dict[str, Any], clients: list[Any]) -> None:
        producer = Producer({**config, "message.timeout.ms": 2000})
        clients.append(producer)
        failures: list[KafkaError] = []
        producer.produce(
            topic,
            key=b"AAPL",
            value=b"{}",
            on_delivery=lambda err, _msg: err and failures.append(err),
        )
        producer.flush(5)
        if failures:
            raise KafkaException(failures[0])

    return run


def test_pipeline_end_to_end_over_sasl_scram_with_acls(sasl_broker, secure_db, tmp_path):
    """Manager (outbox, as the manager DB role), an agent and a processor subprocess (as the
    processor DB role) each authenticate as their own SCRAM user with only their ACLs."""
    tag = uuid.uuid4().hex[:8]
    names = {
        "tasks_topic": f"sec-tasks-{tag}",
        "data_topic": f"sec-data-{tag}",
        "dlq_topic": f"sec-dlq-{tag}",
        "agent_group": f"sec-agents-{tag}",
        "processor_group": f"sec-processors-{tag}",
    }
    sasl_broker.create_topics([names["tasks_topic"], names["data_topic"], names["dlq_topic"]])
    manager = sasl_broker.settings_for(secure_db.settings_for("manager"), "manager")
    manager = manager.model_copy(update={**names, "source": "synthetic"})
    create_acls(
        sasl_broker.admin,
        pipeline_acls(
            manager,
            manager=sasl_broker.user("manager"),
            agent=sasl_broker.user("agent"),
            processor=sasl_broker.user("processor"),
        ),
    )

    # The Pipeline observes as the schema owner; workers get their identity from extra env.
    observer = manager.model_copy(
        update={"pg_user": secure_db.owner_settings.pg_user, "pg_password": None}
    )
    pipe = Pipeline(observer, tmp_path)
    started = time.monotonic()
    try:
        pipe.start("agent", **sasl_broker.worker_env("agent"))
        pipe.start(
            "processor", **sasl_broker.worker_env("processor"), **secure_db.env_for("processor")
        )
        conn = secure_db.connect("manager")
        sync_universe(conn, [UniverseEntry(s, f"{s} test") for s in SYMBOLS])
        producer = make_producer(manager)
        report = emit_tasks(
            conn,
            producer,
            manager.tasks_topic,
            SYMBOLS,
            START,
            END,
            requested_by="security-test",
            max_sessions=200,
        )
        assert report.publish.ok, report.publish.failed
        task_ids = [t.task_id for t in report.tasks]
        assert len(task_ids) == 2 * len(SYMBOLS)
        pipe.wait_tasks(task_ids, timeout=150)
        elapsed = time.monotonic() - started
    finally:
        codes = {w.kind: w.stop() for w in pipe.workers}
    assert codes == {"agent": 0, "processor": 0}, codes

    owner = secure_db.connect("owner")
    with owner.cursor() as cur:
        cur.execute(
            "SELECT status, count(*) FROM tasks WHERE task_id = ANY(%s) GROUP BY 1", (task_ids,)
        )
        assert dict(cur.fetchall()) == {"done": len(task_ids)}
    sessions = len(trading_days(START, END))
    for symbol in SYMBOLS:
        assert assert_indicators_exact(owner, symbol) == sessions
    print(
        f"SASL pipeline: {len(task_ids)} tasks, {sessions * len(SYMBOLS)} bars in {elapsed:.1f} s"
    )


def test_client_without_credentials_is_refused(sasl_broker):
    errors, raised = _errors_seen({"bootstrap.servers": sasl_broker.bootstrap}, _list_topics)
    assert raised is not None, "a PLAINTEXT client got metadata from the SASL listener"
    assert raised.args[0].code() == KafkaError._TRANSPORT
    # The broker drops the connection as soon as a non-SASL request arrives.
    assert errors and all(
        e.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN) for e in errors
    )


@pytest.mark.parametrize("who", ["wrong password", "unknown user"])
def test_wrong_credentials_get_an_authentication_error(sasl_broker, who):
    config = sasl_broker.client_config("agent", password=secrets.token_urlsafe(12))
    if who == "unknown user":
        config["sasl.username"] = "intruder"
    for action in (_list_topics, _produce_once("anything")):
        errors, raised = _errors_seen(config, action)
        assert raised is not None
        auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
        assert auth, [str(e) for e in errors]
        assert "SCRAM-SHA-512" in auth[0].str() or "credentials" in auth[0].str()


def test_authenticated_user_is_limited_to_its_acls(sasl_broker, local_stack):
    """The processor may write dead letters but not tasks; the valid admin sees everything."""
    tag = uuid.uuid4().hex[:8]
    tasks, dlq = f"acl-tasks-{tag}", f"acl-dlq-{tag}"
    sasl_broker.create_topics([tasks, dlq], partitions=1)
    create_acls(
        sasl_broker.admin,
        pipeline_acls(
            local_stack.model_copy(
                update={"tasks_topic": tasks, "dlq_topic": dlq, "data_topic": f"acl-data-{tag}"}
            ),
            manager=sasl_broker.user("manager"),
            agent=sasl_broker.user("agent"),
            processor=sasl_broker.user("processor"),
        ),
    )
    processor = sasl_broker.client_config("processor")
    _, raised = _errors_seen(processor, _produce_once(dlq))
    assert raised is None
    _, raised = _errors_seen(processor, _produce_once(tasks))
    assert raised is not None
    assert raised.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Topics a user has no ACL on are invisible to it.
    visible = AdminClient(processor).list_topics(timeout=10).topics
    assert dlq in visible and tasks not in visible
    assert tasks in AdminClient(sasl_broker.admin).list_topics(timeout=10).topics


def test_sasl_ssl_listener_needs_the_broker_certificate(sasl_broker):
    """TLS (self-signed keystore from keytool): SCRAM over SASL_SSL works when the client
    trusts the broker's certificate, and the handshake fails when it does not."""
    config = {
        **sasl_broker.client_config("manager"),
        "bootstrap.servers": sasl_broker.tls_bootstrap,
        "security.protocol": "SASL_SSL",
    }
    errors, raised = _errors_seen({**config, "ssl.ca.location": sasl_broker.ca_file}, _list_topics)
    assert raised is None, [str(e) for e in errors]
    errors, raised = _errors_seen(config, _list_topics)
    assert raised is not None
    assert any(e.code() == KafkaError._SSL for e in errors) or any(
        "certificate verify failed" in e.str() for e in errors
    ), [str(e) for e in errors]
