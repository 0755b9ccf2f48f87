"""Run the study: every numbered notebook in order with papermill, into one run folder.

Each notebook gets the profile's parameter file (notebooks/params/<profile>.yaml) plus the run
folder and data setting. Executed notebooks, figures and tables land in the run folder; with
``publish`` the figures and tables are copied to the project's figures/ folder. A failing notebook
stops the run and the error names the notebook and the cell.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

import yaml

from . import paths


class NotebookFailed(RuntimeError):
    """A study notebook raised; the message names the notebook and the failing cell."""


def notebooks() -> list[Path]:
    """The study's source notebooks in run order (numbered file names)."""
    return sorted(p for p in paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def profile_parameters(profile: str) -> dict:
    """Parameters for every notebook from notebooks/params/<profile>.yaml (or a path to a YAML file)."""
    path = Path(profile) if profile.endswith((".yaml", ".yml")) else paths.PARAMS_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in paths.PARAMS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no parameter file {path}; known profiles: {known}.")
    return yaml.safe_load(path.read_text()) or {}


def hardware() -> str:
    """One line naming this machine for figure and table labels."""
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__.split('+')[0]}"


def run_study(
    profile: str = "quick",
    run_dir: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    publish: bool | None = None,
    only: list[str] | None = None,
    progress: bool = True,
) -> Path:
    """Execute the notebooks for `profile` into `run_dir`; returns the run folder."""
    import papermill

    params = profile_parameters(profile)
    name = params.get("profile", Path(profile).stem)
    out = paths.run_dir(name, run_dir).resolve()
    params["run_dir"] = str(out)
    if data is not None:
        params["data_root"] = str(Path(data).expanduser().resolve())
    publish = name != "smoke" if publish is None else publish
    (out / "notebooks").mkdir(exist_ok=True)
    timings = {}
    for nb in notebooks():
        if only and not any(nb.stem.startswith(o) or nb.stem == o for o in only):
            continue
        start = time.monotonic()
        target = out / "notebooks" / nb.name
        try:
            papermill.execute_notebook(
                str(nb), str(target), parameters=params, cwd=str(paths.NOTEBOOKS_DIR),
                progress_bar=False, kernel_name="python3",
            )
        except papermill.PapermillExecutionError as exc:
            raise NotebookFailed(
                f"{nb.name} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
                f"{exc.ename}: {exc.evalue}. Executed copy with the traceback: {target}"
            ) from None
        timings[nb.stem] = round(time.monotonic() - start, 1)
        if progress:
            print(f"[study] {nb.name} done in {timings[nb.stem]:.0f} s", flush=True)
    record = out / "study.json"
    if only and record.exists():  # a partial rerun keeps the other notebooks' timings
        timings = {**json.loads(record.read_text()).get("seconds", {}), **timings}
    record.write_text(json.dumps({"profile": name, "hardware": hardware(), "seconds": timings}, indent=2))
    if publish:
        publish_results(out, name)
    return out


def publish_results(run: Path, profile: str) -> list[Path]:
    """Copy a run's figures and tables (run/figures/*) and study.json to figures/<profile>/."""
    dest = paths.FIGURES_DIR / profile
    dest.mkdir(parents=True, exist_ok=True)
    files = [f for f in sorted((Path(run) / "figures").glob("*")) if f.is_file()] + [Path(run) / "study.json"]
    return [Path(shutil.copy2(f, dest / f.name)) for f in files if f.exists()]
