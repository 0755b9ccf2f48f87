"""Project folders and the data setting, in one place (no other module builds project paths).

Nothing here creates a folder: readers must not leave traces, and writers create what they write
(`files.atomic_write` makes parent folders; `private_dir` makes owner-only ones).

The data setting, in order of precedence (documented once, used by every entry point — make,
JupyterLab, papermill, the command line and the tests):
1. an explicit argument (`data_root=...`, `--data`, `make ... DATA=...`);
2. the environment variable ``FEDVIT_DATA``;
3. ``data_root`` under ``[tool.fedvit]`` in the project's pyproject.toml, relative to the project
   folder (this checkout: the offline JPEG copy of CIFAR-10 beside it), used when that folder exists.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIGURES_DIR = PROJECT_ROOT / "figures"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOK_SCRIPTS_DIR = PROJECT_ROOT / "notebook_scripts"  # the notebooks' paired percent scripts (jupytext)

DATA_ENV = "FEDVIT_DATA"
RUNS_ENV = "FEDVIT_RUNS"  # tests point this at a temporary folder
CACHE_ENV = "FEDVIT_CACHE"  # where derived, re-computable facts go (data fingerprints)


def runs_dir() -> Path:
    """Where run folders go by default: $FEDVIT_RUNS, else <project>/runs."""
    return Path(os.environ.get(RUNS_ENV, PROJECT_ROOT / "runs")).expanduser()


def cache_dir() -> Path:
    """$FEDVIT_CACHE, else $XDG_CACHE_HOME/fedvit, else ~/.cache/fedvit (not created)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "fedvit"


def run_dir(profile: str, path: str | os.PathLike | None = None) -> Path:
    """The run folder of a profile: `path` if given, else runs_dir()/<profile> (not created)."""
    return Path(path).expanduser() if path else runs_dir() / profile


@cache
def _project_settings() -> dict:
    pyproject = PROJECT_ROOT / "pyproject.toml"
    if not pyproject.is_file():  # an installed (non-editable) package has no project folder
        return {}
    return tomllib.loads(pyproject.read_text()).get("tool", {}).get("fedvit", {})


def default_data_root() -> Path | None:
    """The project's default data folder (pyproject [tool.fedvit] data_root) if it exists, else None."""
    value = _project_settings().get("data_root")
    if not value:
        return None
    path = (PROJECT_ROOT / value).resolve()
    return path if path.is_dir() else None


def data_root(path: str | os.PathLike | None = None) -> Path | None:
    """The data folder: the argument, else $FEDVIT_DATA, else the project default, else None."""
    if path is not None and str(path) != "":
        return Path(path).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return default_data_root()


def figures_dir(run: str | os.PathLike) -> Path:
    """The folder inside a run where its figures and tables go (not created)."""
    return Path(run) / "figures"


def keys_dir(run: str | os.PathLike, dataset: str) -> Path:
    """<run>/keys/<dataset>: where the clients' key files live (created owner-only by the key writer)."""
    return Path(run) / "keys" / dataset


def private_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and parents) readable by the owner only (0700), and return it."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(p, 0o700)
    return p
