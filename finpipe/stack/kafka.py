"""A real Apache Kafka broker (KRaft) from Maven Central jars, run locally.

Kafka is not packaged on PyPI or Debian here; ``mvn dependency:copy-dependencies`` on
``infra/kafka/pom.xml`` fetches the broker jars once into a cache outside the repo. One node
(broker and controller in one process) serves development and tests; three nodes on other
ports and data dirs serve the fault tests. A separate node that requires SASL/SCRAM (ACLs
enforced, optionally TLS) serves the security tests (``sasl_node_up``/``sasl_node_down``).
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from finpipe.stack import paths
from finpipe.stack.processes import ManagedProcess, port_open, wait_until
from finpipe_core.settings import Settings

logger = logging.getLogger(__name__)

POM = paths.REPO_ROOT / "infra" / "kafka" / "pom.xml"
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


def kafka_libs(settings: Settings) -> Path:
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
        logger.info("fetching Kafka %s jars from Maven Central into %s", settings.kafka_version,
                    libs)
        subprocess.run(
            [
                "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                f"-Dkafka.version={settings.kafka_version}", f"-DoutputDirectory={tmp}",
            ],
            check=True,
        )
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        marker.write_text(settings.kafka_version + "\n")
    return libs


def _new_cluster_id() -> str:
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

    def process(self, settings: Settings) -> ManagedProcess:
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

    def _java(self, settings: Settings, main: str, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp", f"{kafka_libs(settings)}/*", main, *args,
        ]

    def ensure_formatted(self, settings: Settings, cluster_id: str) -> bool:
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
                settings, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                f"--cluster-id={cluster_id}", "-c", str(self.home / "server.properties"),
            ),
            check=True,
            capture_output=True,
        )
        return True

    def start(self, settings: Settings) -> bool:
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

    def wait_ready(self, settings: Settings, timeout: float = 90.0) -> float:
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

    def running(self, settings: Settings) -> bool:
        return self.process(settings).running()

    def stop(self, settings: Settings) -> bool:
        # A controlled shutdown of a KRaft node takes a few seconds; allow for it.
        return self.process(settings).stop(timeout=30)


def _host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return host, int(port)


def kafka_single_node(settings: Settings) -> KafkaNode:
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
        name="kafka",
    )


def kafka_cluster_nodes(settings: Settings, size: int = 3) -> list[KafkaNode]:
    """Nodes of the fault-test cluster: broker i on base+i, controller i on base+10+i."""
    host = "127.0.0.1"
    base = settings.kafka_cluster_base_port
    voters = ",".join(f"{i}@{host}:{base + 10 + i}" for i in range(1, size + 1))
    return [
        KafkaNode(
            node_id=i,
            host=host,
            broker_port=base + i,
            controller_port=base + 10 + i,
            home=paths.state_dir(settings) / "kafka" / "cluster" / f"node-{i}",
            voters=voters,
            replication=min(3, size),
            heap="384m",
            name=f"kafka-cluster-{i}",
        )
        for i in range(1, size + 1)
    ]


def start_nodes(settings: Settings, nodes: list[KafkaNode]) -> tuple[list[str], float]:
    """Format (once) and start ``nodes``; return the names started and seconds until ready."""
    id_file = nodes[0].home.parent / "cluster.id"
    if not id_file.exists():
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(_new_cluster_id())
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
                name, len(existing[name].partitions), partitions,
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
    for name, future in (admin.create_topics(new, operation_timeout=30).items() if new else []):
        future.result()
        created.append(name)
    return created


def cluster_bootstrap(nodes: list[KafkaNode]) -> str:
    return ",".join(node.bootstrap for node in nodes)


def cluster_up(settings: Settings, size: int = 3) -> tuple[str, float]:
    """Start the multi-broker fault-test cluster; return its bootstrap servers and ready time."""
    nodes = kafka_cluster_nodes(settings, size)
    _, seconds = start_nodes(settings, nodes)
    return cluster_bootstrap(nodes), seconds


def cluster_down(settings: Settings, size: int = 3) -> list[str]:
    """Stop the fault-test cluster's nodes; return the names stopped.

    All nodes get SIGTERM at once: stopped one by one, the last ones wait for a controller
    quorum that is already gone.
    """
    nodes = kafka_cluster_nodes(settings, size)
    for node in nodes:
        node.process(settings).signal(signal.SIGTERM)
    return [n.name for n in nodes if n.stop(settings)]


# --- SASL/SCRAM node (security tests) ----------------------------------------------------------
# A separate single KRaft node whose client listener requires SASL_PLAINTEXT with SCRAM-SHA-512
# (and, optionally, a SASL_SSL listener with a self-signed certificate made by the JDK's
# keytool), with ACLs enforced by KRaft's StandardAuthorizer. SCRAM credentials live in the
# cluster metadata; they are added when the storage is formatted (``--add-scram``), so every
# ``sasl_node_up`` formats a fresh node with credentials from the environment or generated for
# that start. Nothing here is used by the development broker, whose behaviour is unchanged.

SASL_NODE_NAME = "kafka-sasl"
SASL_MECHANISM = "SCRAM-SHA-512"
SASL_ADMIN_USER = "finpipe-admin"
# Admin (super user, inter-broker and controller) password; generated per start when unset.
SASL_ADMIN_PASSWORD_ENV = "FINPIPE_KAFKA_SASL_ADMIN_PASSWORD"
# Port offsets from ``kafka_cluster_base_port`` (the 3-broker cluster uses +1..+13).
SASL_BROKER_PORT_OFFSET = 50
SASL_CONTROLLER_PORT_OFFSET = 51
SASL_TLS_PORT_OFFSET = 52
# User names and passwords go into --add-scram and JAAS strings: keep them to characters that
# need no quoting in either.
_CREDENTIAL_RE = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
_ADMIN_SECRET_FILE = "admin.secret"


def _check_credential(kind: str, value: str) -> str:
    if not _CREDENTIAL_RE.fullmatch(value):
        raise ValueError(
            f"SASL {kind} must match {_CREDENTIAL_RE.pattern} (got {len(value)} characters)"
        )
    return value


def _jaas(module: str, **options: str) -> str:
    values = " ".join(f'{k}="{v}"' for k, v in options.items())
    return f"{module} required {values};"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (the file holds credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class SaslKafkaNode(KafkaNode):
    """A KRaft node whose clients must authenticate with SCRAM-SHA-512 (ACLs enforced).

    The controller listener uses SASL PLAIN with the admin's static credentials (SCRAM cannot
    authenticate the controller quorum before the metadata holding the credentials is read).
    """

    admin_user: str = SASL_ADMIN_USER
    admin_password: str = field(default="", repr=False)
    users: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    tls_port: int | None = None
    keystore_password: str = field(default="", repr=False)

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def keystore(self) -> Path:
        return self.tls_dir / "broker.p12"

    @property
    def ca_file(self) -> Path:
        """PEM of the broker's self-signed certificate: the trust anchor for TLS clients."""
        return self.tls_dir / "ca.pem"

    @property
    def tls_bootstrap(self) -> str | None:
        return f"{self.host}:{self.tls_port}" if self.tls_port else None

    def server_properties(self) -> str:
        replaced = ("listeners=", "advertised.listeners=", "inter.broker.listener.name=",
                    "listener.security.protocol.map=")
        common = [line for line in super().server_properties().splitlines()
                  if line and not line.startswith(replaced)]
        listeners = [f"SASL_PLAINTEXT://{self.host}:{self.broker_port}"]
        protocols = ["CONTROLLER:SASL_PLAINTEXT", "SASL_PLAINTEXT:SASL_PLAINTEXT"]
        if self.tls_port:
            listeners.append(f"SASL_SSL://{self.host}:{self.tls_port}")
            protocols.append("SASL_SSL:SASL_SSL")
        admin = {"username": self.admin_user, "password": self.admin_password}
        scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain_login = "org.apache.kafka.common.security.plain.PlainLoginModule"
        lines = [
            *common,
            f"listeners={','.join(listeners)},CONTROLLER://{self.host}:{self.controller_port}",
            f"advertised.listeners={','.join(listeners)}",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            f"listener.security.protocol.map={','.join(protocols)}",
            f"sasl.enabled.mechanisms={SASL_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}",
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "listener.name.controller.plain.sasl.jaas.config="
            + _jaas(plain_login, **admin, **{f"user_{self.admin_user}": self.admin_password}),
            f"listener.name.sasl_plaintext.{SASL_MECHANISM.lower()}.sasl.jaas.config="
            + _jaas(scram_login, **admin),
            # Authorisation: nothing is allowed without an ACL, except to the admin.
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{self.admin_user}",
            "allow.everyone.if.no.acl.found=false",
        ]
        if self.tls_port:
            lines += [
                f"listener.name.sasl_ssl.{SASL_MECHANISM.lower()}.sasl.jaas.config="
                + _jaas(scram_login, **admin),
                f"ssl.keystore.location={self.keystore}",
                "ssl.keystore.type=PKCS12",
                f"ssl.keystore.password={self.keystore_password}",
                f"ssl.key.password={self.keystore_password}",
            ]
        return "\n".join([*lines, ""])

    def ensure_formatted(self, settings: Settings, cluster_id: str) -> bool:
        """Write the config (owner-readable only) and format the storage with the SCRAM
        credentials of the admin and every user; always a fresh format."""
        shutil.rmtree(self.home / "data", ignore_errors=True)
        _write_private(self.home / "server.properties", self.server_properties())
        (self.home / "log4j2.properties").write_text(LOG4J_CONFIG)
        scram = []
        for name, password in ((self.admin_user, self.admin_password), *self.users):
            scram += ["--add-scram",
                      f"{SASL_MECHANISM}=[name={name},password={password}]"]
        result = subprocess.run(
            self._java(settings, "kafka.tools.StorageTool", "format",
                       f"--cluster-id={cluster_id}",  # an id may start with "-"
                       "-c", str(self.home / "server.properties"), *scram),
            capture_output=True, text=True,
        )
        if result.returncode != 0:  # the output never echoes the passwords
            raise RuntimeError(f"formatting {self.name} failed: {result.stdout}{result.stderr}")
        return True

    def make_keystore(self) -> None:
        """A self-signed certificate for 127.0.0.1/localhost in a PKCS12 keystore (keytool,
        no network), and its PEM for clients."""
        shutil.rmtree(self.tls_dir, ignore_errors=True)
        self.tls_dir.mkdir(parents=True, mode=0o700)
        common = ["-storepass", self.keystore_password, "-keystore", str(self.keystore)]
        subprocess.run(
            ["keytool", "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
             "-validity", "7", "-dname", f"CN={self.host}", "-storetype", "PKCS12",
             "-ext", f"SAN=IP:{self.host},DNS:localhost", "-keypass", self.keystore_password,
             "-noprompt", *common],
            check=True, capture_output=True,
        )
        subprocess.run(
            ["keytool", "-exportcert", "-rfc", "-alias", "broker", "-file", str(self.ca_file),
             *common],
            check=True, capture_output=True,
        )

    def admin_config(self) -> dict[str, str]:
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": SASL_MECHANISM,
            "sasl.username": self.admin_user,
            "sasl.password": self.admin_password,
        }


def _sasl_home(settings: Settings) -> Path:
    return paths.state_dir(settings) / "kafka" / "sasl"


def kafka_sasl_node(
    settings: Settings,
    users: dict[str, str] | None = None,
    *,
    admin_password: str | None = None,
    tls: bool = False,
) -> SaslKafkaNode:
    """The SASL node's layout: broker on base+50, controller base+51, SASL_SSL base+52.

    Without ``admin_password``, the one saved by the last ``sasl_node_up`` is used.
    """
    host = "127.0.0.1"
    base = settings.kafka_cluster_base_port
    home = _sasl_home(settings)
    if admin_password is None:
        secret = home / _ADMIN_SECRET_FILE
        admin_password = secret.read_text().strip() if secret.exists() else ""
    controller_port = base + SASL_CONTROLLER_PORT_OFFSET
    return SaslKafkaNode(
        node_id=1,
        host=host,
        broker_port=base + SASL_BROKER_PORT_OFFSET,
        controller_port=controller_port,
        home=home,
        voters=f"1@{host}:{controller_port}",
        replication=1,
        heap="384m",
        name=SASL_NODE_NAME,
        admin_password=admin_password,
        users=tuple(sorted((users or {}).items())),
        tls_port=base + SASL_TLS_PORT_OFFSET if tls else None,
        keystore_password=secrets.token_hex(16) if tls else "",
    )


def sasl_node_up(settings: Settings, users: dict[str, str], *, tls: bool = False) -> str:
    """Start a fresh SASL/SCRAM node whose SCRAM users are ``users`` (name -> password) plus
    the admin; return its SASL_PLAINTEXT bootstrap servers.

    A node already running is stopped first: credentials can only be added at format time.
    The admin password comes from ``FINPIPE_KAFKA_SASL_ADMIN_PASSWORD`` or is generated, and
    is kept (mode 0600) in the node's directory for ``sasl_admin_config``.

    :param tls: also listen with SASL_SSL on base+52 (self-signed certificate; clients trust
        ``sasl_ca_file(settings)``).
    """
    for name, password in users.items():
        _check_credential("user name", name)
        _check_credential(f"password of {name}", password)
    if SASL_ADMIN_USER in users:
        raise ValueError(f"{SASL_ADMIN_USER} is the node's admin; choose another user name")
    admin_password = os.environ.get(SASL_ADMIN_PASSWORD_ENV) or secrets.token_urlsafe(24)
    _check_credential("admin password", admin_password)
    sasl_node_down(settings)
    node = kafka_sasl_node(settings, users, admin_password=admin_password, tls=tls)
    node.home.mkdir(parents=True, exist_ok=True)
    os.chmod(node.home, 0o700)
    _write_private(node.home / _ADMIN_SECRET_FILE, admin_password + "\n")
    if tls:
        node.make_keystore()
    else:
        shutil.rmtree(node.tls_dir, ignore_errors=True)
    node.ensure_formatted(settings, _new_cluster_id())
    node.start(settings)
    node.wait_ready(settings)
    return node.bootstrap


def sasl_node_down(settings: Settings) -> bool:
    """Stop the SASL node; True if it was running. Its data stays until the next start."""
    return kafka_sasl_node(settings).stop(settings)


def sasl_admin_config(settings: Settings) -> dict[str, str]:
    """librdkafka settings of the SASL node's admin (super user) on its SASL_PLAINTEXT port."""
    node = kafka_sasl_node(settings)
    if not node.admin_password:
        raise RuntimeError(f"{SASL_NODE_NAME} has not been started (no admin credentials)")
    return node.admin_config()


def sasl_ca_file(settings: Settings) -> Path:
    """The SASL node's self-signed certificate (PEM), after ``sasl_node_up(..., tls=True)``."""
    return kafka_sasl_node(settings).ca_file


def sasl_tls_bootstrap(settings: Settings) -> str:
    host, port = "127.0.0.1", settings.kafka_cluster_base_port + SASL_TLS_PORT_OFFSET
    return f"{host}:{port}"


def pipeline_acls(
    settings: Settings, *, manager: str, agent: str, processor: str
) -> list[AclBinding]:
    """The ACLs each finpipe process needs on ``settings``' topics and groups, nothing more.

    - manager (outbox): write tasks.
    - agent: read tasks in its group, write bars and dead letters, in transactions whose ids
      start with ``<agent_group>-`` (workers/agent/main.py).
    - processor: read bars in its group, write dead letters.
    """
    def allow(kind: ResourceType, name: str, user: str, op: AclOperation,
              pattern: ResourcePatternType = ResourcePatternType.LITERAL) -> AclBinding:
        return AclBinding(kind, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW)

    topic, group, txn = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    read, write = AclOperation.READ, AclOperation.WRITE
    return [
        allow(topic, settings.tasks_topic, manager, write),
        allow(topic, settings.tasks_topic, agent, read),
        allow(group, settings.agent_group, agent, read),
        allow(topic, settings.data_topic, agent, write),
        allow(topic, settings.dlq_topic, agent, write),
        allow(txn, f"{settings.agent_group}-", agent, write, ResourcePatternType.PREFIXED),
        allow(topic, settings.data_topic, processor, read),
        allow(group, settings.processor_group, processor, read),
        allow(topic, settings.dlq_topic, processor, write),
    ]


def create_acls(
    admin_config: dict[str, str], bindings: list[AclBinding], timeout: float = 30.0
) -> None:
    """Create ``bindings`` with an admin client (idempotent on the broker side), and wait until
    the broker enforces them: the controller commits them first, the broker applies them when
    it has read that metadata."""
    admin = AdminClient(admin_config)
    for future in admin.create_acls(bindings, request_timeout=timeout).values():
        future.result()
    wanted = set(bindings)
    everything = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY,
    )

    def enforced() -> bool:
        return wanted <= set(admin.describe_acls(everything, request_timeout=10).result())

    wait_until(enforced, timeout, interval=0.2, what="ACLs enforced")
