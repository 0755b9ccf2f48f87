"""The book of an executed study: one static HTML site of a run's notebooks, the docs and a landing page.

`make book` (`python -m fedvit_utils book`) stages a source tree laid out like the repository —
index.md (from book/landing.md), README.md, ARCHITECTURE.md, EXTENDING.md, docs/*.md, the run's
executed notebooks/*.ipynb, and figures/ as a link to the published figures — so the relative links
between them resolve as they do on GitHub, then builds it with Sphinx and MyST-NB (settings in
book/conf.py) into <run>/book/. Nothing is executed: the notebooks come as the study left them, with
their figures and tables. Nothing is fetched when building or reading (see book/conf.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from string import Template

from .. import paths

BOOK_DIR = paths.PROJECT_ROOT / "book"  # conf.py, templates/ and the landing page's template
DOCS_DIR = paths.PROJECT_ROOT / "docs"
TOP_PAGES = ("README.md", "ARCHITECTURE.md", "EXTENDING.md")  # each included where it exists
# docs pages in reading order; any other docs/*.md follows alphabetically
DOCS_ORDER = ("results", "security", "benchmarks", "reproducibility", "flower", "serving", "book")
WIDGET_STATE = "widgets"  # notebook metadata a static page cannot use (no widget JavaScript is shipped)


class NoExecutedNotebooks(FileNotFoundError):
    """The run folder has no executed notebooks: the message names the command that makes them."""


def executed_notebooks(run: str | os.PathLike) -> list[Path]:
    """The run's study notebooks (<run>/notebooks/NN_*.ipynb) in order; raises if none of them was executed.

    A notebook that failed stays in: its page shows the traceback the study stored."""
    folder = Path(run) / "notebooks"
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    executed = [nb for nb in found if _was_executed(nb)]
    if not executed:
        what = f"{len(found)} notebook(s) there, none executed" if found else "none there"
        raise NoExecutedNotebooks(
            f"no executed notebooks in {folder} ({what}): run the study first — `make study` (add PROFILE=smoke "
            f"for a 3-minute run), or `python -m fedvit_utils study --run-dir {run}` — or name a run folder "
            f"that has them (`make book RUN=...`).")
    return found


def _was_executed(notebook: Path) -> bool:
    cells = json.loads(notebook.read_text()).get("cells", [])
    return any(c.get("cell_type") == "code" and c.get("execution_count") is not None for c in cells)


def doc_pages() -> list[Path]:
    """docs/*.md in reading order (DOCS_ORDER first, then the rest alphabetically)."""
    pages = sorted(DOCS_DIR.glob("*.md"))
    rank = {name: i for i, name in enumerate(DOCS_ORDER)}
    return sorted(pages, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))


def readme_opening(readme: Path) -> str:
    """The README's text between its title and its first section heading ('' without a README)."""
    if not readme.is_file():
        return ""
    lines = readme.read_text().splitlines()
    body = lines[1:] if lines and lines[0].startswith("# ") else lines
    end = next((i for i, line in enumerate(body) if line.startswith("## ")), len(body))
    return "\n".join(body[:end]).strip()


def run_record(run: Path) -> dict:
    """The run's study.json (profile, hardware, timings and whatever else the study records), or {}."""
    record = run / "study.json"
    return json.loads(record.read_text()) if record.is_file() else {}


def _record_markdown(record: dict) -> str:
    """The run record as a table of its plain values, then its nested values as JSON."""
    if not record:
        return "This run folder has no `study.json` (the study writes it when every notebook has run)."
    rows = [f"| {key} | {value} |" for key, value in record.items() if not isinstance(value, dict | list)]
    nested = {key: value for key, value in record.items() if isinstance(value, dict | list)}
    parts = ["| field | value |", "|---|---|", *rows] if rows else []
    if nested:
        parts += ["", "```json", json.dumps(nested, indent=1), "```"]
    return "\n".join(parts)


def landing_page(run: Path, profile: str, notebooks: list[str], docs: list[str], top: list[str]) -> str:
    """index.md: book/landing.md filled with the run's name, the README's opening, the contents and the record."""
    record = run_record(run)
    toc = {"notebooks": notebooks, "docs": [f"docs/{d}" for d in docs], "project": top}
    fields = {f"{name}_toc": "\n".join(entries) for name, entries in toc.items()}
    return Template((BOOK_DIR / "landing.md").read_text()).substitute(
        profile=profile, run_name=run.name, readme_opening=readme_opening(paths.PROJECT_ROOT / "README.md"),
        run_record=_record_markdown(record), **fields)


def stage(run: Path, source: Path, profile: str) -> None:
    """Lay out the book's sources in `source`: landing page, top pages, docs, the executed notebooks, figures."""
    notebooks = executed_notebooks(run)
    (source / "notebooks").mkdir(parents=True)
    for nb in notebooks:
        doc = json.loads(nb.read_text())
        doc.get("metadata", {}).pop(WIDGET_STATE, None)  # the still frames stay in the outputs
        _describe_figures(doc)
        (source / "notebooks" / nb.name).write_text(json.dumps(doc))
    docs = doc_pages()
    (source / "docs").mkdir()
    for page in docs:
        shutil.copy2(page, source / "docs" / page.name)
    top = [name for name in TOP_PAGES if (paths.PROJECT_ROOT / name).is_file()]
    for name in top:
        shutil.copy2(paths.PROJECT_ROOT / name, source / name)
    if paths.FIGURES_DIR.is_dir():  # the README and docs show published figures (figures/<profile>/...)
        (source / "figures").symlink_to(paths.FIGURES_DIR, target_is_directory=True)
    page = landing_page(run, profile, [f"notebooks/{nb.stem}" for nb in notebooks], [p.stem for p in docs],
                        [Path(name).stem for name in top])
    (source / "index.md").write_text(page)


def _describe_figures(notebook: dict) -> None:
    """Give each cell's figure its text (the output's text/plain: file name and size, or the explorer's
    settings) as alt text; MyST-NB would use the image's hashed file name."""
    for cell in notebook.get("cells", []):
        texts = ["".join(o["data"].get("text/plain", "")).strip("<>") for o in cell.get("outputs", [])
                 if "image/png" in o.get("data", {})]
        if len(texts) == 1 and texts[0]:  # the option is per cell; a cell with several figures keeps the default
            cell.setdefault("metadata", {}).setdefault("mystnb", {}).setdefault("image", {})["alt"] = texts[0]


def _clear(out: Path) -> None:
    """Empty `out` for a fresh build, refusing a folder that is not an earlier book (Sphinx's .buildinfo)."""
    if not out.exists():
        return
    if any(out.iterdir()) and not (out / ".buildinfo").is_file():
        raise FileExistsError(f"{out} exists and is not a book built here (no .buildinfo): choose another --out "
                              f"or remove it yourself.")
    shutil.rmtree(out)


def build_book(profile: str | None = None, run_dir: str | os.PathLike | None = None,
               out: str | os.PathLike | None = None, quiet: bool = True) -> Path:
    """Build the book of a run folder (default runs/<profile>) into `out` (default <run>/book); returns index.html."""
    from ..profiles import PROFILES, default_profile, load_profile

    profile = default_profile() if profile is None else profile
    profile = profile if profile in PROFILES else load_profile(profile).name  # a YAML file names its profile
    run = paths.run_dir(profile, run_dir).resolve()
    if run_dir is None and not run.is_dir():
        raise NoExecutedNotebooks(f"no run folder {run} for profile {profile!r}: run `make study PROFILE={profile}` "
                                  f"first, or name a run folder (`make book RUN=...`).")
    executed_notebooks(run)  # before Sphinx is imported: a missing study fails at once, with the command
    profile = run_record(run).get("profile", profile)  # the run's own, when a run folder is named
    out = (run / "book" if out is None else Path(out)).resolve()
    try:
        from sphinx.application import Sphinx
    except ImportError as exc:
        raise ModuleNotFoundError(f"the book needs Sphinx and MyST-NB ({exc}): run `make book-venv`, or "
                                  f"`pip install -r requirements-book.txt` in this environment.") from exc

    with tempfile.TemporaryDirectory(prefix="fedvit-book-") as tmp:
        source = Path(tmp) / "source"
        stage(run, source, profile)
        _clear(out)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Check CHANGES for Sphinx API")  # MyST-Parser's, not ours
            app = Sphinx(str(source), str(BOOK_DIR), str(out), str(Path(tmp) / "doctrees"), "html",
                         confoverrides={"project": f"fedvit · {profile} run", "html_title": f"fedvit · {profile} run",
                                        "html_context": {"run_profile": profile, "run_name": run.name}},
                         status=None if quiet else sys.stdout, warning=sys.stderr, freshenv=True)
            app.build()
        if app.statuscode:
            raise RuntimeError(f"Sphinx failed to build the book of {run} (status {app.statuscode}); see above.")
    return out / "index.html"
