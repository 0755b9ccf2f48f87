"""Run the study: every numbered notebook in order with papermill, into one run folder.

Every notebook takes the same parameters — the profile (a name or a YAML file, see `profiles`), the
run folder, the data folder and the three seeds — so one set is passed to all of them. Executed
notebooks, figures and tables land in the run folder; with ``publish`` the figures and tables are
copied to the project's figures/<profile>/ folder. A failing notebook stops the run and the error
names the notebook and the cell.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .. import paths
from ..devices import hardware
from ..files import RunLock, write_json
from ..profiles import load_profile
from .run import StudyRun


class NotebookFailed(RuntimeError):
    """A study notebook raised; the message names the notebook and the failing cell."""


def notebooks() -> list[Path]:
    """The study's source notebooks in run order (numbered file names)."""
    return sorted(p for p in paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def run_study(
    profile: str = "quick",
    run_dir: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    publish: bool | None = None,
    only: list[str] | None = None,
    progress: bool = True,
    seeds: dict[str, int] | None = None,
    extra: dict | None = None,
) -> Path:
    """Execute the notebooks for `profile` into `run_dir`; returns the run folder."""
    settings = load_profile(profile, **(seeds or {}))  # a bad profile fails here, before any notebook runs
    is_file = Path(profile).suffix in (".yaml", ".yml")
    out = paths.run_dir(settings.name, run_dir).resolve()
    params = {"profile": str(Path(profile).resolve()) if is_file else profile, "run_dir": str(out)}
    data_root = paths.data_root(data)
    if data_root is not None:
        params["data_root"] = str(data_root.resolve())
    params.update(seeds or {})
    params.update(extra or {})  # notebook-specific parameters; each notebook gets only those it declares
    publish = settings.name != "smoke" if publish is None else publish
    if not only or any(o.startswith(("01", "02")) for o in only):  # steps that need data, model and keys
        StudyRun.open(settings, out, data_root).preflight()  # a run that would fail later fails now
    with RunLock(out, "study"):  # a second study into the same folder is refused at start
        timings = _execute(notebooks(), out, params, only, progress)
    record = out / "study.json"
    if only and record.exists():  # a partial rerun keeps the other notebooks' timings
        timings = {**json.loads(record.read_text()).get("seconds", {}), **timings}
    write_json(record, {"profile": settings.name, "hardware": hardware(), "seconds": timings})
    if publish:
        publish_results(out, settings.name)
    return out


def _execute(sources: list[Path], out: Path, params: dict, only: list[str] | None, progress: bool) -> dict:
    """Run the notebooks in order into out/notebooks; returns seconds per notebook."""
    import papermill

    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    timings = {}
    for nb in sources:
        if only and not any(nb.stem.startswith(o) or nb.stem == o for o in only):
            continue
        start = time.monotonic()
        target = out / "notebooks" / nb.name
        declared = papermill.inspect_notebook(str(nb))
        try:
            papermill.execute_notebook(
                str(nb), str(target), parameters={k: v for k, v in params.items() if k in declared},
                cwd=str(paths.NOTEBOOKS_DIR),
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
    return timings


def publish_results(run: Path, profile: str) -> list[Path]:
    """Copy a run's figures and tables (run/figures/*) and study.json to figures/<profile>/."""
    dest = paths.FIGURES_DIR / profile
    dest.mkdir(parents=True, exist_ok=True)
    files = [f for f in sorted(paths.figures_dir(run).glob("*")) if f.is_file()] + [Path(run) / "study.json"]
    return [Path(shutil.copy2(f, dest / f.name)) for f in files if f.exists()]
