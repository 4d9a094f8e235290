"""charts/finpipe-workers renders, and every object it renders is valid Kubernetes.

Built-in kinds are validated offline against the Kubernetes OpenAPI schemas shipped with
kubernetes-validate, in strict mode (unknown fields are errors). Custom resources (KEDA,
Strimzi, Prometheus Operator) are validated against the CRDs of the pinned operator versions
(crd_schemas.py), also strictly; an object of a kind neither knows fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from crd_schemas import CrdSchemas

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "finpipe-workers"
WORKERS_VALUES = REPO / "helm-values" / "finpipe-workers.yaml"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema here.
SCHEMA_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
BUILTIN_KINDS = {
    "ConfigMap",
    "StatefulSet",
    "PodDisruptionBudget",
    "Service",
    "ServiceAccount",
    "NetworkPolicy",
}
CUSTOM_KINDS = {
    "ScaledObject",
    "TriggerAuthentication",
    "KafkaUser",
    "PrometheusRule",
    "PodMonitor",
}


def validate_objects(
    objects: list[dict[str, Any]], version: str, crds: CrdSchemas
) -> list[dict[str, Any]]:
    """Validate every object strictly, built-in or custom; return the custom resources."""
    custom = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if crds.knows(obj):
            custom.append(obj)
            errors = crds.errors(obj)
            assert not errors, f"{where} ({crds.sources[crds.key_of(obj)]}): {errors}"
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} (k8s {version}): {exc.message} at {'/'.join(map(str, exc.path))}")
    return custom


def validate_hpa_behavior(behavior: dict[str, Any], version: str) -> None:
    """A ScaledObject passes this block to an HPA unchanged: validate it inside one (the
    ScaledObject CRD leaves it open)."""
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "probe"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "x"},
            "minReplicas": 1,
            "maxReplicas": 2,
            "behavior": behavior,
        },
    }
    kubernetes_validate.validate(hpa, version, strict=True)


def check_scaled_object(obj: dict[str, Any], version: str) -> None:
    spec = obj["spec"]
    assert spec["scaleTargetRef"]["kind"] == "StatefulSet"
    validate_hpa_behavior(spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"], version)
    for trigger in spec["triggers"]:
        assert trigger["type"] == "kafka"


def by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        out.setdefault(obj["kind"], []).append(obj)
    return out


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_chart_objects_validate(
    rendered_full: list[dict[str, Any]], version: str, crds: CrdSchemas
) -> None:
    kinds = {obj["kind"] for obj in rendered_full}
    assert kinds == BUILTIN_KINDS | CUSTOM_KINDS, kinds
    custom = validate_objects(rendered_full, version, crds)
    assert {o["kind"] for o in custom} == CUSTOM_KINDS
    for obj in custom:
        if obj["kind"] == "ScaledObject":
            check_scaled_object(obj, version)


def test_chart_defaults_render_and_validate(render, crds) -> None:
    """The chart's own values.yaml alone is a working configuration too."""
    objects = render()
    for obj in validate_objects(objects, SCHEMA_VERSIONS[-1], crds):
        if obj["kind"] == "ScaledObject":
            check_scaled_object(obj, SCHEMA_VERSIONS[-1])


def test_plaintext_cluster_without_users_renders_and_validates(render, crds) -> None:
    """A cluster without Kafka authentication: no KafkaUsers, no TriggerAuthentications, no CA,
    fixed replicas for the agent (no KEDA)."""
    objects = render(
        "-f",
        str(WORKERS_VALUES),
        "--set",
        "config.kafka_security_protocol=PLAINTEXT",
        "--set",
        "config.kafka_bootstrap_servers=kafka:9092",
        "--set",
        "kafka.caSecret.name=",
        "--set",
        "kafka.managerUser.enabled=false",
        "--set",
        "kedaKafkaAuth.enabled=false",
        "--set",
        "workers.agent.kafkaUser.enabled=false",
        "--set",
        "workers.processor.kafkaUser.enabled=false",
        "--set",
        "workers.agent.autoscaling.enabled=false",
        "--set",
        "workers.agent.replicas=2",
    )
    kinds = by_kind(validate_objects(objects, SCHEMA_VERSIONS[-1], crds))
    assert "KafkaUser" not in kinds and "TriggerAuthentication" not in kinds
    assert len(kinds["ScaledObject"]) == 1  # only the processor is autoscaled now
    sets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "StatefulSet"}
    assert sets["finpipe-workers-agent"]["spec"]["replicas"] == 2
    assert "replicas" not in sets["finpipe-workers-processor"]["spec"]
    for sts in sets.values():
        spec = sts["spec"]["template"]["spec"]
        assert all(v["name"] != "kafka-ca" for v in spec["volumes"])
        env = {e["name"] for c in spec["containers"] for e in c["env"]}
        assert "FINPIPE_KAFKA_SASL_USERNAME" not in env


def test_max_replicas_above_partitions_is_refused(render_error) -> None:
    err = render_error(
        "-f",
        str(WORKERS_VALUES),
        "--set",
        "workers.processor.autoscaling.maxReplicaCount=13",
    )
    assert "exceeds config.topic_partitions" in err


def test_keda_auth_without_a_kafka_user_is_refused(render_error) -> None:
    err = render_error("-f", str(WORKERS_VALUES), "--set", "workers.agent.kafkaUser.enabled=false")
    assert "needs workers.agent.kafkaUser.enabled" in err


def test_helm_lint(helm: str) -> None:
    proc = subprocess.run(
        [
            helm,
            "lint",
            str(CHART),
            "--strict",
            "-f",
            str(WORKERS_VALUES),
            "--kube-version",
            "1.33.0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "setting",
    [
        "workers.processor.autoscaling.maxReplicaCont=3",  # misspelt key
        "terminationGracePeriodSeconds=30",  # shorter than the worst batch
        "workers.agent.autoscaling.lagThreshold=0",
        "workers.agent.kafkaUser.transactionl=true",  # misspelt key
        "config.pg_user=finpipe",  # an identity in the shared ConfigMap
        "workers.agent.extraEnv[0].name=FINPIPE_PG_USER",  # a setting outside env/secretEnv
    ],
)
def test_values_schema_rejects(render_error, setting: str) -> None:
    err = render_error("-f", str(WORKERS_VALUES), "--set", setting)
    assert "values don't meet the specifications of the schema" in err, err
