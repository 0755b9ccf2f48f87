"""Notebook hygiene: clean sources, paired scripts in sync, parameters with seeds, no logic in cells."""

from __future__ import annotations

import json
import tomllib

import jupytext
import pytest

from fedvit_utils import paths
from fedvit_utils.profiles import PROFILES
from fedvit_utils.study.runner import notebooks

NOTEBOOKS = notebooks()
COMMON = ("profile", "run_dir", "data_root", "partition_seed", "training_seed", "key_seed")


def test_the_study_has_its_notebooks_in_order():
    names = [nb.name for nb in NOTEBOOKS]
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(1, len(names) + 1)]
    assert len(names) >= 6


def test_every_notebook_is_executed_by_the_test_command():
    """nbval collects every .ipynb under notebooks/ when the test command passes --nbval-lax."""
    settings = tomllib.loads((paths.PROJECT_ROOT / "pyproject.toml").read_text())
    assert "notebooks" in settings["tool"]["pytest"]["ini_options"]["testpaths"]
    test_rule = (paths.PROJECT_ROOT / "Makefile").read_text().split("\ntest:")[1].split("\n\n")[0]
    assert "--nbval-lax" in test_rule
    assert "make test" in (paths.PROJECT_ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_notebook_is_clean_and_paired(nb):
    doc = json.loads(nb.read_text())
    code = [c for c in doc["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one papermill parameters cell"
    text = "".join(params[0]["source"])
    assert 'profile = "smoke"' in text, "defaults must be smoke-sized (nbval runs them)"
    names = [line.split("=")[0].strip() for line in text.splitlines() if "=" in line and not line.startswith("#")]
    assert tuple(names[: len(COMMON)]) == COMMON, "every notebook takes the runner's parameters first"
    pair = nb.with_suffix(".py")
    assert pair.exists(), f"{pair.name} missing: run `jupytext --sync {nb.name}`"
    cells = [c for c in jupytext.read(pair).cells]
    assert ["".join(c.source) for c in cells] == ["".join(c["source"]) for c in doc["cells"]], (
        f"{nb.name} and {pair.name} differ: run `jupytext --sync`"
    )


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_only_call_the_package(nb):
    for cell in json.loads(nb.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        assert "\ndef " not in "\n" + src and "\nclass " not in "\n" + src, "define logic in fedvit_utils"
        assert "../" not in src, "no relative project paths in notebooks; use fedvit_utils.paths"


def test_the_default_study_profile_is_a_known_profile():
    makefile = (paths.PROJECT_ROOT / "Makefile").read_text()
    default = makefile.split("PROFILE ?=")[1].split()[0]
    assert default in PROFILES, f"make study would run an unknown profile {default!r}"
