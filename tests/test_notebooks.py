"""Notebook hygiene: clean sources, paired scripts in sync, declared and typed parameters, no logic in cells."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib

import jupytext
import papermill
import pytest

from fedvit_utils import paths
from fedvit_utils.profiles import DEFAULT_PROFILE, PROFILES
from fedvit_utils.study import parameters
from fedvit_utils.study.runner import notebooks

NOTEBOOKS = notebooks()
# The mechanism notebook's explicit tensor code is its point; every other notebook only calls the package.
EXPLICIT_CODE = {"00_how_it_works"}


def _code_cells(nb):
    return [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]


def test_the_study_has_its_notebooks_in_order():
    names = [nb.name for nb in NOTEBOOKS]
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(len(names))]
    assert names[0] == "00_how_it_works.ipynb" and len(names) >= 7


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
    code = _code_cells(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    assert "widgets" not in doc["metadata"], "strip widget state"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one papermill parameters cell"
    pair = paths.NOTEBOOK_SCRIPTS_DIR / f"{nb.stem}.py"
    assert pair.exists(), f"{pair} missing: run `jupytext --sync notebooks/{nb.name}`"
    cells = [c for c in jupytext.read(pair).cells]
    assert ["".join(c.source) for c in cells] == ["".join(c["source"]) for c in doc["cells"]], (
        f"{nb.name} and {pair.name} differ: run `jupytext --update --to ipynb {pair.name} -o {nb.name}`"
    )


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_are_declared_typed_and_checked_first(nb):
    """papermill --help-notebook lists each declared parameter with its type; the next cell checks them all."""
    found = papermill.inspect_notebook(str(nb))
    want = parameters.declared(nb.stem)
    assert list(found) == [p.name for p in want], "the common parameters first, in order, then the notebook's own"
    for p in want:
        assert found[p.name]["inferred_type_name"] == p.type, f"{p.name}: write `# type: {p.type}` in the cell"
        assert ast.literal_eval(found[p.name]["default"]) == p.default, f"{p.name}: default differs from parameters"
        assert found[p.name]["help"], f"{p.name} needs a help comment"
    assert found["profile"]["default"] == "None", "a notebook opened in JupyterLab runs the default profile"
    code = _code_cells(nb)
    index = next(i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", []))
    assert f'open_run("{nb.stem}", globals())' in "".join(code[index + 1]["source"]), (
        "the cell after the parameters must start with open_run(<this notebook>, globals())")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_study_notebooks_only_call_the_package(nb):
    for cell in _code_cells(nb):
        src = "".join(cell["source"])
        assert "../" not in src, "no relative project paths in notebooks; use fedvit_utils.paths"
        if nb.stem in EXPLICIT_CODE:
            continue
        for node in ast.walk(ast.parse(src)):
            assert not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Lambda), "define logic in fedvit_utils"
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not {m.split(".")[0] for m in modules} & {"torch", "numpy"}, (
                    "tensor code belongs in fedvit_utils (only 00_how_it_works shows it on purpose)")


def test_papermill_help_lists_the_parameters_with_types():
    out = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook",
                          str(paths.NOTEBOOKS_DIR / "04_encrypted_images.ipynb")],
                         capture_output=True, text=True, check=True).stdout
    for line in ("profile: str|None (default None)", "partition_seed: int|None (default None)",
                 "progress: bool|None (default None)", "photo_block: int (default 16)"):
        assert line in out, out


def test_the_default_profile_is_the_readme_default():
    assert DEFAULT_PROFILE in PROFILES
    readme = (paths.PROJECT_ROOT / "README.md").read_text()
    assert f"`{DEFAULT_PROFILE}` profile by default" in readme or f"`{DEFAULT_PROFILE}` (default)" in readme
    makefile = (paths.PROJECT_ROOT / "Makefile").read_text()
    assert "PROFILE ?=\n" in makefile, "make leaves the default to fedvit_utils.profiles.default_profile"
