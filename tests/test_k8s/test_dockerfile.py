"""The Dockerfile installs pyproject's dependency set under constraints.txt and pins nothing of
its own, runs as a non-root user, and builds from a pinned slim Python 3.11 base.

No Docker engine runs on the development machine, so the image is not built here: these
tests read the Dockerfile and .dockerignore.
"""

from __future__ import annotations

import functools
import re
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
# An exact CPython 3.11 patch release of the slim Debian 12 image, optionally with a digest.
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")
# A requirement specifier, e.g. `numpy==2.4.6`, `pandas>=3`, `foo~=1.0`.
SPECIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\s*(==|>=|<=|~=|!=|===|<|>)\s*\d")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def arg_defaults() -> dict[str, str]:
    defaults = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
    return defaults


def base_images() -> list[str]:
    args = arg_defaults()
    images = []
    for stage in stages():
        ref = stage[0][1].split()[0]
        images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref))
    return images


def pip_installs() -> list[list[str]]:
    """Argument lists of every `pip install` in RUN instructions."""
    found = []
    for word, rest in instructions():
        if word != "RUN":
            continue
        for part in rest.split("&&"):
            part = part.strip()
            if not re.match(r"(pip|python3? -m pip) install\b", part):
                continue
            tokens = shlex.split(part)
            found.append(tokens[tokens.index("install") + 1 :])
    return found


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def test_base_images_are_pinned_slim_python_311() -> None:
    images = base_images()
    assert len(images) >= 2, "multi-stage: a build stage and a runtime stage"
    for image in images:
        assert PINNED_BASE.match(image), f"unpinned or unexpected base image: {image}"
    assert len(set(images)) == 1, "build and runtime must share the base (the venv's Python)"
    requires = pyproject()["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires


def test_runs_as_non_root() -> None:
    final = stages()[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric UID, so Kubernetes runAsNonRoot can verify it"
    assert int(user) >= 1000
    # The user the Deployments and the Dagster values run as.
    assert f"--uid {user}" in DOCKERFILE.read_text()


def test_every_pip_install_uses_constraints_and_pins_nothing() -> None:
    installs = pip_installs()
    assert len(installs) >= 2
    for args in installs:
        joined = " ".join(args)
        assert "-c constraints.txt" in joined, f"pip install without constraints: {joined}"
        assert not SPECIFIER.search(joined), f"a pin in the Dockerfile: {joined}"
        positional = [
            a
            for i, a in enumerate(args)
            if not a.startswith("-")
            and not (i and args[i - 1] in {"-c", "-r", "--constraint", "--requirement"})
        ]
        # Only the project itself (`.`); dependencies come from -r <generated from pyproject>.
        assert set(positional) <= {"."}, f"packages named in the Dockerfile: {positional}"


def test_dependencies_are_read_from_pyproject() -> None:
    text = DOCKERFILE.read_text()
    assert "['project']['dependencies']" in text
    assert "COPY pyproject.toml constraints.txt" in text
    (dep_install,) = [a for a in pip_installs() if "-r" in a]
    assert dep_install[dep_install.index("-r") + 1] == "/tmp/requirements.txt"
    assert "> /tmp/requirements.txt" in text


def test_no_version_literal_outside_comments() -> None:
    """No package version is written in an instruction (the base image tag aside)."""
    for word, rest in instructions():
        if word in {"FROM", "ARG"}:
            continue
        assert not SPECIFIER.search(rest), f"{word} {rest}"


def test_pyproject_pins_agree_with_constraints() -> None:
    """One set: every direct pin in pyproject is the version constraints.txt installs."""
    pins = constraints()
    for dep in pyproject()["project"]["dependencies"]:
        name, sep, version = dep.partition("==")
        assert sep, f"pyproject dependency not pinned exactly: {dep}"
        key = re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()  # psycopg[binary] -> psycopg
        assert pins.get(key) == version, f"{dep} vs constraints.txt {pins.get(key)}"


def test_image_contains_every_package(code_settings) -> None:
    text = DOCKERFILE.read_text()
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in include:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in text, package
    exposed = {int(p) for word, rest in instructions() if word == "EXPOSE" for p in rest.split()}
    assert {code_settings.health_port, code_settings.metrics_port} <= exposed


@pytest.mark.parametrize(
    "needed",
    [
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "finpipe_core/",
        "finpipe_manager/",
        "workers/",
        "finpipe/",
        "finpipe_dagster/",
    ],
)
def test_dockerignore_allows_only_the_build_inputs(needed: str) -> None:
    lines = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: everything else (.git, .venv, .state) stays out"
    assert f"!{needed}" in lines
    assert "**/__pycache__" in lines


# --- the dependency set is what runs -----------------------------------------------------------
# Runtime dependencies no module imports by name, and why they must still ship.
USED_WITHOUT_IMPORT = {
    # The run pods' Dagster instance (the chart's dagster.yaml) names these as modules.
    "dagster-k8s": "K8sRunLauncher in the run pods' instance config",
    "dagster-postgres": "Dagster's run/event storage in the instance config",
    # `finpipe dev` starts `dagster dev`, which serves the UI from this package.
    "dagster-webserver": "dagster dev (finpipe dev)",
    # Pinned below 2.1 so postgresql:// URLs keep psycopg2 for dagster-postgres.
    "sqlalchemy": "the driver choice of dagster-postgres (pyproject comment)",
}
RUNTIME_DIRS = ("finpipe_core", "finpipe_manager", "workers", "finpipe", "finpipe_dagster")


def _runtime_source() -> str:
    return "\n".join(p.read_text() for d in RUNTIME_DIRS for p in (REPO / d).rglob("*.py"))


@functools.cache
def _modules_by_distribution() -> dict[str, set[str]]:
    import importlib.metadata as md

    out: dict[str, set[str]] = {}
    for module, dists in md.packages_distributions().items():
        for dist in dists:
            out.setdefault(re.sub(r"[-_.]+", "-", dist).lower(), set()).add(module)
    return out


def _import_names(dist: str) -> set[str]:
    return _modules_by_distribution().get(dist) or {dist.replace("-", "_")}


def test_runtime_dependencies_are_what_runs() -> None:
    """Every runtime dependency is imported by finpipe's code (or has a stated reason);
    benchmark-only packages are in the `bench` extra, which `dev` pulls in."""
    source = _runtime_source()
    unused = []
    for dep in pyproject()["project"]["dependencies"]:
        name = re.sub(r"[-_.]+", "-", dep.partition("==")[0].split("[")[0]).lower()
        if name in USED_WITHOUT_IMPORT:
            continue
        if not any(re.search(rf"\b{re.escape(mod)}\b", source) for mod in _import_names(name)):
            unused.append(name)
    assert not unused, f"runtime dependencies no runtime module uses: {unused}"
    extras = pyproject()["project"]["optional-dependencies"]
    assert "pandas-ta-classic==0.8.32" in extras["bench"]
    assert "finpipe[bench]" in extras["dev"]
    assert not any(d.startswith("pandas-ta") for d in pyproject()["project"]["dependencies"])
    bench_source = "\n".join(p.read_text() for p in (REPO / "benchmarks").rglob("*.py"))
    assert "pandas_ta" in bench_source and "pandas_ta" not in source


def test_build_backend_is_pinned() -> None:
    build = pyproject()["build-system"]
    (requirement,) = build["requires"]
    name, sep, version = requirement.partition("==")
    assert sep and name == "setuptools" and build["build-backend"] == "setuptools.build_meta"
    # The image build constrains the isolated build environment with constraints.txt too.
    assert constraints()["setuptools"] == version
    assert "ENV PIP_CONSTRAINT=/src/constraints.txt" in DOCKERFILE.read_text()


def test_image_checks_its_dependency_set_exactly() -> None:
    text = DOCKERFILE.read_text()
    runs = [rest for word, rest in instructions() if word == "RUN"]
    install = next(r for r in runs if "pip install --no-deps" in r)
    steps = [s.strip() for s in install.split("&&")]
    # pip and setuptools leave before the check, which then finds only finpipe's closure.
    assert steps.index("pip uninstall --yes setuptools pip") < steps.index(
        "python scripts/check_image_deps.py constraints.txt"
    )
    assert "COPY scripts/check_image_deps.py scripts/compile_numba_cache.py ./scripts/" in text
    dockerignore = (REPO / ".dockerignore").read_text().splitlines()
    assert {"!scripts/check_image_deps.py", "!scripts/compile_numba_cache.py"} <= set(dockerignore)


def test_numba_kernels_are_compiled_into_the_image() -> None:
    """Built into /opt/numba-cache for a generic CPU, copied to the runtime stage, and the
    worker chart's init container copies them where NUMBA_CACHE_DIR points."""
    import yaml

    text = DOCKERFILE.read_text()
    chart = yaml.safe_load((REPO / "charts/finpipe-workers/values.yaml").read_text())
    image_path = chart["numbaCache"]["imagePath"]
    assert f"RUN NUMBA_CACHE_DIR={image_path} python scripts/compile_numba_cache.py" in text
    assert f"COPY --from=build {image_path} {image_path}" in text
    build, runtime = stages()[0], stages()[-1]
    env = lambda stage: " ".join(rest for word, rest in stage if word == "ENV")  # noqa: E731
    assert "NUMBA_CPU_NAME=generic" in env(build) and "NUMBA_CPU_NAME=generic" in env(runtime)
    assert f"NUMBA_CACHE_DIR={chart['numbaCache']['cacheDir']}" in env(runtime)
    assert chart["workers"]["processor"]["seedNumbaCache"] is True
