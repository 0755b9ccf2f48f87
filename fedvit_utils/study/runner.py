"""Run the study: every numbered notebook in order with papermill, into one run folder.

Every notebook takes the same parameters (`parameters.COMMON`: the profile, a name or a YAML file,
the run folder, the data folder, the three seeds and ``progress``), so one set is passed to all of
them and papermill never reports an unknown parameter. Executed notebooks get ``progress=False``:
progress bars belong in a live session, not in a stored notebook. Executed notebooks, figures and
tables land in the run folder; with ``publish`` the figures and tables are copied to the project's
figures/<profile>/ folder, with the run's provenance (`provenance.json`, and a footer under every Markdown
table naming profile, data fingerprint and commit). A failing notebook stops the run and the error names
the notebook and the cell; so does a figure that an executed notebook would show as text instead of a picture.

Notebook 08 (the model server) needs the serving app (`make serve-venv`, requirements-serve.txt); where it
is not installed, the study skips 08 with a line saying how to get it (`OPTIONAL`), and runs the rest.

Kernels run with CurveZMQ-encrypted sockets where the kernel supports them (ipykernel does), so they
do not warn "Kernel is running over TCP without encryption", and a finished kernel is shut down
without the SIGINT that jupyter_client sends first by default (ipykernel logs it as
"KeyboardInterrupt caught in kernel" when it lands while a message is being handled).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

from .. import paths, provenance
from ..devices import hardware
from ..files import RESULT_MODE, RunLock, write_json, write_text
from ..profiles import PROFILES, default_profile, load_profile
from .run import VARIANT_MARK, StudyRun

# Notebooks that need a package beyond requirements.txt: skipped, with the install command, where it is missing.
OPTIONAL = {"08_cloud_inference": ("fedvit_serve", "make serve-venv")}


class NotebookFailed(RuntimeError):
    """A study notebook raised; the message names the notebook and the failing cell."""


def notebooks() -> list[Path]:
    """The study's source notebooks in run order (numbered file names)."""
    return sorted(p for p in paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def run_study(
    profile: str | None = None,
    run_dir: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    publish: bool | None = None,
    only: list[str] | None = None,
    progress: bool = True,
    seeds: dict[str, int] | None = None,
    extra: dict | None = None,
) -> Path:
    """Execute the notebooks for `profile` (None: `default_profile()`) into `run_dir`; returns the run folder."""
    profile = default_profile() if profile is None else profile
    unknown = set(seeds or {}) - {"partition_seed", "training_seed", "key_seed"}
    if unknown:
        raise ValueError(f"unknown seeds {sorted(unknown)}; choose from partition_seed, training_seed, key_seed.")
    settings = load_profile(profile, **(seeds or {}))  # a bad profile fails here, before any notebook runs
    is_file = str(profile) not in PROFILES  # a YAML file: passed on as an absolute path (kernels run in notebooks/)
    out = paths.run_dir(settings.name, run_dir).resolve()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"run folder {out} is a file, not a folder: pass another run folder.")
    data_root = paths.data_root(data)
    params = {"profile": str(Path(profile).resolve()) if is_file else profile, "run_dir": str(out),
              "data_root": None if data_root is None else str(data_root.resolve()),
              "partition_seed": None, "training_seed": None, "key_seed": None, "progress": False}
    params.update(seeds or {})
    params.update(extra or {})  # notebook-specific parameters; each notebook gets only those it declares
    publish = settings.name != "smoke" if publish is None else publish
    if not only or any(o.startswith(("01", "02")) for o in only):  # steps that need data, model and keys
        StudyRun.open(settings, out, data_root).preflight()  # a run that would fail later fails now
    with RunLock(out, "study"):  # a second study into the same folder is refused at start
        origin = provenance.collect(settings, data_root)
        provenance.write(out, origin)
        timings = _execute(notebooks(), out, params, only, progress)
    record = out / "study.json"
    if only and record.exists():  # a partial rerun keeps the other notebooks' timings
        timings = {**json.loads(record.read_text()).get("seconds", {}), **timings}
    write_json(record, {"profile": settings.name, "hardware": hardware(), "seconds": timings,
                        "provenance": origin})
    published = publish_results(out, settings.name, origin) if publish else []
    if progress:
        print(where_results_are(out, settings.name, published), flush=True)
    return out


def where_results_are(run: Path, profile: str, published: list[Path]) -> str:
    """The closing lines of a study: where the executed notebooks and figures are, and whether they were published."""
    lines = [f"[study] executed notebooks: {run / 'notebooks'}",
             f"[study] figures and tables: {paths.figures_dir(run)}",
             f"[study] provenance (commit, packages, data, profile, hardware): {run / provenance.FILE_NAME}"]
    if published:
        lines.append(f"[study] published {len(published)} files to {paths.FIGURES_DIR / profile}")
    else:
        why = "the smoke profile is for tests" if profile == "smoke" else "--no-publish"
        lines.append(f"[study] not published to {paths.FIGURES_DIR / profile} ({why}; --publish copies them there)")
    return "\n".join(lines)


def _execute(sources: list[Path], out: Path, params: dict, only: list[str] | None, progress: bool) -> dict:
    """Run the notebooks in order into out/notebooks; returns seconds per notebook."""
    import papermill

    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    timings = {}
    for nb in sources:
        if only and not any(nb.stem.startswith(o) or nb.stem == o for o in only):
            continue
        package, install = OPTIONAL.get(nb.stem, (None, None))
        if package is not None and importlib.util.find_spec(package) is None:
            print(f"[study] {nb.name} skipped: it needs {package} ({install})", flush=True)
            continue
        start = time.monotonic()
        target = out / "notebooks" / nb.name
        declared = papermill.inspect_notebook(str(nb))
        try:
            papermill.execute_notebook(
                str(nb), str(target), parameters={k: v for k, v in params.items() if k in declared},
                cwd=str(paths.NOTEBOOKS_DIR), progress_bar=False, kernel_name="python3",
                kernel_manager_class=kernel_manager_class(),
            )
        except papermill.PapermillExecutionError as exc:
            raise NotebookFailed(
                f"{nb.name} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
                f"{exc.ename}: {exc.evalue}. Executed copy with the traceback: {target}"
            ) from None
        as_text = figures_shown_as_text(target)
        if as_text:  # the figure was made but a reader of the executed notebook sees only its repr
            raise NotebookFailed(
                f"{nb.name}: cell(s) {as_text} show a figure as text ('<Figure size ...>') instead of a "
                f"picture; end the cell with run.save_figure(...) (an InlineFigure). Executed copy: {target}")
        timings[nb.stem] = round(time.monotonic() - start, 1)
        if progress:
            print(f"[study] {nb.name} done in {timings[nb.stem]:.0f} s", flush=True)
    return timings


def figures_shown_as_text(notebook: Path) -> list[int]:
    """Cells (counted from 0 as in "failed in cell N", papermill's injected cell included) of an executed
    notebook that show a matplotlib Figure as its text repr only."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    return [i for i, cell in enumerate(cells) if cell["cell_type"] == "code" and any(
        "<Figure size" in "".join(out["data"].get("text/plain", "")) and "image/png" not in out["data"]
        for out in cell["outputs"] if "data" in out)]


def publish_results(run: Path, profile: str, origin: dict | None = None) -> list[Path]:
    """Copy a run's figures and tables (run/figures/*, without variants) and study.json to figures/<profile>/,
    with its provenance: provenance.json beside them and a footer line under each Markdown table it copied.

    A Table 1 spread over this run alone is not published: `make table1-spread` writes the published one
    (over several seeds), and a plain study must not replace it with a one-run table."""
    dest = paths.FIGURES_DIR / profile
    dest.mkdir(parents=True, exist_ok=True)
    skip = {"table1_spread"} if _spread_runs(Path(run)) == 1 else set()
    files = [f for f in sorted(paths.figures_dir(run).glob("*"))
             if f.is_file() and VARIANT_MARK not in f.stem and not f.name.startswith(".") and f.stem not in skip]
    copied = []
    for f in files + [Path(run) / "study.json"]:
        if f.exists():
            copied.append(Path(shutil.copy2(f, dest / f.name)))
            os.chmod(copied[-1], RESULT_MODE)  # a run written by older code kept its files owner-only
    origin = origin or provenance.read(run)
    if origin is not None:
        copied += attach_provenance(dest, origin, [f for f in copied if f.suffix == ".md"])
    return copied


def _spread_runs(run: Path) -> int | None:
    """How many runs the run's Table 1 spread covers (None: no spread table in it)."""
    record = run / "table1_spread.json"
    if not record.exists():
        return None
    rows = json.loads(record.read_text()).get("rows", [])
    return max((int(r.get("runs", 1)) for r in rows), default=None)


def attach_provenance(folder: Path, origin: dict, tables: list[Path] | None = None) -> list[Path]:
    """Write provenance.json into a published folder and end its Markdown tables (default: every one) with
    the footer line; a table another run wrote keeps its own footer when `tables` names the ones of this run."""
    line = provenance.footer(origin)
    done = []
    for md in sorted(tables if tables is not None else Path(folder).glob("*.md")):
        body = [x for x in md.read_text().rstrip("\n").split("\n") if not x.startswith("Provenance: ")]
        write_text(md, "\n".join(body).rstrip("\n") + f"\n\n{line}\n")
        done.append(md)
    return [provenance.write(folder, origin)] + done


def kernel_manager_class() -> type:
    """The kernel manager for study notebooks (see the module doc); jupyter_client is imported on first use."""
    global _KERNEL_MANAGER
    if _KERNEL_MANAGER is None:
        import zmq
        from jupyter_client.manager import AsyncKernelManager

        class StudyKernelManager(AsyncKernelManager):
            """Encrypted kernel sockets where supported; no SIGINT before shutting a kernel down."""

            def __init__(self, **kwargs: object) -> None:
                super().__init__(**kwargs)
                if zmq.has("curve"):  # "auto": only when the kernelspec says the kernel supports it
                    self.transport_encryption = "auto"

            async def _async_interrupt_kernel(self) -> None:
                if not self.shutting_down:
                    await super()._async_interrupt_kernel()

        _KERNEL_MANAGER = StudyKernelManager
    return _KERNEL_MANAGER


_KERNEL_MANAGER: type | None = None
