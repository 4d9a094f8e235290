"""helm-values/dagster.yaml uses only keys the Dagster chart defines and only Secrets the docs
create, and it points at the code, image and storage finpipe actually has."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from finpipe_dagster.constants import MANAGER_CONCURRENCY_TAG

REPO = Path(__file__).resolve().parents[2]
KEYS_FILE = Path(__file__).with_name("dagster_chart_keys.txt")


def load_inventory() -> set[str]:
    lines = (line.strip() for line in KEYS_FILE.read_text().splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def key_paths(node: Any, prefix: str = "") -> list[str]:
    """Every leaf's dotted path; list items add `[]`; empty maps and lists are leaves."""
    if isinstance(node, dict) and node:
        out = []
        for key, value in node.items():
            out += key_paths(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(node, list) and node and all(isinstance(i, dict) for i in node):
        return [p for item in node for p in key_paths(item, prefix + "[]")]
    return [prefix]


def allowed(path: str, inventory: set[str]) -> bool:
    if path in inventory:
        return True
    # Any ancestor declared free-form (`a.b.*`) admits everything below it.
    tokens = re.findall(r"[^.\[\]]+|\[\]", path)
    for i in range(1, len(tokens)):
        ancestor = ""
        for tok in tokens[:i]:
            ancestor += tok if tok == "[]" or not ancestor else f".{tok}"
        if f"{ancestor}.*" in inventory:
            return True
    return False


def docs_secrets(doc: str) -> set[str]:
    """Names of the Secrets docs/deploy.md tells the user to create with kubectl."""
    doc = doc.replace("\\\n", " ")
    return set(re.findall(r"kubectl\b[^\n]*?\bcreate secret \w+ ([a-z0-9][a-z0-9.-]*)", doc))


def dagster_secret_refs(values: Any) -> set[str]:
    """Every Secret the values name: the chart's postgres secret, envSecrets, secretKeyRefs."""
    found = {values["global"]["postgresqlSecretName"]}

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            if key == "secretKeyRef":
                found.add(node["name"])
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for item in node:
                if key == "envSecrets":
                    found.add(item["name"])
                walk(item, key)

    walk(values)
    return found


def test_inventory_names_its_source() -> None:
    header = KEYS_FILE.read_text().split("\n\n")[0]
    assert "1.13.27" in header and "helm/dagster/values.yaml" in header


def test_inventory_walker_rejects_unknown_keys() -> None:
    inv = {"a.b", "a.c[].d", "a.e.*"}
    assert allowed("a.b", inv) and allowed("a.c[].d", inv) and allowed("a.e[].x.y", inv)
    assert not allowed("a.x", inv) and not allowed("a.c[].z", inv) and not allowed("a.bb", inv)


def test_dagster_values_use_only_chart_keys(dagster_values) -> None:
    inventory = load_inventory()
    unknown = [p for p in key_paths(dagster_values) if not allowed(p, inventory)]
    assert not unknown, f"keys the Dagster chart does not define: {unknown}"


def test_dagster_secrets_are_created_in_the_docs(dagster_values, deploy_doc, rendered) -> None:
    """Every Secret the Dagster values read is created in docs/deploy.md, or is the password
    Secret Strimzi writes for a KafkaUser the workers chart renders (the manager's)."""
    refs = dagster_secret_refs(dagster_values)
    assert "dagster-postgresql-secret" in refs
    kafka_users = {o["metadata"]["name"] for o in rendered if o["kind"] == "KafkaUser"}
    created = docs_secrets(deploy_doc)
    missing = refs - created - kafka_users
    assert not missing, f"referenced but never created in docs/deploy.md: {missing}"
    # The chart must read, not generate, the password Secret; and no password in the file.
    assert dagster_values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in dagster_values["postgresql"]
    assert "postgresql-password" in deploy_doc


def test_every_secret_any_file_references_is_created_in_the_docs(
    rendered, cnpg_docs, dagster_values, deploy_doc
) -> None:
    """Every Secret the pods, KEDA, CloudNativePG and Dagster read is created in
    docs/deploy.md, except the KafkaUsers' password Secrets, which Strimzi's User Operator
    creates under the user's name (checked to be rendered KafkaUsers)."""
    refs = set()
    for obj in rendered:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            refs |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
        refs |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        if obj["kind"] == "TriggerAuthentication":
            refs |= {r["name"] for r in obj["spec"]["secretTargetRef"]}
    cluster = next(d for d in cnpg_docs if d["kind"] == "Cluster")
    refs.add(cluster["spec"]["bootstrap"]["initdb"]["secret"]["name"])
    refs |= {
        r["passwordSecret"]["name"]
        for r in cluster["spec"]["managed"]["roles"]
        if "passwordSecret" in r
    }
    store = cluster["spec"]["backup"]["barmanObjectStore"]["s3Credentials"]
    refs |= {ref["name"] for ref in store.values()}
    refs |= dagster_secret_refs(dagster_values)
    for volume in dagster_values["dagster-user-deployments"]["deployments"][0]["volumes"]:
        refs.add(volume["secret"]["secretName"])
    kafka_users = {o["metadata"]["name"] for o in rendered if o["kind"] == "KafkaUser"}
    created = docs_secrets(deploy_doc)
    assert kafka_users and not kafka_users & created
    assert refs and refs - kafka_users <= created, (refs - kafka_users) - created


def test_dagster_config_maps_come_from_the_workers_chart(dagster_values, rendered) -> None:
    config_maps = {o["metadata"]["name"] for o in rendered if o["kind"] == "ConfigMap"}
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    launcher = dagster_values["runLauncher"]["config"]["k8sRunLauncher"]
    for ref in deployment["envConfigMaps"] + launcher["envConfigMaps"]:
        assert ref["name"] in config_maps


def test_dagster_env_vars_are_settings_fields(dagster_values, code_settings) -> None:
    names = code_settings.env_var_names()
    secret_names = {names["pg_password"], names["kafka_sasl_password"]}
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    for env in deployment["env"]:
        assert env["name"] in set(names.values())
        if env["name"] in secret_names:
            assert "value" not in env and "secretKeyRef" in env["valueFrom"]
        else:  # the manager's identity: names, not credentials
            assert set(env) == {"name", "value"}


def test_code_location_is_finpipe_in_the_shared_image(dagster_values, workers_values) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (deployment,) = dagster_values["dagster-user-deployments"]["deployments"]
    assert dagster_values["dagster-user-deployments"]["enabled"] is True
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("-m") + 1] == pyproject["tool"]["dagster"]["module_name"]
    # One image for the code location and the workers.
    assert deployment["image"]["repository"] == workers_values["image"]["repository"]
    assert deployment["image"]["tag"] == workers_values["image"]["tag"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True


def test_chart_version_moves_with_the_dagster_library(dagster_values, deploy_doc) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = dict(d.split("==") for d in pyproject["project"]["dependencies"])
    version = pins["dagster"]
    assert pins["dagster-webserver"] == version
    for part in ("dagsterWebserver", "dagsterDaemon"):
        # The chart composes repository:tag, so a digest rides in the tag (docs/deploy.md,
        # "Pinning the Dagster images"): "1.13.27@sha256:<64 hex>".
        tag, _, digest = str(dagster_values[part]["image"]["tag"]).partition("@")
        assert tag == version, part
        assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), part
    assert f"DAGSTER_CHART_VERSION={version}" in deploy_doc
    assert '--version "$DAGSTER_CHART_VERSION"' in deploy_doc


def test_run_launcher_coordinator_daemon_and_telemetry(dagster_values) -> None:
    assert dagster_values["runLauncher"]["type"] == "K8sRunLauncher"
    daemon = dagster_values["dagsterDaemon"]
    assert daemon["enabled"] is True
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    limits = queued["tagConcurrencyLimits"]
    assert limits and all(lim["limit"] >= 1 and lim["key"] for lim in limits)
    assert queued["maxConcurrentRuns"] >= max(lim["limit"] for lim in limits)
    # The manager job's tag (finpipe_dagster) runs one at a time, as in the local instance.
    by_key = {lim["key"]: lim for lim in limits}
    assert by_key[MANAGER_CONCURRENCY_TAG]["limit"] == 1
    assert "value" not in by_key[MANAGER_CONCURRENCY_TAG]
    assert dagster_values["telemetry"]["enabled"] is False
    assert dagster_values["postgresql"]["enabled"] is False
    assert dagster_values["dagsterWebserver"]["service"]["type"] == "ClusterIP"
    assert not dagster_values.get("ingress", {}).get("enabled", False)


@pytest.mark.parametrize(
    "doc, expected",
    [
        ("kubectl -n x create secret generic one --from-literal=a=$B", {"one"}),
        ("kubectl -n x create secret generic two \\\n  --type=kubernetes.io/basic-auth", {"two"}),
        ("kubectl get secret three", set()),
    ],
)
def test_docs_secret_parser(doc: str, expected: set[str]) -> None:
    assert docs_secrets(doc) == expected
