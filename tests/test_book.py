"""The book (`make book`): refused without executed notebooks; built, it shows what they hold and fetches nothing.

The build here uses a small executed notebook made in the test (seconds); browser_tests/test_book.py builds
the book of a real smoke study and opens every page in Chromium.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys

import nbformat
import pytest
from PIL import Image

from fedvit_utils import __main__ as cli
from fedvit_utils import paths
from fedvit_utils.study import book

# an asset the browser would fetch by itself: src=, or href= on <link>; plain <a href> links are not fetched
ASSET = re.compile(r"""<(?:script|img|iframe|source|video|audio)\b[^>]*\bsrc=["']?(https?:)?//"""
                   r"""|<link\b[^>]*\bhref=["']?(https?:)?//|@import\s+(url\()?["']?(https?:)?//|url\(["']?(https?:)?//""",
                   re.IGNORECASE)


def _png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _executed_notebook(path, executed: bool = True) -> None:
    """A study-like notebook as papermill leaves it: math in text, a figure, a table, an explorer's still frame."""
    nb = nbformat.v4.new_notebook()
    code = [nbformat.v4.new_code_cell("show()", execution_count=1 if executed else None),
            nbformat.v4.new_code_cell("table()", execution_count=2 if executed else None),
            nbformat.v4.new_code_cell("explorer()", execution_count=3 if executed else None)]
    if executed:
        code[0].outputs = [nbformat.v4.new_output("display_data", data={"image/png": _png(64, 48),
                                                                         "text/plain": "<partition.png: 64x48 PNG>"})]
        code[1].outputs = [nbformat.v4.new_output("execute_result", execution_count=2, data={
            "text/html": "<table class='dataframe'><tr><th>client</th><th>accuracy</th></tr>"
                         "<tr><td>0</td><td>0.9731</td></tr></table>", "text/plain": "client accuracy"})]
        code[2].outputs = [nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
            "image/png": _png(80, 40), "text/plain": "Encryption explorer"})]
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"abc": {}}}}
    nb.cells = [nbformat.v4.new_markdown_cell("# 1. A study notebook\n\nToken $\\hat{b}_i \\mathbf{E}_a$ (Eq. 12)."),
                *code]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_a_run_without_executed_notebooks_is_refused_naming_make_study(tmp_path, capsys):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(book.NoExecutedNotebooks, match=r"no executed notebooks in .*empty-run/notebooks \(none there\)"
                       r".*`make study`"):
        book.build_book("smoke", empty)
    unexecuted = tmp_path / "unexecuted-run"  # the repository's notebooks have no outputs
    _executed_notebook(unexecuted / "notebooks" / "01_data_partitioning.ipynb", executed=False)
    with pytest.raises(book.NoExecutedNotebooks, match=r"1 notebook\(s\) there, none executed.*`make study`"):
        book.build_book("smoke", unexecuted)
    with pytest.raises(SystemExit, match=r"\[book\] NoExecutedNotebooks: .*`make study`"):
        cli.main(["book", "--profile", "smoke", "--run-dir", str(empty)])
    assert not (empty / "book").exists() and not (unexecuted / "book").exists()


def test_without_the_books_tools_the_command_names_their_install(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _executed_notebook(run / "notebooks" / "01_data_partitioning.ipynb")
    monkeypatch.setitem(sys.modules, "sphinx.application", None)  # as if requirements-book.txt were not installed
    with pytest.raises(SystemExit, match=r"\[book\] the book needs Sphinx and MyST-NB .*`make book-venv`"):
        cli.main(["book", "--profile", "smoke", "--run-dir", str(run)])
    assert not (run / "book").exists()


def test_the_default_run_folder_is_the_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path))
    with pytest.raises(book.NoExecutedNotebooks, match=rf"no run folder {tmp_path}/smoke .*`make study PROFILE=smoke`"):
        book.build_book("smoke")


def test_a_folder_that_is_not_a_book_is_never_replaced(tmp_path):
    run = tmp_path / "run"
    _executed_notebook(run / "notebooks" / "01_data_partitioning.ipynb")
    keep = tmp_path / "mine" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    with pytest.raises(FileExistsError, match="not a book built here"):
        book.build_book("smoke", run, out=keep.parent)
    assert keep.read_text() == "mine"


def test_the_book_shows_the_executed_outputs_and_fetches_nothing(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _executed_notebook(run / "notebooks" / "01_data_partitioning.ipynb")
    (run / "study.json").write_text(json.dumps({"profile": "smoke", "hardware": "CPU test", "seconds": {"01": 1.0}}))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text(
        "# Results\n\nSee [the partition](../notebooks/01_data_partitioning.ipynb), the code in "
        "[keys.py](../fedvit_utils/keys.py), and set $FEDVIT_DATA or $FEDVIT_PROFILE; math $\\mathbf{E}_b$.\n")
    monkeypatch.setattr(book, "DOCS_DIR", docs)
    index = book.build_book("smoke", run, out=tmp_path / "site")
    out = index.parent
    assert {"index.html", "docs/results.html", "notebooks/01_data_partitioning.html"} <= {
        p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    page = (out / "notebooks" / "01_data_partitioning.html").read_text()
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(images) == 2, images  # the figure and the explorer's still frame (no live widget in a static page)
    sizes = sorted(Image.open(out / "notebooks" / src).size for src in images)
    assert sizes == [(64, 48), (80, 40)]
    assert "<table" in page and "0.9731" in page
    assert 'alt="partition.png: 64x48 PNG"' in page and 'alt="Encryption explorer"' in page
    assert "<math" in page and "widget-state" not in page and "widget-view" not in page
    landing = (out / "index.html").read_text()
    assert "CPU test" in landing and 'href="notebooks/01_data_partitioning.html"' in landing
    assert 'href="docs/results.html"' in landing and 'id="run-record"' in landing
    results = (out / "docs" / "results.html").read_text()
    assert 'href="../notebooks/01_data_partitioning.html"' in results
    assert "keys.py" in results and 'href="#../fedvit_utils' not in results  # a repository file: text, no dead link
    assert "$FEDVIT_DATA or $FEDVIT_PROFILE" in results and results.count("<math") == 1
    fetched = [(f.relative_to(out), m.group(0)) for f in out.rglob("*") if f.suffix in (".html", ".css", ".js")
               for m in ASSET.finditer(f.read_text(errors="replace"))]
    assert not fetched, f"assets from outside: {fetched}"
    assert not list((run / "notebooks").glob("*.html")), "the run's notebooks are read, never written"
