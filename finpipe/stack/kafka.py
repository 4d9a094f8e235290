"""A real Apache Kafka broker (KRaft) from Maven Central jars, run locally.

Kafka is not packaged on PyPI or Debian here; ``mvn dependency:copy-dependencies`` on
``infra/kafka/pom.xml`` fetches the broker jars once into a cache outside the repo. One node
(broker and controller in one process) serves development and tests. ``KafkaNode`` and
``start_nodes`` take any layout: the tests' 3-broker cluster and SASL/SCRAM node
(tests/fixtures/kafka_nodes.py) are made of them, on their own ports and data dirs.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from finpipe.stack import paths
from finpipe.stack.processes import ManagedProcess, port_open, wait_until
from finpipe.stack.settings import StackSettings
from finpipe_core.settings import Settings

logger = logging.getLogger(__name__)

POM = paths.REPO_ROOT / "infra" / "kafka" / "pom.xml"
# Every broker process finpipe runs is named "kafka" or "kafka-<something>" (the tests' cluster
# and SASL node too): ``finpipe down`` stops them after the processes that use them.
BROKER_NAME = "kafka"
LOG4J_CONFIG = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def kafka_libs(settings: StackSettings) -> Path:
    """The broker's jar directory, fetched from Maven Central on first use.

    Several checkouts share the cache: a file lock makes one of them fetch while the others
    wait, and the marker is written only once the jars are in place.
    """
    libs = paths.cache_dir(settings) / f"kafka-{settings.kafka_version}" / "libs"
    marker = libs.parent / ".complete"
    if marker.exists() and libs.is_dir():
        return libs
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RuntimeError("Kafka needs Java 17+ and Maven on PATH (apt-get install maven)")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and libs.is_dir():  # fetched by another process meanwhile
            return libs
        marker.unlink(missing_ok=True)
        tmp = libs.parent / "libs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        logger.info(
            "fetching Kafka %s jars from Maven Central into %s", settings.kafka_version, libs
        )
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-Dkafka.version={settings.kafka_version}",
                f"-DoutputDirectory={tmp}",
            ],
            check=True,
        )
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        marker.write_text(settings.kafka_version + "\n")
    return libs


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node (broker + controller in one JVM) with its own ports and data dir."""

    node_id: int
    host: str
    broker_port: int
    controller_port: int
    home: Path  # config, data and cluster id of this node
    voters: str  # controller.quorum.voters of the whole cluster
    replication: int  # replication of Kafka's internal topics
    heap: str
    name: str

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.broker_port}"

    def process(self, settings: StackSettings) -> ManagedProcess:
        return ManagedProcess(self.name, paths.run_dir(settings), paths.log_dir(settings))

    def server_properties(self) -> str:
        min_isr = min(2, self.replication)
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={self.voters}",
                f"listeners=PLAINTEXT://{self.host}:{self.broker_port},"
                f"CONTROLLER://{self.host}:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://{self.host}:{self.broker_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.home / 'data'}",
                # Topics are created by finpipe with explicit settings, never by accident.
                "auto.create.topics.enable=false",
                f"offsets.topic.replication.factor={self.replication}",
                f"transaction.state.log.replication.factor={self.replication}",
                f"transaction.state.log.min.isr={min_isr}",
                f"share.coordinator.state.topic.replication.factor={self.replication}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                # Tests start consumers often; no point waiting 3 s for more members.
                "group.initial.rebalance.delay.ms=0",
                "num.partitions=1",
                "log.retention.hours=168",
                "",
            ]
        )

    def _java(self, settings: StackSettings, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{kafka_libs(settings)}/*",
            main,
            *args,
        ]

    def ensure_formatted(self, settings: StackSettings, cluster_id: str) -> bool:
        """Write config and format the storage once; True if it formatted now."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "server.properties").write_text(self.server_properties())
        (self.home / "log4j2.properties").write_text(LOG4J_CONFIG)
        if (self.home / "data" / "meta.properties").exists():
            return False
        subprocess.run(
            self._java(
                # "--cluster-id=ID": an id may start with "-" (URL-safe base64), which the
                # tool's argument parser would take for an option after a separate "-t".
                settings,
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                f"--cluster-id={cluster_id}",
                "-c",
                str(self.home / "server.properties"),
            ),
            check=True,
            capture_output=True,
        )
        return True

    def start(self, settings: StackSettings) -> bool:
        """Start the node if it is not running; True if it started now."""
        proc = self.process(settings)
        if proc.running():
            return False
        for port in (self.broker_port, self.controller_port):
            if port_open(self.host, port):
                raise RuntimeError(
                    f"port {port} is taken by a process that is not finpipe's {self.name}; "
                    "stop it or set FINPIPE_KAFKA_BOOTSTRAP_SERVERS to another port"
                )
        proc.start(self._java(settings, "kafka.Kafka", str(self.home / "server.properties")))
        return True

    def admin_config(self) -> dict[str, str]:
        """What a client needs to reach this node (a secured node adds its credentials)."""
        return {"bootstrap.servers": self.bootstrap}

    def wait_ready(self, settings: StackSettings, timeout: float = 90.0) -> float:
        """Wait until the broker answers a metadata request; return seconds waited."""
        proc = self.process(settings)

        def ready() -> bool:
            if not proc.running():
                raise RuntimeError(f"{self.name} exited; see {proc.log_file}")
            if not port_open(self.host, self.broker_port):
                return False
            admin = AdminClient({**self.admin_config(), "log_level": 0})
            try:
                metadata = admin.list_topics(timeout=2)
                return any(b.id == self.node_id for b in metadata.brokers.values())
            except Exception:
                return False

        return wait_until(ready, timeout, interval=0.5, what=f"{self.name} ready")

    def running(self, settings: StackSettings) -> bool:
        return self.process(settings).running()

    def stop(self, settings: StackSettings) -> bool:
        # A controlled shutdown of a KRaft node takes a few seconds; allow for it.
        return self.process(settings).stop(timeout=30)


def _host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return host, int(port)


def kafka_single_node(settings: StackSettings) -> KafkaNode:
    """The development broker, listening on ``FINPIPE_KAFKA_BOOTSTRAP_SERVERS``."""
    host, port = _host_port(settings.kafka_bootstrap_servers)
    return KafkaNode(
        node_id=1,
        host=host,
        broker_port=port,
        controller_port=settings.kafka_controller_port,
        home=paths.state_dir(settings) / "kafka" / "single",
        voters=f"1@{host}:{settings.kafka_controller_port}",
        replication=1,
        heap=settings.kafka_heap,
        name=BROKER_NAME,
    )


def is_broker(process_name: str) -> bool:
    """True for the managed process of a Kafka node (see ``BROKER_NAME``)."""
    return process_name == BROKER_NAME or process_name.startswith(f"{BROKER_NAME}-")


def start_nodes(settings: StackSettings, nodes: list[KafkaNode]) -> tuple[list[str], float]:
    """Format (once) and start ``nodes``; return the names started and seconds until ready."""
    id_file = nodes[0].home.parent / "cluster.id"
    if not id_file.exists():
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(new_cluster_id())
    cluster_id = id_file.read_text().strip()
    t0 = time.monotonic()
    started = []
    for node in nodes:
        node.ensure_formatted(settings, cluster_id)
        if node.start(settings):
            started.append(node.name)
    for node in nodes:
        node.wait_ready(settings)
    return started, time.monotonic() - t0


def admin_client(settings: Settings, bootstrap: str | None = None) -> AdminClient:
    config = settings.kafka_client_config()
    if bootstrap:
        config["bootstrap.servers"] = bootstrap
    return AdminClient(config)


def ensure_topics(
    settings: Settings,
    topics: list[str] | None = None,
    *,
    bootstrap: str | None = None,
    partitions: int | None = None,
    replication: int | None = None,
    min_insync: int | None = None,
) -> list[str]:
    """Create the finpipe topics that do not exist yet; return the names created.

    An existing topic with a different partition count is reported, not changed: adding
    partitions would move keys to other partitions and break per-symbol order.
    """
    admin = admin_client(settings, bootstrap)
    wanted = topics or [settings.tasks_topic, settings.data_topic, settings.dlq_topic]
    existing = admin.list_topics(timeout=10).topics
    partitions = partitions or settings.topic_partitions
    for name in wanted:
        if name in existing and len(existing[name].partitions) != partitions:
            logger.warning(
                "topic=%s has %d partitions, settings say %d; left as it is",
                name,
                len(existing[name].partitions),
                partitions,
            )
    new = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication or settings.topic_replication,
            config={
                "min.insync.replicas": str(min_insync or settings.topic_min_insync_replicas),
            },
        )
        for name in wanted
        if name not in existing
    ]
    created = []
    for name, future in admin.create_topics(new, operation_timeout=30).items() if new else []:
        future.result()
        created.append(name)
    return created
