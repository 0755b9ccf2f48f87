"""The study runner: a failing notebook stops the run and is named with its cell."""

from __future__ import annotations

import nbformat
import pytest

from fedvit_utils import paths
from fedvit_utils.study import runner


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    params = "profile = 'x'\nrun_dir = None\ndata_root = None"
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_failing_notebook_is_named_with_its_cell(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir / "01_ok.ipynb", "x = 1")
    _notebook(nbdir / "02_broken.ipynb", "y = 2", "raise ValueError('boom')")
    _notebook(nbdir / "03_never.ipynb", "open('never-ran', 'w')")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nbdir)
    with pytest.raises(runner.NotebookFailed, match=r"02_broken.ipynb failed in cell \d+ .*ValueError: boom"):
        runner.run_study("smoke", run_dir=tmp_path / "run", publish=False, progress=False)
    assert (tmp_path / "run" / "notebooks" / "01_ok.ipynb").exists()
    assert not (tmp_path / "run" / "notebooks" / "03_never.ipynb").exists()


def test_unknown_profile_is_refused_before_any_notebook_runs(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir / "01_writes.ipynb", "open('ran', 'w')")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nbdir)
    with pytest.raises(ValueError, match="unknown profile 'smok'.*smoke"):
        runner.run_study("smok", run_dir=tmp_path / "run", publish=False, progress=False)
    assert not (nbdir / "ran").exists() and not (tmp_path / "run").exists()
