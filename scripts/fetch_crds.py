#!/usr/bin/env python3
"""Fetch the CustomResourceDefinitions of the operator versions finpipe pins, into a cache.

The Kubernetes tests validate every custom resource we ship (Strimzi ``Kafka``/``KafkaUser``,
CloudNativePG ``Cluster``/``ScheduledBackup``, KEDA ``ScaledObject``, Prometheus Operator
``PrometheusRule``/``PodMonitor``) against the operators' own schemas. Those schemas are too
large to commit, so this script takes them from package registries only:

- KEDA, CloudNativePG and the Prometheus Operator publish their CRD YAML inside their Go
  modules: the module zip comes from the Go module proxy and is checked against the module's
  ``h1:`` checksum (the one ``go.sum`` records), so no Go toolchain is needed.
- Strimzi generates its CRDs from its Java API; the API's test jar on Maven Central carries
  the generated YAML (``crds/v1beta2/*.yaml``), checked against a pinned SHA-256.

Usage: ``scripts/fetch_crds.py`` prints the cache directory (one sub-directory per operator,
``<name>-<version>/``, holding the CRD files). Idempotent; a complete cache is reused offline.
Environment: FINPIPE_CACHE_DIR (default ~/.cache/finpipe), GOPROXY (first entry used),
MAVEN_REPO (default Maven Central).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import os
import shutil
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GoModule:
    """CRDs under ``crd_dir`` in a Go module, verified against its go.sum ``h1:`` hash."""

    name: str
    module: str
    version: str
    h1: str
    crd_dir: str


@dataclass(frozen=True)
class MavenJar:
    """CRDs under ``crd_dir`` in a Maven artifact, verified against a pinned SHA-256."""

    name: str
    group: str
    artifact: str
    version: str
    classifier: str
    sha256: str
    crd_dir: str


# The operator versions docs/deploy.md installs. Change a version and its checksum together
# (`go mod download -json <module>@<version>` prints the h1 sum).
SOURCES: tuple[GoModule | MavenJar, ...] = (
    GoModule(
        name="keda",
        module="github.com/kedacore/keda/v2",
        version="v2.18.1",
        h1="h1:h6bRt/IOxxtZpJlHSqhdH/lcInH7Z9obxg/JvWOmGAw=",
        crd_dir="config/crd/bases",
    ),
    GoModule(
        name="cloudnative-pg",
        module="github.com/cloudnative-pg/cloudnative-pg",
        version="v1.27.1",
        h1="h1:w+bbtXyEPoaa7sZGXxbb8qJ+/bUGWQ3M48kbNUEpKlk=",
        crd_dir="config/crd/bases",
    ),
    GoModule(
        name="prometheus-operator",
        module="github.com/prometheus-operator/prometheus-operator",
        version="v0.85.0",
        h1="h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s=",
        crd_dir="example/prometheus-operator-crd",
    ),
    MavenJar(
        name="strimzi",
        group="io.strimzi",
        artifact="api",
        version="0.49.1",
        classifier="tests",
        sha256="b41d4ea4b51507ea7811a95afdcdde5b814a1cee1455e021c3e89ee092655c38",
        crd_dir="crds/v1beta2",
    ),
)


def cache_root() -> Path:
    base = os.environ.get("FINPIPE_CACHE_DIR") or os.path.expanduser("~/.cache/finpipe")
    return Path(base) / "crds"


def _download(url: str) -> bytes:
    print(f"fetch_crds: {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=300) as resp:
        return resp.read()


def _escape_module_path(path: str) -> str:
    """The proxy protocol's case encoding: an upper-case letter becomes ``!`` + lower case."""
    return "".join(f"!{c.lower()}" if c.isupper() else c for c in path)


def go_dirhash_h1(archive: zipfile.ZipFile) -> str:
    """golang.org/x/mod/sumdb/dirhash Hash1 of a module zip (what go.sum records)."""
    summary = hashlib.sha256()
    for name in sorted(n for n in archive.namelist() if not n.endswith("/")):
        digest = hashlib.sha256(archive.read(name)).hexdigest()
        summary.update(f"{digest}  {name}\n".encode())
    return "h1:" + base64.b64encode(summary.digest()).decode()


def _extract_yaml(archive: zipfile.ZipFile, prefix: str, target: Path) -> int:
    count = 0
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted run
    tmp.mkdir(parents=True)
    for name in archive.namelist():
        if name.startswith(prefix) and name.endswith((".yaml", ".yml")):
            rel = name[len(prefix) :]
            if "/" in rel:  # only the directory itself, not sub-directories
                continue
            (tmp / rel).write_bytes(archive.read(name))
            count += 1
    if count == 0:
        raise SystemExit(f"fetch_crds: no CRD YAML under {prefix} in the archive")
    tmp.rename(target)
    return count


def fetch(source: GoModule | MavenJar, root: Path) -> Path:
    target = root / f"{source.name}-{source.version}"
    if target.is_dir() and any(target.iterdir()):
        return target
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(source, GoModule):
        proxy = (os.environ.get("GOPROXY") or "https://proxy.golang.org").split(",")[0]
        if proxy in ("direct", "off"):
            proxy = "https://proxy.golang.org"
        url = f"{proxy.rstrip('/')}/{_escape_module_path(source.module)}/@v/{source.version}.zip"
        archive = zipfile.ZipFile(io.BytesIO(_download(url)))
        got = go_dirhash_h1(archive)
        if got != source.h1:
            raise SystemExit(f"fetch_crds: {url}: checksum {got}, expected {source.h1}")
        prefix = f"{source.module}@{source.version}/{source.crd_dir}/"
    else:
        repo = os.environ.get("MAVEN_REPO", "https://repo1.maven.org/maven2").rstrip("/")
        base = f"{source.artifact}-{source.version}-{source.classifier}.jar"
        url = f"{repo}/{source.group.replace('.', '/')}/{source.artifact}/{source.version}/{base}"
        data = _download(url)
        got = hashlib.sha256(data).hexdigest()
        if got != source.sha256:
            raise SystemExit(f"fetch_crds: {url}: sha256 {got}, expected {source.sha256}")
        archive = zipfile.ZipFile(io.BytesIO(data))
        prefix = f"{source.crd_dir}/"
    count = _extract_yaml(archive, prefix, target)
    print(f"fetch_crds: {source.name} {source.version}: {count} files", file=sys.stderr)
    return target


def main() -> int:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    # One fetch at a time (parallel test sessions share the cache).
    with open(root / "fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for source in SOURCES:
            fetch(source, root)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
