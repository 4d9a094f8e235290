"""Every custom resource we ship validates against the CRDs of the pinned operator versions,
and a misspelt field in any of them fails.

The CRDs are the operators' own (scripts/fetch_crds.py: KEDA v2.18.1, CloudNativePG v1.27.1 and
Prometheus Operator v0.85.0 from their Go modules, Strimzi 0.49.1 from its API test jar on
Maven Central). What is validated: the rendered workers chart (all options on), the Strimzi
and CloudNativePG manifests, and the Prometheus resource and PodMonitors kube-prometheus-stack
makes of helm-values/prometheus.yaml. Built-in objects in those files go through
kubernetes-validate.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from crd_schemas import CrdSchemas, iter_paths, rename_key

# kube-prometheus-stack turns each prometheus.additionalPodMonitors entry into a PodMonitor:
# these keys go to metadata, everything else to spec.
PODMONITOR_METADATA_KEYS = {"name", "additionalLabels"}
# The kinds whose every declared field we misspell (the list), and the kinds that must
# be covered at all.
MUTATED_KINDS = {"ScaledObject", "Kafka", "Cluster", "KafkaUser"}


def additional_pod_monitors(prometheus_values: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for entry in prometheus_values["prometheus"]["additionalPodMonitors"]:
        spec = {k: v for k, v in entry.items() if k not in PODMONITOR_METADATA_KEYS}
        out.append(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PodMonitor",
                "metadata": {"name": entry["name"], "labels": entry.get("additionalLabels", {})},
                "spec": spec,
            }
        )
    return out


def prometheus_resource(prometheus_values: dict[str, Any]) -> dict[str, Any]:
    """The Prometheus resource kube-prometheus-stack makes of prometheus.prometheusSpec: the
    chart's own switches dropped, storageSpec renamed to spec.storage, the rest passed on."""
    spec = {
        ("storage" if key == "storageSpec" else key): value
        for key, value in prometheus_values["prometheus"]["prometheusSpec"].items()
        if not key.endswith("NilUsesHelmValues")
    }
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "Prometheus",
        "metadata": {"name": "kube-prometheus-stack-prometheus"},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def shipped(rendered_full, strimzi_docs, cnpg_docs, prometheus_values) -> list[dict[str, Any]]:
    return [
        *rendered_full,
        *strimzi_docs,
        *cnpg_docs,
        *additional_pod_monitors(prometheus_values),
        prometheus_resource(prometheus_values),
    ]


def test_every_custom_resource_validates(shipped, crds: CrdSchemas) -> None:
    kinds = set()
    for obj in shipped:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if crds.knows(obj):
            errors = crds.errors(obj)
            assert not errors, f"{where} ({crds.sources[crds.key_of(obj)]}): {errors}"
            kinds.add(obj["kind"])
        else:
            # A built-in kind, or a custom one no CRD serves (then no schema is found: fails).
            try:
                kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
            except (
                kubernetes_validate.ValidationError,
                kubernetes_validate.SchemaNotFoundError,
            ) as exc:
                pytest.fail(f"{where}: {exc}")
    assert kinds >= {
        "ScaledObject",
        "TriggerAuthentication",
        "KafkaUser",
        "PrometheusRule",
        "PodMonitor",
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "Cluster",
        "Database",
        "ScheduledBackup",
        "Prometheus",
    }, kinds


def _declared(schema: dict[str, Any], path: tuple[Any, ...]) -> bool:
    """Whether the last key of ``path`` is a field the schema declares (not a map entry)."""
    node: Any = schema
    for step in path[:-1]:
        if node is None:
            return False
        if isinstance(step, int):
            node = node.get("items")
        elif step in node.get("properties", {}):
            node = node["properties"][step]
        else:
            node = (
                node.get("additionalProperties")
                if isinstance(node.get("additionalProperties"), dict)
                else None
            )
    return node is not None and path[-1] in node.get("properties", {})


def test_a_misspelt_field_fails_validation(shipped, crds: CrdSchemas) -> None:
    """Misspell each declared field under spec of every ScaledObject, Kafka, Cluster and
    KafkaUser, one at a time: each typo must be an error (free-form maps such as labels,
    broker config or resources keys are not fields)."""
    tried: dict[str, int] = {}
    for obj in shipped:
        if obj["kind"] not in MUTATED_KINDS:
            continue
        schema = crds.schemas[crds.key_of(obj)]
        for path in iter_paths(obj["spec"], ("spec",)):
            if isinstance(path[-1], int) or not _declared(schema, path):
                continue
            typo = rename_key(obj, path, f"{path[-1]}s")
            assert crds.errors(typo), f"{obj['kind']}: misspelt {'/'.join(map(str, path))} passed"
            tried[obj["kind"]] = tried.get(obj["kind"], 0) + 1
    assert set(tried) == MUTATED_KINDS and min(tried.values()) >= 5, tried


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("ScaledObject", ("spec", "scaleTargetRef", "name"), None),  # required field missing
        ("Kafka", ("spec", "kafka", "listeners", 0, "type"), "internall"),  # not in the enum
        ("Cluster", ("spec", "instances"), "three"),  # wrong type
        ("KafkaUser", ("spec", "authorization", "acls", 0, "operations", 0), "Reed"),
        ("ScheduledBackup", ("spec", "method"), "barman"),
    ],
)
def test_a_wrong_value_fails_validation(shipped, crds, kind, path, value) -> None:
    obj = next(o for o in shipped if o["kind"] == kind)
    assert not crds.errors(obj)
    bad = copy.deepcopy(obj)
    parent = bad
    for step in path[:-1]:
        parent = parent[step]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    assert crds.errors(bad), f"{kind}: {path} = {value!r} passed"
