"""helm-values/keda.yaml and helm-values/prometheus.yaml use only keys their charts define.

Helm ignores a value key that no template reads, so a misspelt key (``watchNamespaces``,
``podMonitorSelectorNilUsesHelmValue``) installs without a word and silently loses the setting.
Neither chart is on a package registry; each is checked against a committed inventory of its
values.yaml at the version docs/deploy.md installs (see the header of each inventory), with
the same walker as the Dagster values.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from tests.test_k8s.test_k8s_dagster import allowed, key_paths

HERE = Path(__file__).parent
REPO = HERE.parents[1]
# values file -> (inventory, chart version the inventory was read from)
CHARTS = {
    "keda.yaml": ("keda_chart_keys.txt", "2.18.1"),
    "prometheus.yaml": ("prometheus_chart_keys.txt", "77.14.0"),
}


def load_inventory(name: str) -> set[str]:
    lines = (line.strip() for line in (HERE / name).read_text().splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def unknown_keys(values: dict[str, Any], inventory: set[str]) -> list[str]:
    return [p for p in key_paths(values) if not allowed(p, inventory)]


@pytest.fixture(params=sorted(CHARTS))
def values_and_inventory(request, keda_values, prometheus_values) -> tuple[str, dict, set[str]]:
    values = {"keda.yaml": keda_values, "prometheus.yaml": prometheus_values}[request.param]
    return request.param, values, load_inventory(CHARTS[request.param][0])


def test_values_use_only_chart_keys(values_and_inventory) -> None:
    name, values, inventory = values_and_inventory
    unknown = unknown_keys(values, inventory)
    assert not unknown, f"helm-values/{name}: keys the chart does not define: {unknown}"


def test_a_misspelt_key_is_caught(values_and_inventory) -> None:
    """The check can fail: every key the chart lists, misspelt in turn, is reported. (Keys
    inside free-form maps such as ``resources`` are the Kubernetes API's, checked against the
    CRDs in test_k8s_crds.py where the chart passes them to a custom resource.)"""
    name, values, inventory = values_and_inventory
    checked = 0
    for path in key_paths(values):
        if path not in inventory:
            continue
        leaf = re.findall(r"[^.\[\]]+", path)
        broken = copy.deepcopy(values)
        node = broken
        for key in leaf[:-1]:
            node = node[key]
            if isinstance(node, list):  # a list of maps: misspell in its first item
                node = node[0]
        if not isinstance(node, dict) or leaf[-1] not in node:
            continue
        node[leaf[-1] + "x"] = node.pop(leaf[-1])
        assert unknown_keys(broken, inventory), f"{name}: misspelt {path} was not reported"
        checked += 1
    assert checked >= 3, f"{name}: only {checked} keys could be misspelt"


def test_inventories_name_their_chart_version_and_the_docs_install_it() -> None:
    deploy = (REPO / "docs" / "deploy.md").read_text()
    for inventory, version in CHARTS.values():
        header = (HERE / inventory).read_text().split("\n\n", 1)[0]
        assert f"version {version}" in header, (inventory, version)
        assert "chart_value_keys.py" in header, inventory
    assert "export KEDA_CHART_VERSION=2.18.1" in deploy
    assert "export KPS_CHART_VERSION=77.14.0" in deploy
