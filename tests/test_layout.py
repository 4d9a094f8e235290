"""The package layout as the README describes it: imports run one way and no module takes part
in an import cycle. Read from the source with ``ast`` (function-level imports count too), so a
new arrow the wrong way fails here before anyone has to draw the graph."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("finpipe_core", "finpipe_manager", "workers", "finpipe_dagster", "finpipe")
# Package -> the top-level names it must never import.
FORBIDDEN = {
    "finpipe_core": {"finpipe", "finpipe_manager", "workers", "finpipe_dagster", "dagster"},
    "workers": {"finpipe", "finpipe_manager", "finpipe_dagster", "dagster"},
    "finpipe_manager": {"finpipe", "workers", "finpipe_dagster", "dagster"},
    "finpipe_dagster": {"finpipe"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (``from a import b`` gives a.b if it is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    return {
        name: {m for m in _imports(path) if m in files and m != name}
        for name, path in files.items()
    }


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package: str) -> None:
    wrong = sorted(
        f"{path.relative_to(REPO)} imports {name}"
        for path in (REPO / package).rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in FORBIDDEN[package]
    )
    assert not wrong, "\n".join(wrong)


def test_only_the_entry_point_imports_the_commands() -> None:
    """Inside the CLI package, ``finpipe.cli`` is the top: no module imports it, and the local
    stack (the machinery under the commands) imports none of the commands."""
    wrong = []
    for path in (REPO / "finpipe").rglob("*.py"):
        commands = {"finpipe.cli"} if path.name != "cli.py" else set()
        if "stack" in path.relative_to(REPO).parts:
            commands |= {"finpipe.cli", "finpipe.dev", "finpipe.demo"}
        wrong += [f"{path.relative_to(REPO)} imports {m}" for m in commands & _imports(path)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    real = [c for c in cycles if not _through_own_init(c)]
    assert not real, "\n".join(" -> ".join(c) for c in real)


def _through_own_init(cycle: list[str]) -> bool:
    """A package's ``__init__`` re-exporting its submodules, which import a sibling through the
    package (``from finpipe.stack import paths``): Python resolves it, and it is one home."""
    return any(all(m == pkg or m.startswith(pkg + ".") for m in cycle) for pkg in cycle)
