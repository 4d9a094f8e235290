#!/usr/bin/env python3
"""Print the key inventory of a Helm chart's values.yaml, for the tests of helm-values/.

The KEDA and kube-prometheus-stack charts are on no package registry, so the tests cannot read
them; they read a committed inventory made by this script instead (under a header saying
where the chart's values.yaml was read). Regenerate it when docs/deploy.md moves the chart:

    helm show values kedacore/keda --version 2.18.1 \\
      | scripts/chart_value_keys.py --source "kedacore/keda 2.18.1"

Format (read by tests/test_k8s/test_k8s_chart_values.py): one dotted key path per line, `[]`
for the items of a list. A line ending in `.*` admits any key below it: the chart's default
there is an empty map, an empty list or null, i.e. a free-form map or Kubernetes object that
the chart passes on as it is.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml


def inventory(node: Any, prefix: str = "") -> list[str]:
    """Every key path of a values tree (see the module docstring for the format)."""
    if isinstance(node, dict):
        if not node:
            return [f"{prefix}.*"] if prefix else []
        out: list[str] = []
        for key, value in node.items():
            out += inventory(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(node, list):
        if node and all(isinstance(item, dict) for item in node):
            return sorted({p for item in node for p in inventory(item, f"{prefix}[]")})
        # An empty list or a list of scalars: the path itself, and any items.
        return [prefix, f"{prefix}[].*"]
    if node is None:
        return [prefix, f"{prefix}.*"]
    return [prefix]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="chart and version, for the header")
    args = parser.parse_args()
    values = yaml.safe_load(sys.stdin)
    print(f"# Value keys of the Helm chart {args.source}, made by scripts/chart_value_keys.py")
    print("# from the chart's values.yaml. `[]`: list items; `.*`: any key below (free-form).")
    print()
    seen: set[str] = set()
    for path in inventory(values):
        if path not in seen:
            seen.add(path)
            print(path)


if __name__ == "__main__":
    main()
