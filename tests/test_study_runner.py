"""The study runner: a failing notebook stops the run and is named with its cell."""

from __future__ import annotations

import nbformat
import pytest

from fedvit_utils import paths, study


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'x'\nrun_dir = None", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_failing_notebook_is_named_with_its_cell(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    (nbdir / "params").mkdir(parents=True)
    (nbdir / "params" / "tiny.yaml").write_text("profile: tiny\n")
    _notebook(nbdir / "01_ok.ipynb", "x = 1")
    _notebook(nbdir / "02_broken.ipynb", "y = 2", "raise ValueError('boom')")
    _notebook(nbdir / "03_never.ipynb", "open('never-ran', 'w')")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(paths, "PARAMS_DIR", nbdir / "params")
    with pytest.raises(study.NotebookFailed, match=r"02_broken.ipynb failed in cell \d+ .*ValueError: boom"):
        study.run_study("tiny", run_dir=tmp_path / "run", publish=False, progress=False)
    assert (tmp_path / "run" / "notebooks" / "01_ok.ipynb").exists()
    assert not (tmp_path / "run" / "notebooks" / "03_never.ipynb").exists()


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="known profiles"):
        study.profile_parameters("no-such-profile")
