"""Project folders and the data setting, in one place (no other module builds paths)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], mode: int | None = None) -> Path:
    """Write through `write(fh)` into a temp file beside `path`, then rename over it.

    A crash leaves the old file or the new one, never a torn one. The temp file is created 0600
    (mkstemp), so secrets are never readable by others, even for a moment; `mode` sets the final mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
