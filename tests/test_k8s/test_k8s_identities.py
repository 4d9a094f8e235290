"""Each process kind has its own PostgreSQL login and Kafka user, with exactly the rights its
work needs, and the pods, KEDA and the operators' resources agree on every name.

The database side is exercised on a real PostgreSQL in
tests/test_security/test_pg_roles.py (the CloudNativePG roles as declared here, migrations by
the owner without CREATEROLE, each login doing its job); these tests tie the chart, the
Dagster values and the CloudNativePG and Strimzi manifests to each other and to
finpipe_core/settings.py.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from finpipe_core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
# The group role each process kind's login must be in (migration 0004_roles).
GROUP_OF = {
    "agent": "finpipe_agent",
    "processor": "finpipe_processor",
    "manager": "finpipe_manager",
    "reader": "finpipe_reader",
}
# The keys of the Secret Strimzi's User Operator writes for a SCRAM-SHA-512 KafkaUser.
STRIMZI_SCRAM_SECRET_KEYS = {"password", "sasl.jaas.config"}
# The key of Strimzi's cluster CA certificate Secret (<cluster>-cluster-ca-cert).
STRIMZI_CA_KEY = "ca.crt"


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def workloads(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        s["metadata"]["labels"]["app.kubernetes.io/component"]: s
        for s in of_kind(rendered, "StatefulSet").values()
    }


def main_env(sts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}


def acl_set(user: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    out = set()
    for acl in user["spec"]["authorization"]["acls"]:
        res = acl["resource"]
        for op in acl["operations"]:
            out.add((res["type"], res["name"], res.get("patternType", "literal"), op))
    return out


@pytest.fixture(scope="module")
def cnpg_roles(cnpg_docs) -> dict[str, dict[str, Any]]:
    cluster = next(d for d in cnpg_docs if d["kind"] == "Cluster")
    return {r["name"]: r for r in cluster["spec"]["managed"]["roles"]}


@pytest.fixture(scope="module")
def manager_env(dagster_values) -> dict[str, dict[str, Any]]:
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    return {e["name"]: e for e in deployment["env"]}


@pytest.fixture(scope="module")
def kafka_users(rendered) -> dict[str, dict[str, Any]]:
    return of_kind(rendered, "KafkaUser")


# --- PostgreSQL --------------------------------------------------------------------------------


def test_cnpg_declares_the_group_roles_without_login(cnpg_roles) -> None:
    for group in GROUP_OF.values():
        assert cnpg_roles[group]["login"] is False
        assert "passwordSecret" not in cnpg_roles[group]


def test_the_owner_can_run_migration_0003_without_createrole(cnpg_roles, cnpg_docs) -> None:
    """Migration 0003 hands the budget table to finpipe_agent: the owner must be a member
    (and must not need CREATEROLE, which CloudNativePG's owner lacks)."""
    initdb = next(d for d in cnpg_docs if d["kind"] == "Cluster")["spec"]["bootstrap"]["initdb"]
    owner = cnpg_roles[initdb["owner"]]
    assert "finpipe_agent" in owner["inRoles"]
    assert not owner.get("createrole") and not owner.get("superuser")
    assert owner["passwordSecret"]["name"] == initdb["secret"]["name"]
    migration = (REPO / "finpipe_core/db/migrations/0004_roles.sql").read_text()
    assert "OWNER TO finpipe_agent" in migration


def _login_of(
    kind: str, pg_user: str, secret: dict[str, str], cnpg_roles: dict[str, dict[str, Any]]
) -> None:
    role = cnpg_roles[pg_user]
    assert role["login"] is True and role.get("ensure", "present") == "present"
    assert role["inRoles"] == [GROUP_OF[kind]], (kind, role)
    # CloudNativePG reads the password from a basic-auth Secret's `password` key.
    assert role["passwordSecret"]["name"] == secret["name"] and secret["key"] == "password"


def test_every_process_logs_in_as_its_own_kind(workers_values, manager_env, cnpg_roles) -> None:
    users = {}
    for worker in ("agent", "processor"):
        w = workers_values["workers"][worker]
        _login_of(worker, w["env"]["pg_user"], w["secretEnv"]["pg_password"], cnpg_roles)
        users[worker] = w["env"]["pg_user"]
    manager_user = manager_env["FINPIPE_PG_USER"]["value"]
    _login_of(
        "manager",
        manager_user,
        manager_env["FINPIPE_PG_PASSWORD"]["valueFrom"]["secretKeyRef"],
        cnpg_roles,
    )
    users["manager"] = manager_user
    readers = [n for n, r in cnpg_roles.items() if r.get("inRoles") == ["finpipe_reader"]]
    assert readers, "no reader login for dashboards and `finpipe status`"
    assert len(set(users.values())) == 3


def test_agent_pods_find_the_budget_schema(rendered) -> None:
    """CloudNativePG cannot set a role's search_path; the agent pods set it through libpq."""
    env = main_env(workloads(rendered)["agent"])
    assert env["PGOPTIONS"]["value"] == "-c search_path=finpipe_ratelimit"
    assert "PGOPTIONS" not in main_env(workloads(rendered)["processor"])


# --- Kafka -------------------------------------------------------------------------------------


def test_one_kafka_user_per_process_kind(
    kafka_users, workers_values, manager_env, strimzi_docs
) -> None:
    kafka = next(d for d in strimzi_docs if d["kind"] == "Kafka")
    names = {workers_values["workers"][w]["kafkaUser"]["name"] for w in ("agent", "processor")}
    names.add(manager_env["FINPIPE_KAFKA_SASL_USERNAME"]["value"])
    assert set(kafka_users) == names and len(names) == 3
    for user in kafka_users.values():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    # The User Operator must watch the namespace the users (and their Secrets) live in.
    operator = kafka["spec"]["entityOperator"]["userOperator"]
    assert operator["watchedNamespace"] == "finpipe"


def test_acls_are_exactly_what_each_process_does(
    kafka_users, workers_values, manager_env, code_settings: Settings
) -> None:
    s = code_settings
    w = workers_values["workers"]
    agent = kafka_users[w["agent"]["kafkaUser"]["name"]]
    processor = kafka_users[w["processor"]["kafkaUser"]["name"]]
    manager = kafka_users[manager_env["FINPIPE_KAFKA_SASL_USERNAME"]["value"]]

    def read(kind: str, name: str) -> set[tuple[str, str, str, str]]:
        return {(kind, name, "literal", "Read"), (kind, name, "literal", "Describe")}

    def write(name: str) -> set[tuple[str, str, str, str]]:
        return {("topic", name, "literal", "Write"), ("topic", name, "literal", "Describe")}

    assert acl_set(agent) == (
        read("topic", s.tasks_topic)
        | read("group", s.agent_group)
        | write(s.data_topic)
        | write(s.dlq_topic)
        | {
            ("transactionalId", f"{s.agent_group}-", "prefix", "Write"),
            ("transactionalId", f"{s.agent_group}-", "prefix", "Describe"),
        }
    )
    assert acl_set(processor) == (
        read("topic", s.data_topic) | read("group", s.processor_group) | write(s.dlq_topic)
    )
    assert acl_set(manager) == write(s.tasks_topic)


def test_workers_log_in_as_their_kafka_user(
    rendered, workers_values, settings_from_env, code_settings
) -> None:
    """The settings a worker pod builds from its ConfigMap and env give librdkafka SASL_SSL as
    its own user, trusting the mounted cluster CA."""
    (cm,) = of_kind(rendered, "ConfigMap").values()
    ca = workers_values["kafka"]["caSecret"]
    for worker, sts in workloads(rendered).items():
        user = workers_values["workers"][worker]["kafkaUser"]["name"]
        env = main_env(sts)
        assert env["FINPIPE_KAFKA_SASL_USERNAME"]["value"] == user
        assert env["FINPIPE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": user,
            "key": "password",
        }
        plain = {k: e["value"] for k, e in env.items() if "value" in e and k.startswith("FINPIPE_")}
        names = code_settings.env_var_names()
        fakes = {names[f]: secrets.token_hex(8) for f in ("kafka_sasl_password", "pg_password")}
        settings = settings_from_env({**cm["data"], **plain, **fakes})
        config = settings.kafka_client_config()
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.username"] == user
        ca_path = Path(config["ssl.ca.location"])
        spec = sts["spec"]["template"]["spec"]
        mount = next(
            m
            for m in spec["containers"][0]["volumeMounts"]
            if m["mountPath"] == str(ca_path.parent)
        )
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["secret"] == {
            "secretName": ca["name"],
            "items": [{"key": ca["key"], "path": ca_path.name}],
        }
    assert ca["key"] == STRIMZI_CA_KEY


def test_keda_authenticates_with_keys_that_exist(rendered, workers_values) -> None:
    """KEDA's TriggerAuthentication reads only keys Strimzi's Secrets have; the user name,
    which Strimzi's Secret lacks, comes from the worker container's own env."""
    auths = of_kind(rendered, "TriggerAuthentication")
    sets = workloads(rendered)
    for obj in of_kind(rendered, "ScaledObject").values():
        worker = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        user = workers_values["workers"][worker]["kafkaUser"]["name"]
        (trigger,) = obj["spec"]["triggers"]
        auth = auths[trigger["authenticationRef"]["name"]]["spec"]
        refs = {r["parameter"]: r for r in auth["secretTargetRef"]}
        assert set(refs) == {"password", "ca"}
        assert refs["password"]["name"] == user
        assert refs["password"]["key"] in STRIMZI_SCRAM_SECRET_KEYS
        assert refs["ca"] == {
            "parameter": "ca",
            "name": workers_values["kafka"]["caSecret"]["name"],
            "key": STRIMZI_CA_KEY,
        }
        (env_ref,) = auth["env"]
        assert env_ref["parameter"] == "username"
        container = next(
            c
            for c in sets[worker]["spec"]["template"]["spec"]["containers"]
            if c["name"] == env_ref["containerName"]
        )
        value = {e["name"]: e for e in container["env"]}[env_ref["name"]]
        assert value["value"] == user


# --- NetworkPolicies ---------------------------------------------------------------------------


def _egress_ports(policy: dict[str, Any]) -> set[int]:
    return {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}


def test_network_policies_fence_the_workers(rendered, cnpg_docs) -> None:
    policies = of_kind(rendered, "NetworkPolicy")
    cluster = next(d for d in cnpg_docs if d["kind"] == "Cluster")["metadata"]["name"]
    (cm,) = of_kind(rendered, "ConfigMap").values()
    kafka_port = int(cm["data"]["FINPIPE_KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1])
    for worker, sts in workloads(rendered).items():
        labels = sts["spec"]["template"]["metadata"]["labels"]
        (policy,) = [
            p
            for p in policies.values()
            if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
            and p["spec"]["podSelector"].get("matchLabels")
            and "egress" in p["spec"]
        ]
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        (ingress,) = policy["spec"]["ingress"]
        assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        expected = {53, kafka_port, int(cm["data"]["FINPIPE_PG_PORT"])}
        if worker == "agent":
            expected.add(443)
        assert _egress_ports(policy) == expected
        pg_rule = next(r for r in policy["spec"]["egress"] if "podSelector" in r["to"][0])
        assert pg_rule["to"][0]["podSelector"]["matchLabels"] == {"cnpg.io/cluster": cluster}
    pg_policy = policies[cluster]
    assert pg_policy["spec"]["podSelector"]["matchLabels"] == {"cnpg.io/cluster": cluster}


# --- alerts ------------------------------------------------------------------------------------


def test_alerts_use_metrics_that_exist(rendered, cnpg_docs) -> None:
    """Each alert's metrics are exported: the workers' own (workers/runtime.py) or
    CloudNativePG's custom queries in the same manifest, with label values the schema has."""
    import workers.runtime as runtime

    worker_metrics = {m.describe()[0].name for m in (runtime.LAG, runtime.MESSAGES, runtime.ERRORS)}
    worker_metrics |= {f"{n}_total" for n in worker_metrics}
    (cm,) = [d for d in cnpg_docs if d["kind"] == "ConfigMap"]
    queries = yaml.safe_load(cm["data"]["queries.yaml"])
    cluster = next(d for d in cnpg_docs if d["kind"] == "Cluster")
    assert {"name": cm["metadata"]["name"], "key": "queries.yaml"} in cluster["spec"]["monitoring"][
        "customQueriesConfigMap"
    ]
    cnpg_metrics = {
        f"cnpg_{q}_{col}"
        for q, spec in queries.items()
        for m in spec["metrics"]
        for col, d in m.items()
        if d["usage"] == "GAUGE"
    }
    schema = (REPO / "finpipe_core/db/migrations/0001_initial.sql").read_text()
    (rule,) = of_kind(rendered, "PrometheusRule").values()
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"FinpipeConsumerLagHigh", "FinpipeParkedSymbols", "FinpipeFailedTasks"} <= set(alerts)
    for name, alert in alerts.items():
        used = set(re.findall(r"\b((?:finpipe|cnpg)_[a-z_]+)\{", alert["expr"]))
        assert used and used <= worker_metrics | cnpg_metrics, (name, used)
        for status in re.findall(r'status="([a-z_]+)"', alert["expr"]):
            assert f"'{status}'" in schema, (name, status)
