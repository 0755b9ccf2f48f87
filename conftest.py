"""Test-session settings shared by tests/ and the nbval run of notebooks/.

Run folders go to a fresh temporary directory (FEDVIT_RUNS), set before any notebook kernel starts,
so tests never read stale results or touch runs/ of real studies. Notebooks run with the profile
they get when none is named (`profiles.default_profile`): the tests make that ``smoke`` (seconds),
whatever the environment says, so nbval runs every notebook smoke-sized.

nbval keeps no executed notebook; `nbval_outputs` below writes each one it ran (the outputs it
received, cell by cell) to $FEDVIT_RUNS/nbval/<name>.ipynb, for tests/test_study_results.py to
open: every figure must have arrived as image/png, and nothing may have gone to stderr.
"""

import copy
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("FEDVIT_RUNS", tempfile.mkdtemp(prefix="fedvit-test-runs-"))
os.environ["FEDVIT_PROFILE"] = "smoke"
os.environ.setdefault("MPLBACKEND", "Agg")

_executed: dict[Path, object] = {}
RESULTS_TESTS = "test_study_results.py"  # reads what nbval's notebook runs wrote: runs after them


def pytest_collection_modifyitems(session, config, items):
    """tests/test_study_results.py runs last, after nbval has executed the notebooks (collected after tests/)."""
    items.sort(key=lambda item: Path(str(item.fspath)).name == RESULTS_TESTS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    outputs = getattr(item, "test_outputs", None)
    if call.when != "call" or outputs is None or not hasattr(item, "cell"):
        return
    import nbformat

    source = Path(str(item.fspath))
    nb = _executed.get(source)
    if nb is None:
        nb = _executed[source] = copy.deepcopy(item.parent.nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
    index = next(i for i, cell in enumerate(item.parent.nb.cells) if cell is item.cell)
    nb.cells[index].outputs = [nbformat.from_dict(o) for o in outputs]
    target = Path(os.environ["FEDVIT_RUNS"]) / "nbval" / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(target))
