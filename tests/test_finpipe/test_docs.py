"""The README stays honest: every setting documented, CI calls the README's test command."""

from __future__ import annotations

from pathlib import Path

import pytest

from finpipe.stack.settings import StackSettings
from finpipe_core.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("settings_class", [Settings, StackSettings])
def test_readme_documents_every_env_var(settings_class: type[Settings]) -> None:
    """The shared settings and the local stack's (a subclass) are one table in the README."""
    readme = (REPO / "README.md").read_text()
    names = settings_class.model_construct().env_var_names().values()
    missing = [v for v in names if f"`{v}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme
    assert any(line.strip() == "make test" for line in ci.splitlines())
