"""The README stays honest: every setting documented, CI calls the README's test command."""

from __future__ import annotations

from pathlib import Path

from finpipe_core.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_readme_documents_every_env_var() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [v for v in Settings().env_var_names().values() if f"`{v}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme
    assert any(line.strip() == "make test" for line in ci.splitlines())
