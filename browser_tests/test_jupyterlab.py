"""The notebooks as a person sees them: JupyterLab in a real (headless) Chromium, Run All Cells, look.

`make browser-test` runs this (not `make test`): it installs Playwright (requirements-browser.txt) and
uses Debian's Chromium ($FEDVIT_CHROMIUM, default /usr/bin/chromium; Playwright's own browser download
is never used). JupyterLab is this project's, with its kernel, started on a copy of the notebooks like
`make lab` does: no MPLBACKEND and no FEDVIT_DATA in the environment, so the data comes from the one
default (pyproject.toml). The root conftest makes the default profile smoke and runs go to a
temporary folder. Screenshots land in $FEDVIT_RUNS/browser/.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
from chromium import chromium_context
from lab_server import processes_mentioning, start_lab, stop_lab
from playwright.sync_api import expect

from fedvit_utils import paths
from fedvit_utils.study.run import StudyRun

SHOTS = Path(os.environ["FEDVIT_RUNS"]) / "browser"
RUN_ALL_TIMEOUT_MS = 420_000  # two shared cores: notebook 04 loads CIFAR-10 and draws every key kind


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """JupyterLab on a copy of notebooks/ (autosave off), stopped by PID with its kernels at the end."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    root.mkdir()
    for nb in paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"):
        shutil.copy2(nb, root / nb.name)
    state = base / "state"
    venv_share = Path(sys.prefix) / "share" / "jupyter"  # this project's kernelspec first, as `make lab` does
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", paths.DATA_ENV)}
    env["JUPYTER_PATH"] = str(venv_share)
    server = start_lab(root, state, env)
    try:
        yield server
    finally:
        stop_lab(server)
        stray = processes_mentioning(str(state))  # the server and its kernels carry the state folder in argv
        assert not stray, f"processes left behind: {stray}"
        log = server.log.read_text()
        assert "without encryption" not in log, "kernels should use encrypted sockets"


@pytest.fixture(scope="session")
def browser():
    with chromium_context() as context:
        yield context


@pytest.fixture
def page(browser, lab, request):
    page = browser.new_page()
    page.set_default_timeout(90_000)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    offsite = []
    page.on("request", lambda r: offsite.append(r.url)
            if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    yield page
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
    finally:
        page.close()
        lab.shutdown_all_sessions()
    assert not offsite, f"the page tried to reach outside this machine: {offsite}"


JS_READY = """(path) => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  return !!(w && w.context && w.context.path === path && w.context.isReady && w.sessionContext.session
            && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle');
}"""
JS_RUN_ALL = """() => { window.__runAll = undefined;
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(r => { window.__runAll = r; }); }"""
JS_DONE = """() => window.__runAll !== undefined
  && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"""
JS_CELLS = """() => window.jupyterapp.shell.currentWidget.content.widgets.filter(c => c.model.type === 'code')
  .map(c => ({count: c.model.executionCount, outputs: c.model.outputs.toJSON().map(o => ({
     type: o.output_type, name: o.name || null, ename: o.ename || null, evalue: o.evalue || null,
     mimes: o.data ? Object.keys(o.data) : [], text: o.text ? [].concat(o.text).join('') : null}))}))"""


def run_notebook(page, lab, name: str) -> list[dict]:
    """Open `name` in its own workspace, wait for an idle kernel, Run All Cells, return the cells' outputs."""
    workspace = re.sub(r"\W", "-", name)  # a fresh workspace: nothing restored from earlier tests
    page.goto(lab.url(f"lab/workspaces/{workspace}/tree/{name}") + "&reset")
    page.wait_for_function(JS_READY, arg=name, timeout=120_000)
    page.evaluate(JS_RUN_ALL)
    page.wait_for_function(JS_DONE, timeout=RUN_ALL_TIMEOUT_MS, polling=1000)
    ok, cells = page.evaluate("() => window.__runAll"), page.evaluate(JS_CELLS)
    errors = [o for c in cells for o in c["outputs"] if o["type"] == "error"]
    assert ok and not errors, f"{name}: cell errors {errors}"
    assert all(c["count"] is not None for c in cells), f"{name}: cells left unexecuted"
    stderr = [o["text"] for c in cells for o in c["outputs"] if o["name"] == "stderr"]
    assert not stderr, f"{name} wrote to stderr (warnings?): {stderr}"
    return cells


def rendered_images(page, scope: str) -> list[list]:
    """[complete, naturalWidth, naturalHeight] of every <img> under `scope` (really decoded images)."""
    images = page.locator(f"{scope} img")
    expect(images.first).to_be_visible()
    return images.evaluate_all("els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")


def assert_no_widget_errors(page) -> None:
    expect(page.get_by_text("Error displaying widget")).to_have_count(0)
    expect(page.get_by_text(re.compile(r"^Loading widget"))).to_have_count(0)
    # JupyterLab 4 renders tracebacks and stderr with this mime type
    expect(page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')).to_have_count(0)


def test_the_mechanism_notebook_shows_every_step(page, lab):
    cells = run_notebook(page, lab, "00_how_it_works.ipynb")
    figures = [c for c in cells if any("image/png" in o["mimes"] for o in c["outputs"])]
    assert len(figures) >= 7, f"{len(figures)} cells with figures"
    images = rendered_images(page, ".jp-Cell-outputArea .jp-RenderedImage")
    assert len(images) >= 6 and all(ok and w > 100 and h > 100 for ok, w, h in images), images
    text = page.locator(".jp-Notebook").inner_text()
    assert re.search(r"max \|by hand - encrypt_images\| = \d\.\de-1\d", text)  # by hand == package, ~1e-14
    assert "Demo key" in text
    # the explorer is a live widget here, not the static picture executed notebooks keep
    assert_no_widget_errors(page)
    explorer = page.locator(".widget-vbox").last
    expect(explorer.locator(".widget-toggle-buttons")).to_be_visible()
    before = explorer.locator(".widget-output img").get_attribute("src")
    assert all(ok and w > 100 for ok, w, _ in rendered_images(page, ".widget-output"))
    explorer.get_by_role("button", name="orthogonal", exact=True).click()
    page.wait_for_function(
        """(old) => { const i = [...document.querySelectorAll('.widget-output img')].pop();
                      return i && i.src !== old && i.complete && i.naturalWidth > 100; }""", arg=before)
    saved = Path(os.environ["FEDVIT_RUNS"]) / "smoke" / "figures"
    assert len(list(saved.glob("how_it_works_*.png"))) >= 6
    assert not page.errors, page.errors


def test_a_study_notebook_runs_all_cells_with_inline_figures(page, lab):
    cells = run_notebook(page, lab, "04_encrypted_images.ipynb")
    figures = [c for c in cells if any("image/png" in o["mimes"] for o in c["outputs"])]
    assert len(figures) >= 3, f"{len(figures)} cells with figures (Figure 2, gallery, explorer)"
    images = rendered_images(page, ".jp-Cell-outputArea .jp-RenderedImage")
    assert len(images) >= 2 and all(ok and w > 100 and h > 100 for ok, w, h in images), images
    assert_no_widget_errors(page)
    expect(page.locator(".widget-output img")).to_have_count(1)
    saved = Path(os.environ["FEDVIT_RUNS"]) / "smoke" / "figures"  # and still saved to the run folder
    assert {"figure2_encrypted_images.png", "key_kinds_gallery.png"} <= {f.name for f in saved.iterdir()}
    assert not page.errors, page.errors


def test_training_shows_progress_widgets_and_the_accuracy_curve(page, lab):
    """Notebook 02 (smoke): progress bars are notebook widgets here (executed notebooks get none)."""
    run = StudyRun.open("smoke")  # the run folder the lab's kernels use (same $FEDVIT_RUNS, smoke default)
    run.write_partition("cifar10")  # notebook 01's writer, so this test needs only notebook 02 in the browser
    cells = run_notebook(page, lab, "02_federated_training.ipynb")
    assert any("image/png" in o["mimes"] for c in cells for o in c["outputs"]), "no accuracy figure"
    assert all(ok and w > 100 for ok, w, _ in rendered_images(page, ".jp-Cell-outputArea .jp-RenderedImage"))
    bars = page.locator(".widget-hbox").filter(has=page.locator(".widget-hprogress"))
    expect(bars).to_have_count(2)  # rounds and baseline epochs stay; per-batch bars close when done
    expect(bars.nth(0)).to_contain_text("rounds: 100%")
    expect(bars.nth(1)).to_contain_text("epochs: 100%")
    assert_no_widget_errors(page)
    assert not page.errors, page.errors


def test_the_cloud_notebook_serves_encrypted_models_from_jupyterlab(page, lab):
    """Notebook 08 (smoke) in JupyterLab: it starts a model server on loopback, two clients upload their
    encrypted models and query with encrypted images, and the answers equal the plain model's (Eq. 14)."""
    pytest.importorskip("fedvit_serve", reason="the model server is installed by make serve-venv")
    import pandas as pd

    run = StudyRun.open("smoke")  # the lab kernels' run folder; notebooks 01-03's writers, so only 08 runs here
    data = run.write_partition("cifar10")
    if not (run.dataset_dir("cifar10") / "federated" / "model.pt").exists():
        run.train(data, progress=False)
    run.create_keys("cifar10", run.trained_model("cifar10", "federated"))
    cells = run_notebook(page, lab, "08_cloud_inference.ipynb")
    figures = [c for c in cells if any("image/png" in o["mimes"] for o in c["outputs"])]
    assert len(figures) >= 2, f"{len(figures)} cells with figures (embeddings, queries)"
    assert all(ok and w > 100 for ok, w, _ in rendered_images(page, ".jp-Cell-outputArea .jp-RenderedImage"))
    table = pd.read_csv(run.figures / "cloud_predictions.csv")
    assert len(table) == 2 and (table["identical to plain model on plain images"] == table["images"]).all()
    deadline = time.monotonic() + 30  # the notebook stopped its server by PID; give the OS time to reap it
    while processes_mentioning(str(run.folder / "cloud")) and time.monotonic() < deadline:
        time.sleep(1)
    assert not processes_mentioning(str(run.folder / "cloud")), "the notebook left its model server running"
    assert_no_widget_errors(page)
    assert not page.errors, page.errors
