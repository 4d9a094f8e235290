"""The Kubernetes files say what finpipe_core/settings.py (and the local stack's settings) say.

Topic names, consumer groups, ports, partitions and env var names in the rendered chart, the
Strimzi and CloudNativePG manifests, the Prometheus values and the Dagster values are compared
with the settings module, which is the single source of truth for every name.
"""

from __future__ import annotations

import importlib
import secrets
import sys
from typing import Any

import pytest

from finpipe.stack.settings import StackSettings
from finpipe_core.kafka import consumer_config
from finpipe_core.settings import Settings

# The workers' contract: SIGTERM finishes the open batch, which takes up to this long.
WORST_BATCH_SECONDS = 60
# Settings fields that hold credentials: only ever from a Secret, never from a ConfigMap.
SECRET_FIELDS = {"pg_password", "kafka_sasl_password"}
# What each worker consumes: (Settings field of the topic, Settings field of the group).
CONSUMES = {"agent": ("tasks_topic", "agent_group"), "processor": ("data_topic", "processor_group")}
# Settings that name the same thing everywhere (locally and in a cluster).
SHARED_NAMES = (
    "tasks_topic",
    "data_topic",
    "dlq_topic",
    "agent_group",
    "processor_group",
    "topic_partitions",
    "health_port",
    "metrics_port",
    "pg_database",
    "pg_dagster_database",
)
# Variables a pod may carry beyond FINPIPE_* settings (libpq's, for the agent's search_path).
OTHER_ENV = {"PGOPTIONS"}


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def worker_of(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def workloads(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The worker StatefulSets by worker name."""
    return {worker_of(s): s for s in of_kind(rendered, "StatefulSet").values()}


@pytest.fixture(scope="module")
def configmap(rendered: list[dict[str, Any]]) -> dict[str, str]:
    (cm,) = of_kind(rendered, "ConfigMap").values()
    return cm["data"]


@pytest.fixture(scope="module")
def cluster_settings(configmap: dict[str, str], settings_from_env, code_settings) -> Settings:
    """Settings as a worker pod builds them from the ConfigMap and its Secret."""
    secret_env = code_settings.env_var_names()["pg_password"]
    return settings_from_env({**configmap, secret_env: secrets.token_hex(8)})


# --- env var names -------------------------------------------------------------------------


def test_configmap_keys_are_settings_env_vars(configmap, code_settings: Settings) -> None:
    names = set(code_settings.env_var_names().values())
    assert set(configmap) <= names, sorted(set(configmap) - names)
    secret_names = {code_settings.env_var_names()[f] for f in SECRET_FIELDS}
    assert not secret_names & set(configmap), "a credential in the ConfigMap"


def test_no_local_stack_setting_reaches_the_pods(rendered, configmap) -> None:
    """A pod reads the shared settings only: no state dir, broker heap or local ports."""
    stack_only = {
        StackSettings.model_construct().env_var_names()[f] for f in StackSettings.stack_fields()
    }
    assert stack_only and not stack_only & set(configmap)
    for sts in of_kind(rendered, "StatefulSet").values():
        for c in containers(sts):
            assert not stack_only & {e["name"] for e in c.get("env", [])}, c["name"]


def test_every_env_var_in_the_pods_is_a_settings_field(rendered, code_settings) -> None:
    names = set(code_settings.env_var_names().values())
    secret_names = {code_settings.env_var_names()[f] for f in SECRET_FIELDS}
    cm_name = next(iter(of_kind(rendered, "ConfigMap")))
    for sts in of_kind(rendered, "StatefulSet").values():
        for c in containers(sts):
            if c["name"] == "numba-cache":  # copies files, reads no settings
                assert "env" not in c and "envFrom" not in c
                continue
            for env in c.get("env", []):
                assert env["name"] in names | OTHER_ENV, f"{c['name']}: {env['name']} unknown"
                if env["name"] in secret_names:
                    # Credentials only through secretKeyRef.
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
                elif "valueFrom" in env:
                    assert env["name"] == "FINPIPE_WORKER_ID", env
            assert c["envFrom"] == [{"configMapRef": {"name": cm_name}}]


def test_worker_id_is_the_pod_name(rendered) -> None:
    """Static group membership and the agent's transactional.id need a name that survives a
    restart: the StatefulSet pod's."""
    for sts in of_kind(rendered, "StatefulSet").values():
        main = sts["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in main["env"]}
        assert env["FINPIPE_WORKER_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_configmap_parses_as_settings(cluster_settings: Settings, configmap) -> None:
    # Every value is valid for its field (types, literals) and is read back unchanged.
    for env_name, raw in configmap.items():
        field = env_name.removeprefix("FINPIPE_").lower()
        assert str(getattr(cluster_settings, field)) == raw, field


def test_shared_names_equal_the_code_defaults(cluster_settings, code_settings) -> None:
    for field in SHARED_NAMES:
        assert getattr(cluster_settings, field) == getattr(code_settings, field), field


def test_each_worker_has_its_own_database_identity(rendered, workers_values, cnpg_docs) -> None:
    """The worker runs as its own login; only the migration init container is the owner."""
    owner = next(d for d in cnpg_docs if d["kind"] == "Cluster")["spec"]["bootstrap"]["initdb"]
    users = set()
    for worker, sts in workloads(rendered).items():
        spec = sts["spec"]["template"]["spec"]
        w = workers_values["workers"][worker]
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["FINPIPE_PG_USER"]["value"] == w["env"]["pg_user"] != owner["owner"]
        assert (
            env["FINPIPE_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == w["secretEnv"]["pg_password"]
        )
        assert w["secretEnv"]["pg_password"]["name"] != owner["secret"]["name"]
        users.add(w["env"]["pg_user"])
        for init in [c for c in spec.get("initContainers", []) if c["name"] == "migrate"]:
            init_env = {e["name"]: e for e in init["env"]}
            assert init_env["FINPIPE_PG_USER"]["value"] == owner["owner"]
            assert init_env["FINPIPE_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                "name": owner["secret"]["name"],
                "key": "password",
            }
            assert not any(e.startswith("FINPIPE_KAFKA") for e in init_env)
    assert len(users) == len(workloads(rendered))


# --- the StatefulSets ---------------------------------------------------------------------


def test_statefulsets_run_the_workers(rendered, code_settings: Settings) -> None:
    sets = workloads(rendered)
    services = {s["metadata"]["name"] for s in of_kind(rendered, "Service").values()}
    assert set(sets) == set(CONSUMES)
    for worker, sts in sets.items():
        spec = sts["spec"]["template"]["spec"]
        main = next(c for c in spec["containers"] if c["name"] == worker)
        assert main["command"] == ["python", "-m", f"workers.{worker}"]
        ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert ports == {"health": code_settings.health_port, "metrics": code_settings.metrics_port}
        assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert main["startupProbe"]["httpGet"]["port"] == "health"
        assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
        assert spec["terminationGracePeriodSeconds"] > WORST_BATCH_SECONDS
        # Slots start and stop independently; a rollout replaces one pod at a time.
        assert sts["spec"]["podManagementPolicy"] == "Parallel"
        assert sts["spec"]["updateStrategy"]["type"] == "RollingUpdate"
        assert sts["spec"]["serviceName"] in services
        assert "volumeClaimTemplates" not in sts["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        annotations = sts["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(code_settings.metrics_port)


def test_processor_migrates_before_consuming(rendered) -> None:
    sets = workloads(rendered)
    inits = {c["name"]: c for c in sets["processor"]["spec"]["template"]["spec"]["initContainers"]}
    assert "apply_migrations" in " ".join(inits["migrate"]["command"])
    # The compiled numba kernels are in place before the processor imports the engine.
    assert list(inits) == ["numba-cache", "migrate"]
    assert "initContainers" not in sets["agent"]["spec"]["template"]["spec"]


def test_pdbs_and_services_select_the_worker_pods(rendered, code_settings) -> None:
    pods = {w: s["spec"]["template"]["metadata"]["labels"] for w, s in workloads(rendered).items()}
    pdbs = {worker_of(p): p for p in of_kind(rendered, "PodDisruptionBudget").values()}
    services = {worker_of(s): s for s in of_kind(rendered, "Service").values()}
    assert set(pdbs) == set(services) == set(pods)
    for worker, labels in pods.items():
        assert pdbs[worker]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert services[worker]["spec"]["selector"].items() <= labels.items()
        (port,) = services[worker]["spec"]["ports"]
        assert (port["port"], port["targetPort"]) == (code_settings.metrics_port, "metrics")


# --- KEDA ---------------------------------------------------------------------------------


def test_scaled_objects_follow_the_consumer_groups(rendered, code_settings, configmap) -> None:
    scaled = {worker_of(s): s for s in of_kind(rendered, "ScaledObject").values()}
    deps = {w: s["metadata"]["name"] for w, s in workloads(rendered).items()}
    assert set(scaled) == set(CONSUMES)
    auto_offset_reset = consumer_config(code_settings, "any")["auto.offset.reset"]
    for worker, obj in scaled.items():
        topic_field, group_field = CONSUMES[worker]
        spec = obj["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": deps[worker],
        }
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        assert meta["topic"] == getattr(code_settings, topic_field)
        assert meta["consumerGroup"] == getattr(code_settings, group_field)
        assert meta["bootstrapServers"] == configmap["FINPIPE_KAFKA_BOOTSTRAP_SERVERS"]
        assert meta["offsetResetPolicy"] == auto_offset_reset
        assert meta["allowIdleConsumers"] == "false"
        # One poll batch of lag per replica: the batch size the worker's code consumes.
        per_replica = importlib.import_module(f"workers.{worker}.main").LAG_PER_REPLICA
        assert int(meta["lagThreshold"]) == per_replica
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["maxReplicaCount"] <= code_settings.topic_partitions


def test_scaling_behaviour_avoids_rebalance_storms(rendered) -> None:
    for obj in of_kind(rendered, "ScaledObject").values():
        behavior = obj["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        down, up = behavior["scaleDown"], behavior["scaleUp"]
        # Lag must stay low for minutes before a pod goes; each step is one pod at a time.
        assert down["stabilizationWindowSeconds"] >= 300
        assert up["stabilizationWindowSeconds"] >= 30
        assert all(
            p["type"] == "Pods" and p["value"] <= 2 for p in down["policies"] + up["policies"]
        )
        assert obj["spec"]["cooldownPeriod"] >= 60


# --- Strimzi ------------------------------------------------------------------------------


def test_kafka_cluster_is_kraft_three_brokers_replicated(strimzi_docs, cluster_settings) -> None:
    kafka = next(d for d in strimzi_docs if d["kind"] == "Kafka")
    pools = [d for d in strimzi_docs if d["kind"] == "KafkaNodePool"]
    assert all(d["apiVersion"] == "kafka.strimzi.io/v1beta2" for d in strimzi_docs)
    assert "zookeeper" not in kafka["spec"]
    assert sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"]) == 3
    assert sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"]) == 3
    assert all(
        p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for p in pools
    )
    for pool in pools:
        for vol in pool["spec"]["storage"]["volumes"]:
            assert vol["type"] == "persistent-claim" and vol["deleteClaim"] is False
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3 == cluster_settings.topic_replication
    assert config["min.insync.replicas"] == 2 == cluster_settings.topic_min_insync_replicas
    assert config["transaction.state.log.replication.factor"] == 3
    assert config["transaction.state.log.min.isr"] == 2
    assert config["offsets.topic.replication.factor"] == 3
    assert config["auto.create.topics.enable"] is False
    # The same broker version as the local stack's.
    assert kafka["spec"]["kafka"]["version"] == StackSettings.model_fields["kafka_version"].default


def test_bootstrap_servers_is_the_strimzi_tls_listener(
    strimzi_docs, cluster_settings, rendered
) -> None:
    kafka = next(d for d in strimzi_docs if d["kind"] == "Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["tls"] is True and listener["type"] == "internal"
    assert listener["authentication"]["type"] == "scram-sha-512"
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    expected = f"{kafka['metadata']['name']}-kafka-bootstrap.kafka.svc:{listener['port']}"
    assert cluster_settings.kafka_bootstrap_servers == expected
    assert cluster_settings.kafka_security_protocol == "SASL_SSL"
    assert cluster_settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    # KEDA speaks the same: SCRAM-SHA-512 over TLS.
    for obj in of_kind(rendered, "ScaledObject").values():
        meta = obj["spec"]["triggers"][0]["metadata"]
        assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable")
    # KEDA (namespace keda) and finpipe's pods must get through the listener's NetworkPolicy.
    peers = {
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for p in listener["networkPolicyPeers"]
    }
    assert peers == {"finpipe", "keda"}


def test_topics_match_settings(strimzi_docs, cluster_settings, code_settings) -> None:
    kafka = next(d for d in strimzi_docs if d["kind"] == "Kafka")
    topics = {d["spec"]["topicName"]: d for d in strimzi_docs if d["kind"] == "KafkaTopic"}
    assert set(topics) == {
        code_settings.tasks_topic,
        code_settings.data_topic,
        code_settings.dlq_topic,
    }
    for topic in topics.values():
        spec = topic["spec"]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert spec["partitions"] == code_settings.topic_partitions
        assert spec["replicas"] == cluster_settings.topic_replication
        assert spec["config"]["min.insync.replicas"] == cluster_settings.topic_min_insync_replicas
        assert spec["config"].get("max.message.bytes", 1048588) > code_settings.max_message_bytes


def test_max_replicas_never_exceed_partitions(rendered, strimzi_docs) -> None:
    partitions = {
        d["spec"]["topicName"]: d["spec"]["partitions"]
        for d in strimzi_docs
        if d["kind"] == "KafkaTopic"
    }
    for obj in of_kind(rendered, "ScaledObject").values():
        topic = obj["spec"]["triggers"][0]["metadata"]["topic"]
        assert obj["spec"]["maxReplicaCount"] <= partitions[topic]


# --- CloudNativePG ------------------------------------------------------------------------


def test_postgres_cluster_matches_settings(cnpg_docs, cluster_settings, workers_values) -> None:
    cluster = next(d for d in cnpg_docs if d["kind"] == "Cluster")
    database = next(d for d in cnpg_docs if d["kind"] == "Database")
    spec = cluster["spec"]
    assert spec["instances"] >= 3 and spec["storage"]["size"]
    assert cluster_settings.pg_host == f"{cluster['metadata']['name']}-rw.finpipe.svc"
    assert cluster_settings.pg_port == 5432
    initdb = spec["bootstrap"]["initdb"]
    assert initdb["database"] == cluster_settings.pg_database
    # The owner is who applies migrations: the processor's init container.
    migrate = workers_values["workers"]["processor"]["migrate"]
    assert initdb["owner"] == migrate["env"]["pg_user"]
    assert initdb["secret"]["name"] == migrate["secretEnv"]["pg_password"]["name"]
    assert database["spec"]["name"] == cluster_settings.pg_dagster_database
    assert database["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    roles = {r["name"]: r for r in spec["managed"]["roles"]}
    assert database["spec"]["owner"] in roles


def test_dagster_storage_is_the_cnpg_dagster_database(
    dagster_values, cnpg_docs, cluster_settings
) -> None:
    pg = dagster_values["postgresql"]
    cluster = next(d for d in cnpg_docs if d["kind"] == "Cluster")
    roles = {r["name"] for r in cluster["spec"]["managed"]["roles"]}
    assert pg["postgresqlHost"] == cluster_settings.pg_host
    assert pg["service"]["port"] == cluster_settings.pg_port
    assert pg["postgresqlDatabase"] == cluster_settings.pg_dagster_database
    assert pg["postgresqlUsername"] in roles


# --- Prometheus ---------------------------------------------------------------------------


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_prometheus_scrapes_every_worker(rendered, code_settings, prometheus_values) -> None:
    (monitor,) = [
        m
        for m in prometheus_values["prometheus"]["additionalPodMonitors"]
        if m["name"] == "finpipe-workers"
    ]
    assert monitor["namespaceSelector"]["matchNames"] == ["finpipe"]
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    for dep in of_kind(rendered, "StatefulSet").values():
        pod = dep["spec"]["template"]
        assert _matches(monitor["selector"], pod["metadata"]["labels"]), dep["metadata"]["name"]
        ports = {
            p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c["ports"]
        }
        assert ports[endpoint["port"]] == code_settings.metrics_port


def test_keda_watches_the_worker_namespace(keda_values) -> None:
    # "" is every namespace; otherwise the list must include finpipe's.
    watched = keda_values.get("watchNamespace", "")
    assert watched == "" or "finpipe" in watched.split(",")


# --- docs/deploy.md says what the files do -------------------------------------------------


def _fetch_crds_module() -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "fetch_crds.py"
    spec = importlib.util.spec_from_file_location("fetch_crds", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_deploy_doc_figures_match_the_files(
    deploy_doc, workers_values, strimzi_docs, cluster_settings
) -> None:
    import re

    workers = workers_values["workers"]
    m = re.search(
        r"lagThreshold` \((\d+) tasks for an agent.*?(\d+) bar chunks for a processor",
        deploy_doc,
        re.S,
    )
    assert m, "docs/deploy.md no longer states the lag per replica"
    assert int(m.group(1)) == workers["agent"]["autoscaling"]["lagThreshold"]
    assert int(m.group(2)) == workers["processor"]["autoscaling"]["lagThreshold"]
    kafka = next(d for d in strimzi_docs if d["kind"] == "Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert f"on **port {listener['port']}**" in deploy_doc
    assert f"`{cluster_settings.kafka_bootstrap_servers}`" in deploy_doc
    for field in ("kafka_security_protocol", "kafka_sasl_mechanism", "kafka_ssl_ca_location"):
        assert f"`{getattr(cluster_settings, field)}`" in deploy_doc, field
    for name in (
        "FINPIPE_KAFKA_SASL_USERNAME",
        "FINPIPE_KAFKA_SASL_PASSWORD",
        "FINPIPE_KAFKA_SSL_CA_LOCATION",
        "FINPIPE_WORKER_ID",
    ):
        assert name in deploy_doc, name
    grace = workers_values["terminationGracePeriodSeconds"]
    assert f"`terminationGracePeriodSeconds` is {grace}" in deploy_doc
    timeout_s = cluster_settings.kafka_session_timeout_ms // 1000
    assert f"**session timeout** ({timeout_s} s)" in deploy_doc


def test_deploy_doc_installs_the_validated_operator_versions(deploy_doc) -> None:
    """The operators docs/deploy.md installs are those whose CRDs the tests validate against."""
    versions = {s.name: s.version.lstrip("v") for s in _fetch_crds_module().SOURCES}
    assert f"export STRIMZI_VERSION={versions['strimzi']}" in deploy_doc
    assert f"export KEDA_CHART_VERSION={versions['keda']}" in deploy_doc
    assert f'$3 == "{versions["cloudnative-pg"]}"' in deploy_doc
    # kube-prometheus-stack is pinned to the release that ships this operator version (the
    # chart version itself is checked against its key inventory in test_k8s_chart_values).
    assert f"| Prometheus Operator | v{versions['prometheus-operator']} |" in deploy_doc
    assert "export KPS_CHART_VERSION=" in deploy_doc


def test_librdkafka_accepts_the_tls_settings(settings_from_env, code_settings) -> None:
    """The TLS settings map to properties librdkafka knows and loads (a client is built; the CA
    file is read at construction, so a missing one fails)."""
    import certifi
    from confluent_kafka import KafkaException, Producer

    env = {
        "FINPIPE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "FINPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "FINPIPE_KAFKA_SASL_USERNAME": "u",
        "FINPIPE_KAFKA_SSL_CA_LOCATION": certifi.where(),
    }
    env[code_settings.env_var_names()["kafka_sasl_password"]] = secrets.token_hex(8)
    config = settings_from_env(env).kafka_client_config()
    assert config["ssl.ca.location"] == certifi.where()
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    Producer(config).flush(0)
    missing = settings_from_env({**env, "FINPIPE_KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.crt"})
    with pytest.raises(KafkaException, match="ca"):
        Producer(missing.kafka_client_config())
    plain = settings_from_env({"FINPIPE_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"})
    assert "ssl.ca.location" not in plain.kafka_client_config()
