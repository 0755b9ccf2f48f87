"""Project folders and the data setting, in one place (no other module builds paths)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIGURES_DIR = PROJECT_ROOT / "figures"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PARAMS_DIR = NOTEBOOKS_DIR / "params"

DATA_ENV = "FEDVIT_DATA"
RUNS_ENV = "FEDVIT_RUNS"  # tests point this at a temporary folder
RUNS_DIR = Path(os.environ.get(RUNS_ENV, PROJECT_ROOT / "runs")).expanduser()


def run_dir(profile: str, path: str | os.PathLike | None = None) -> Path:
    """The run folder for a profile: the argument if given, else RUNS_DIR/<profile>; created."""
    p = Path(path).expanduser() if path else RUNS_DIR / profile
    p.mkdir(parents=True, exist_ok=True)
    return p


def data_root(path: str | os.PathLike | None = None) -> Path | None:
    """Return the data folder: the argument if given, else $FEDVIT_DATA, else None."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else None


def run_figures(run: str | os.PathLike) -> Path:
    """The folder inside a run where figures and tables go; created."""
    p = Path(run) / "figures"
    p.mkdir(parents=True, exist_ok=True)
    return p


def keys_dir(run: str | os.PathLike, dataset: str) -> Path:
    """<run>/keys/<dataset>, every level owner-only (0700): where the clients' key files live."""
    return private_dir(private_dir(Path(run) / "keys") / dataset)


def private_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and parents) readable by the owner only, and return it."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(p, 0o700)
    return p
