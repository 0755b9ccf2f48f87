"""The book of an executed study in Chromium: every page loads, every figure shows, every internal link resolves,
and no request leaves this machine (every one that would is blocked and fails the test).

The book is built (`python -m fedvit_utils book`) from a smoke study run here (`python -m fedvit_utils study
--profile smoke`, about 3 minutes on two cores), or from the run folder in $FEDVIT_BOOK_RUN when that is set
(a folder with executed notebooks, to iterate quickly). It is served on 127.0.0.1 (a free port) by a thread of
this process, and opened once more from file://, as docs/book.md tells a reader to.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
from chromium import chromium_context

RUN_ENV = "FEDVIT_BOOK_RUN"
SHOTS = Path(os.environ["FEDVIT_RUNS"]) / "browser"
BUILD_LIMIT_S = 120  # a generous bound on a loaded two-core machine; executing the notebooks takes minutes
JS_IMAGES = """() => [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0,
  inOutput: !!i.closest('.cell_output')}))"""
JS_LINKS = "() => [...document.querySelectorAll('a[href]')].map(a => a.href)"
JS_IDS = "() => [...document.querySelectorAll('[id]')].map(e => e.id)"


def _outputs(notebook: Path) -> tuple[int, int]:
    """(figures, tables) among an executed notebook's outputs: image/png outputs and HTML tables."""
    outputs = [o.get("data", {}) for c in json.loads(notebook.read_text())["cells"] for o in c.get("outputs", [])]
    return (sum("image/png" in d for d in outputs),
            sum("<table" in "".join(d.get("text/html", "")) for d in outputs))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder with executed notebooks: $FEDVIT_BOOK_RUN, else a smoke study run now."""
    if os.environ.get(RUN_ENV):
        return Path(os.environ[RUN_ENV])
    folder = tmp_path_factory.mktemp("book") / "smoke"
    subprocess.run([sys.executable, "-m", "fedvit_utils", "study", "--profile", "smoke", "--run-dir", str(folder),
                    "--no-publish"], check=True, timeout=1200)
    return folder


@pytest.fixture(scope="module")
def site(run, tmp_path_factory) -> Path:
    """The book of `run`, built by the command `make book` runs; it reads the run and executes nothing."""
    notebooks = sorted((run / "notebooks").glob("*.ipynb"))
    before = {nb.name: nb.read_bytes() for nb in notebooks}
    out = tmp_path_factory.mktemp("site") / "book"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "fedvit_utils", "book", "--run-dir", str(run), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"book of {len(notebooks)} notebooks built in {seconds:.1f} s")
    assert seconds < BUILD_LIMIT_S, f"building took {seconds:.0f} s: is something executed? {done.stderr[-2000:]}"
    assert {nb.name: nb.read_bytes() for nb in notebooks} == before, "the build changed the run's notebooks"
    return out


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test reports what fails; no access log on stderr
        pass


@pytest.fixture(scope="module")
def served(site):
    """The book over HTTP on 127.0.0.1 (a free port), from a thread of this process; shut down afterwards."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def browser(request):
    """Chromium with every request that leaves this machine blocked and recorded; console errors recorded."""
    with chromium_context() as context:
        context.outside, context.errors = [], []

        def gate(route) -> None:
            url = route.request.url
            if url.startswith(("http://127.0.0.1:", "file://", "data:", "blob:")):
                route.continue_()
            else:
                context.outside.append(url)
                route.abort()

        context.route("**/*", gate)
        yield context
        assert not context.outside, f"the book tried to reach outside this machine: {context.outside}"
        assert not context.errors, f"console errors: {context.errors}"


def _watch(page, errors: list) -> None:
    page.on("console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))


def test_every_page_loads_every_figure_shows_every_internal_link_resolves(browser, served, run):
    page = browser.new_page()
    _watch(page, browser.errors)
    todo, ids, links, files = [served + "index.html"], {}, {}, set()
    while todo:  # every page the book links to, from the landing page on
        url = todo.pop()
        if url in ids:
            continue
        response = page.goto(url, wait_until="load")
        assert response is not None and response.status == 200, f"{url}: {response and response.status}"
        page.wait_for_function("() => [...document.images].every(i => i.complete)")
        broken = [i["src"] for i in page.evaluate(JS_IMAGES) if not i["ok"]]
        assert not broken, f"{url}: images that do not show: {broken}"
        ids[url] = {unquote(i) for i in page.evaluate(JS_IDS)}
        for href in page.evaluate(JS_LINKS):
            if not href.startswith(served):
                continue  # an outside link (the theme's credit) is only a link: nothing is fetched unless clicked
            target, _, fragment = href.partition("#")
            links.setdefault(target, set()).add((unquote(fragment), url))
            if target.endswith(".html"):
                todo.append(target)
            else:
                files.add(target)
    for target in files:  # an image or download a page links to
        assert browser.request.get(target).status == 200, f"{target} (linked) does not load"
    dead = [(f"{target}#{fragment}", source) for target, refs in links.items() if target.endswith(".html")
            for fragment, source in refs if fragment and fragment not in ids[target]]
    assert not dead, f"links to anchors that do not exist (link, on page): {dead}"

    notebooks = sorted((run / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    pages = {f"{served}notebooks/{nb.stem}.html": nb for nb in notebooks}
    assert set(pages) <= set(ids), f"notebook pages not reachable from the landing page: {set(pages) - set(ids)}"
    for url, nb in pages.items():  # each executed notebook's figures and tables are on its page
        figures, tables = _outputs(nb)
        page.goto(url, wait_until="load")
        shown = [i for i in page.evaluate(JS_IMAGES) if i["inOutput"]]
        assert len(shown) == figures and all(i["ok"] for i in shown), f"{nb.name}: {figures} figures, shown {shown}"
        assert page.locator(".cell_output table").count() >= tables, f"{nb.name}: {tables} tables"
    page.goto(f"{served}notebooks/{notebooks[0].stem}.html", wait_until="load")
    if page.locator("math").count():  # the text's equations are drawn (MathML, rendered by the browser itself)
        box = page.locator("math").first.bounding_box()
        assert box and box["width"] > 5 and box["height"] > 5, box
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "book_notebook.png"))
    page.goto(served + "search.html?q=encryption", wait_until="load")  # search runs offline too
    page.wait_for_function("() => document.querySelectorAll('#search-results li').length > 0", timeout=30_000)
    page.goto(served + "index.html", wait_until="load")
    page.screenshot(path=str(SHOTS / "book_index.png"), full_page=True)
    for notebook in notebooks:
        assert f"notebooks/{notebook.stem}.html" in page.content(), f"{notebook.name} missing from the landing page"


def test_the_book_opens_from_the_file_system_too(browser, site):
    """`open runs/<profile>/book/index.html`: pages and figures load from file:// without a server."""
    page = browser.new_page()
    _watch(page, browser.errors)
    for name in ["index.html", *sorted(p.relative_to(site).as_posix() for p in (site / "notebooks").glob("*.html"))]:
        page.goto((site / name).as_uri(), wait_until="load")
        images = page.evaluate(JS_IMAGES)
        assert all(i["ok"] for i in images), f"{name}: {[i['src'] for i in images if not i['ok']]}"
