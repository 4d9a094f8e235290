"""Validate custom resources against the CRDs of the operator versions finpipe pins.

The CRD files come from ``scripts/fetch_crds.py`` (Go module proxy and Maven Central, cached
under ~/.cache/finpipe/crds). Validation follows what ``kubectl apply`` does with the API
server's strict field validation (the default since Kubernetes 1.27): an unknown field is an
error, not silently pruned. So every object schema of a CRD that neither lists
``additionalProperties`` nor sets ``x-kubernetes-preserve-unknown-fields`` is closed before
validating with JSON Schema (Draft 4: the dialect of OpenAPI v3 schemas). CEL rules
(``x-kubernetes-validations``) are not evaluated.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO / "scripts" / "fetch_crds.py"


class _CrdLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML 1.1 reads a bare ``=`` as the obsolete "value" type; in CRDs it is a string."""


_CrdLoader.add_constructor(
    "tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node)
)


def fetch_crd_dir() -> Path:
    """Run scripts/fetch_crds.py (a no-op when cached) and return the cache directory."""
    proc = subprocess.run(
        [sys.executable, str(FETCH_SCRIPT)], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/fetch_crds.py failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def _strict(node: Any, path: tuple[str, ...] = ()) -> Any:
    """A copy of an OpenAPI v3 schema where every object rejects fields it does not declare."""
    if isinstance(node, list):
        return [_strict(item, path) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value, (*path, key)) for key, value in node.items()}
    is_object = out.get("type") == "object" or "properties" in out
    # The root's metadata is ObjectMeta, which the API server validates itself.
    if (
        is_object
        and path != ("properties", "metadata")
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") is True and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@dataclass(frozen=True)
class CrdKey:
    group: str
    version: str
    kind: str


class CrdSchemas:
    """The served versions of every CRD under a directory tree, by group, version and kind."""

    def __init__(self, root: Path) -> None:
        self.schemas: dict[CrdKey, dict[str, Any]] = {}
        self.sources: dict[CrdKey, str] = {}
        for path in sorted(root.rglob("*.yaml")):
            for doc in yaml.load_all(path.read_text(), Loader=_CrdLoader):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    if not version.get("served", True):
                        continue
                    key = CrdKey(spec["group"], version["name"], spec["names"]["kind"])
                    schema = version["schema"]["openAPIV3Schema"]
                    self.schemas[key] = _strict(schema)
                    self.sources[key] = f"{path.parent.name}/{path.name}"

    def key_of(self, obj: dict[str, Any]) -> CrdKey:
        group, _, version = obj["apiVersion"].rpartition("/")
        return CrdKey(group, version, obj["kind"])

    def knows(self, obj: dict[str, Any]) -> bool:
        return self.key_of(obj) in self.schemas

    def errors(self, obj: dict[str, Any]) -> list[str]:
        """Every schema violation of ``obj``; KeyError if no CRD serves its kind/version."""
        key = self.key_of(obj)
        schema = self.schemas[key]
        validator = jsonschema.Draft4Validator(schema)
        found = [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
        name = obj.get("metadata", {}).get("name", "")
        if not name:
            found.append("metadata/name: missing")
        return found


def iter_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path of a nested mapping/list (for mutation tests)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from iter_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from iter_paths(item, (*prefix, i))


def rename_key(obj: dict[str, Any], path: tuple[Any, ...], new: str) -> dict[str, Any]:
    """A deep copy of ``obj`` with the key at ``path`` renamed (a typo)."""
    out = copy.deepcopy(obj)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    parent[new] = parent.pop(path[-1])
    return out
