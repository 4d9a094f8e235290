"""charts/finpipe-workers renders, and every object it renders is valid Kubernetes.

Built-in kinds are validated offline against the Kubernetes OpenAPI schemas shipped with
kubernetes-validate, in strict mode (unknown fields are errors). Custom resources (KEDA,
Prometheus Operator) have no schema there: their Kubernetes-typed parts are validated by
embedding them in a built-in object, and their own fields are checked in Python.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "finpipe-workers"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema here.
SCHEMA_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
BUILTIN_KINDS = {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"}
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "PodMonitor"}


def validate_objects(objects: list[dict[str, Any]], version: str) -> list[dict[str, Any]]:
    """Validate every built-in object strictly; return the custom resources left over."""
    custom = []
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            custom.append(obj)
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} (k8s {version}): {exc.message}"
                        f" at {'/'.join(map(str, exc.path))}")
    return custom


def validate_hpa_behavior(behavior: dict[str, Any], version: str) -> None:
    """A ScaledObject passes this block to an HPA unchanged: validate it inside one."""
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "probe"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
            "minReplicas": 1,
            "maxReplicas": 2,
            "behavior": behavior,
        },
    }
    kubernetes_validate.validate(hpa, version, strict=True)


def check_scaled_object(obj: dict[str, Any], version: str) -> None:
    assert obj["apiVersion"] == "keda.sh/v1alpha1"
    spec = obj["spec"]
    assert set(spec) <= {
        "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
        "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced",
        "triggers",
    }, sorted(spec)
    assert spec["scaleTargetRef"]["kind"] == "Deployment"
    validate_hpa_behavior(spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"], version)
    for trigger in spec["triggers"]:
        assert trigger["type"] == "kafka"
        # KEDA's trigger metadata is map[string]string.
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger["metadata"]


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_chart_objects_validate(rendered: list[dict[str, Any]], version: str) -> None:
    kinds = {obj["kind"] for obj in rendered}
    assert kinds == BUILTIN_KINDS | {"ScaledObject"}, kinds
    custom = validate_objects(rendered, version)
    assert [o["kind"] for o in custom] == ["ScaledObject", "ScaledObject"]
    for obj in custom:
        check_scaled_object(obj, version)


def test_chart_defaults_render_and_validate(render) -> None:
    """The chart's own values.yaml alone is a working configuration too."""
    objects = render()
    for obj in validate_objects(objects, SCHEMA_VERSIONS[-1]):
        check_scaled_object(obj, SCHEMA_VERSIONS[-1])


def test_optional_features_render_and_validate(render) -> None:
    """SASL for KEDA, the chart's PodMonitor and fixed replicas (no KEDA) render validly."""
    objects = render(
        "-f", str(REPO / "helm-values" / "finpipe-workers.yaml"),
        "--set", "kedaKafkaAuth.enabled=true",
        "--set", "kedaKafkaAuth.usernameSecret.name=finpipe-kafka-user",
        "--set", "kedaKafkaAuth.passwordSecret.name=finpipe-kafka-user",
        "--set", "metrics.podMonitor.enabled=true",
        "--set", "workers.agent.autoscaling.enabled=false",
        "--set", "workers.agent.replicas=2",
    )
    custom = validate_objects(objects, SCHEMA_VERSIONS[-1])
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in custom:
        by_kind.setdefault(obj["kind"], []).append(obj)
    assert len(by_kind["ScaledObject"]) == 1  # only the processor is autoscaled now
    (auth,) = by_kind["TriggerAuthentication"]
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"username", "password"}
    (scaled,) = by_kind["ScaledObject"]
    check_scaled_object(scaled, SCHEMA_VERSIONS[-1])
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    (monitor,) = by_kind["PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert deployments["finpipe-workers-agent"]["spec"]["replicas"] == 2
    assert "replicas" not in deployments["finpipe-workers-processor"]["spec"]


def test_max_replicas_above_partitions_is_refused(render_error) -> None:
    err = render_error(
        "-f", str(REPO / "helm-values" / "finpipe-workers.yaml"),
        "--set", "workers.processor.autoscaling.maxReplicaCount=13",
    )
    assert "exceeds config.topic_partitions" in err


def test_sasl_without_secret_names_is_refused(render_error) -> None:
    err = render_error("--set", "kedaKafkaAuth.enabled=true")
    assert "usernameSecret.name" in err


def test_helm_lint(helm: str) -> None:
    proc = subprocess.run(
        [helm, "lint", str(CHART), "--strict", "-f", str(REPO / "helm-values" /
                                                          "finpipe-workers.yaml"),
         "--kube-version", "1.33.0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "setting",
    [
        "workers.processor.autoscaling.maxReplicaCont=3",  # misspelt key
        "terminationGracePeriodSeconds=30",  # shorter than the worst batch
        "workers.agent.autoscaling.lagThreshold=0",
    ],
)
def test_values_schema_rejects(render_error, setting: str) -> None:
    err = render_error("-f", str(REPO / "helm-values" / "finpipe-workers.yaml"), "--set", setting)
    assert "values don't meet the specifications of the schema" in err, err


def _pod(resources: dict[str, Any], affinity: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i", "resources": resources}]}
    if affinity:
        spec["affinity"] = affinity
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": spec}


def test_infrastructure_manifests_kubernetes_parts_validate(strimzi_docs, cnpg_docs,
                                                            prometheus_values) -> None:
    """Strimzi, CloudNativePG and Prometheus Operator resources have no schema here, but the
    Kubernetes objects inside them (resources, affinity, label selectors) do."""
    version = SCHEMA_VERSIONS[-1]
    for doc in strimzi_docs:
        assert doc["apiVersion"].startswith("kafka.strimzi.io/")
        assert doc["metadata"]["name"] == doc["metadata"]["name"].lower()  # DNS-1123 names
        if doc["kind"] == "KafkaNodePool":
            pod_template = doc["spec"]["template"]["pod"]
            kubernetes_validate.validate(
                _pod(doc["spec"]["resources"], pod_template["affinity"]), version, strict=True)
    cluster = next(d for d in cnpg_docs if d["kind"] == "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    kubernetes_validate.validate(_pod(cluster["spec"]["resources"]), version, strict=True)
    for monitor in prometheus_values["prometheus"]["additionalPodMonitors"]:
        pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "probe"},
               "spec": {"maxUnavailable": 1, "selector": monitor["selector"]}}
        kubernetes_validate.validate(pdb, version, strict=True)
