"""The CLI package sits on top: nothing below it imports it, and inside it nothing imports the
CLI module (the loop cli -> dev -> cli is gone for good)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Packages that must work without the CLI and the local stack (a worker image, a Dagster pod).
BELOW_THE_CLI = ("finpipe_core", "finpipe_manager", "finpipe_dagster", "workers")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _is_cli_package(module: str) -> bool:
    return module == "finpipe" or module.startswith("finpipe.")


@pytest.mark.parametrize("package", BELOW_THE_CLI)
def test_lower_packages_never_import_the_cli_package(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(filter(_is_cli_package, imported_modules(path)))
        for path in (REPO / package).rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_no_module_of_the_cli_package_imports_the_cli_module() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "finpipe").rglob("*.py")
        if path.name != "cli.py" and "finpipe.cli" in imported_modules(path)
    ]
    assert not offenders


def test_the_local_stack_does_not_import_the_commands() -> None:
    """finpipe.stack is the machinery under the commands (dev, demo): arrows point into it."""
    commands = {"finpipe.cli", "finpipe.dev", "finpipe.demo"}
    offenders = {
        str(path.relative_to(REPO)): sorted(commands & imported_modules(path))
        for path in (REPO / "finpipe" / "stack").rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_down_stops_the_test_brokers_last() -> None:
    """``finpipe down`` recognises brokers by name (it stops them after their clients); the
    tests' nodes live outside the product, so their names must follow the product's rule."""
    from finpipe.stack.kafka import is_broker, kafka_single_node
    from finpipe.stack.settings import StackSettings
    from tests.fixtures.kafka_nodes import kafka_cluster_nodes, kafka_sasl_node

    settings = StackSettings(state_dir="/var/tmp/finpipe-layout-test")
    nodes = [kafka_single_node(settings), *kafka_cluster_nodes(settings)]
    nodes.append(kafka_sasl_node(settings))
    assert all(is_broker(node.name) for node in nodes), [node.name for node in nodes]
    assert not any(is_broker(name) for name in ("dagster-dev", "agent-1a2b3c-1", "processor-x"))
