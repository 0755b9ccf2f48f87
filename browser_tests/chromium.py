"""Debian's Chromium under Playwright for the browser tests: headless, no calls home, stopped with its processes.

$FEDVIT_CHROMIUM names the binary (default /usr/bin/chromium); Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lab_server import processes_mentioning
from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("FEDVIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium_context(viewport: dict | None = None) -> Iterator[object]:
    """A persistent Chromium context on a fresh profile folder; afterwards no Chromium process of it is left."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser-test` (it installs Debian's chromium) or set "
                    f"FEDVIT_CHROMIUM to a Chromium binary.")
    profile = Path(tempfile.mkdtemp(prefix="fedvit-chromium-"))
    pw = sync_playwright().start()
    try:
        context = pw.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                        args=CHROMIUM_ARGS,
                                                        viewport=viewport or {"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()
    finally:
        pw.stop()
        stray = processes_mentioning(str(profile))
        shutil.rmtree(profile, ignore_errors=True)
        assert not stray, f"Chromium processes left behind: {stray}"
