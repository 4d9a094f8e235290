"""Fixtures for the Kubernetes tests: helm (built when missing), rendered charts, the files,
the operators' CRD schemas.

Nothing here needs a cluster or Docker. The first run fetches what it needs from package
registries only: `scripts/ensure-helm.sh` builds helm from the Go module proxy, and
`scripts/fetch_crds.py` takes the operators' CRDs from the Go module proxy and Maven Central
(both cached under ~/.cache/finpipe). Helm renders offline.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_schemas import CrdSchemas, fetch_crd_dir

from finpipe_core.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "finpipe-workers"
VALUES_DIR = REPO / "helm-values"
WORKERS_VALUES = VALUES_DIR / "finpipe-workers.yaml"
RELEASE = "finpipe-workers"
NAMESPACE = "finpipe"
# What `helm template` pretends the cluster runs (the chart needs >= 1.29).
KUBE_VERSION = "1.33.0"
# Building helm from source takes about 4 minutes on 2 cores; allow for a slow proxy too.
HELM_BUILD_TIMEOUT = 1800

Render = Callable[..., list[dict[str, Any]]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test that needs helm may build it: give those tests the build's time."""
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here and "helm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(HELM_BUILD_TIMEOUT + 300))


@contextmanager
def _without_finpipe_env() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


@pytest.fixture(scope="session")
def code_settings() -> Settings:
    """The settings the code uses when nothing overrides them (FINPIPE_* ignored)."""
    with _without_finpipe_env():
        return Settings()


@pytest.fixture(scope="session")
def settings_from_env() -> Callable[[dict[str, str]], Settings]:
    """Build Settings from exactly these env vars, as a pod would see them."""

    def build(env: dict[str, str]) -> Settings:
        with _without_finpipe_env():
            os.environ.update(env)
            try:
                return Settings()
            finally:
                for key in env:
                    os.environ.pop(key, None)

    return build


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of the pinned helm binary; built from the Go module proxy on a fresh machine."""
    script = REPO / "scripts" / "ensure-helm.sh"
    proc = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=HELM_BUILD_TIMEOUT
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.fail(
            f"scripts/ensure-helm.sh failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}",
            pytrace=False,
        )
    path = proc.stdout.strip().splitlines()[-1]
    assert Path(path).is_file(), path
    return path


def _template(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """render(*helm_args) -> the objects `helm template` prints; fails on a render error."""

    def run(*args: str) -> list[dict[str, Any]]:
        proc = _template(helm, *args)
        if proc.returncode != 0:
            pytest.fail(f"helm template {' '.join(args)} failed:\n{proc.stderr}", pytrace=False)
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]

    return run


@pytest.fixture(scope="session")
def render_error(helm: str) -> Callable[..., str]:
    """render_error(*helm_args) -> helm's error text; fails if the chart renders."""

    def run(*args: str) -> str:
        proc = _template(helm, *args)
        assert proc.returncode != 0, f"helm template {' '.join(args)} rendered, expected an error"
        return proc.stderr

    return run


@pytest.fixture(scope="session")
def rendered(render: Render) -> list[dict[str, Any]]:
    """The chart as deployed: rendered with helm-values/finpipe-workers.yaml."""
    return render("-f", str(WORKERS_VALUES))


@pytest.fixture(scope="session")
def workers_values() -> dict[str, Any]:
    """Chart defaults overlaid with helm-values/finpipe-workers.yaml (as helm merges them)."""
    return deep_merge(load_yaml(CHART / "values.yaml"), load_yaml(WORKERS_VALUES))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="session")
def strimzi_docs() -> list[dict[str, Any]]:
    return load_yaml_docs(VALUES_DIR / "strimzi-kafka.yaml")


@pytest.fixture(scope="session")
def cnpg_docs() -> list[dict[str, Any]]:
    return load_yaml_docs(VALUES_DIR / "cloudnative-pg.yaml")


@pytest.fixture(scope="session")
def dagster_values() -> dict[str, Any]:
    return load_yaml(VALUES_DIR / "dagster.yaml")


@pytest.fixture(scope="session")
def prometheus_values() -> dict[str, Any]:
    return load_yaml(VALUES_DIR / "prometheus.yaml")


@pytest.fixture(scope="session")
def keda_values() -> dict[str, Any]:
    return load_yaml(VALUES_DIR / "keda.yaml")


@pytest.fixture(scope="session")
def deploy_doc() -> str:
    return (REPO / "docs" / "deploy.md").read_text()


@pytest.fixture(scope="session")
def crds() -> CrdSchemas:
    """The CRD schemas of the pinned Strimzi, CloudNativePG, KEDA and Prometheus Operator."""
    try:
        root = fetch_crd_dir()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    return CrdSchemas(root)


@pytest.fixture(scope="session")
def rendered_full(render: Render) -> list[dict[str, Any]]:
    """The deployed values with every optional object on (the PodMonitor as well)."""
    return render("-f", str(WORKERS_VALUES), "--set", "metrics.podMonitor.enabled=true")
