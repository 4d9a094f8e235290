"""The local Dagster instance and the environment of every Dagster process finpipe launches
(``dagster dev`` for ``finpipe dev``, ``dagster asset materialize`` for ``finpipe demo``)."""

from __future__ import annotations

import os
from pathlib import Path

from finpipe.stack import paths
from finpipe_core.settings import Settings

# Dagster's batched event writes (finpipe_dagster/constants.py). The code location applies them
# in the processes that load it; the webserver and the daemon create runs without loading it,
# so they get them from their environment, here. Importing the constants module loads no
# Dagster code.
from finpipe_dagster.constants import DAGSTER_EVENT_ENV

# The instance of local runs; its dagster.yaml reads the FINPIPE_PG_* variables.
DAGSTER_HOME = paths.REPO_ROOT / "dagster_home"


def dagster_env(
    settings: Settings, dagster_home: Path = DAGSTER_HOME, base: dict[str, str] | None = None
) -> dict[str, str]:
    """``base`` (default: our environment), then ``settings`` as ``FINPIPE_*`` variables, and
    ``DAGSTER_HOME``; Dagster's event settings unless ``base`` sets them.

    Settings variables in ``base`` are replaced by the values of ``settings`` (unset ones
    dropped), so a test can pass a ``model_copy`` pointing at private topics and databases.
    """
    names = set(settings.env_var_names().values())
    env = {**DAGSTER_EVENT_ENV}
    env.update((k, v) for k, v in (os.environ if base is None else base).items() if k not in names)
    env.update(settings.to_env(include_secrets=True))
    env["DAGSTER_HOME"] = str(Path(dagster_home).resolve())
    env["PYTHONUNBUFFERED"] = "1"
    return env
