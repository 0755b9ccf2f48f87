"""The study runner: a failing notebook stops the run and is named with its cell; kernels run quietly."""

from __future__ import annotations

import nbformat
import pytest

from fedvit_utils import paths
from fedvit_utils.study import parameters, runner


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    params = "\n".join(f"{p.name} = {p.default!r}" for p in parameters.COMMON)
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_figure_shown_as_text_fails_the_run(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir / "01_bare_figure.ipynb", "import matplotlib.pyplot as plt\nfig = plt.figure()\nfig")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # no inline backend: the kernel shows the Figure's repr only
    with pytest.raises(runner.NotebookFailed, match=r"01_bare_figure.ipynb: cell\(s\) \[2\] show a figure as text"):
        runner.run_study("smoke", run_dir=tmp_path / "run", publish=False, progress=False)
    executed = tmp_path / "run" / "notebooks" / "01_bare_figure.ipynb"
    assert runner.figures_shown_as_text(executed) == [2]  # after the parameters and papermill's cell
    nb = nbformat.read(executed, as_version=4)  # the same output with its picture beside the text is fine
    nb.cells[2].outputs[0].data["image/png"] = "iVBORw0KGgo="
    nbformat.write(nb, executed)
    assert runner.figures_shown_as_text(executed) == []


def test_unknown_profile_is_refused_before_any_notebook_runs(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir / "01_writes.ipynb", "open('ran', 'w')")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nbdir)
    with pytest.raises(ValueError, match="unknown profile 'smok'.*smoke"):
        runner.run_study("smok", run_dir=tmp_path / "run", publish=False, progress=False)
    assert not (nbdir / "ran").exists() and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_every_notebook_gets_the_common_parameters_and_runs_without_noise(tmp_path, monkeypatch, capfd):
    """No "Passed unknown parameter", no kernel warning about TCP, no KeyboardInterrupt at shutdown."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir / "00_a.ipynb", "print(progress)")
    _notebook(nbdir / "01_b.ipynb", "import time; time.sleep(0.5)")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nbdir)
    run = runner.run_study("smoke", run_dir=tmp_path / "run", publish=False, progress=False,
                           seeds={"key_seed": 3})
    err = capfd.readouterr().err
    assert "unknown parameter" not in err and "WARNING" not in err and "KeyboardInterrupt" not in err, err
    executed = nbformat.read(run / "notebooks" / "00_a.ipynb", as_version=4)
    given = executed.metadata.papermill.parameters
    assert sorted(given) == sorted(p.name for p in parameters.COMMON)
    assert given["progress"] is False and given["key_seed"] == 3 and given["profile"] == "smoke"
    assert executed.cells[2].outputs[0].text == "False\n", "executed notebooks get no progress bars"


def test_seeds_the_notebooks_do_not_take_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown seeds \['rounds'\]; choose from partition_seed"):
        runner.run_study("smoke", run_dir=tmp_path / "run", seeds={"rounds": 1})
    assert not (tmp_path / "run").exists()


def test_a_notebook_whose_package_is_missing_is_skipped_with_the_install_command(tmp_path, monkeypatch, capsys):
    """Notebook 08 needs the serving app; a study without it runs the others and says how to get it."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir / "00_needs.ipynb", "print(1)")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(runner, "OPTIONAL", {"00_needs": ("no_such_fedvit_package", "make its-venv")})
    run = runner.run_study("smoke", run_dir=tmp_path / "run", publish=False, progress=True, only=["00"])
    assert "00_needs.ipynb skipped: it needs no_such_fedvit_package (make its-venv)" in capsys.readouterr().out
    assert not (run / "notebooks" / "00_needs.ipynb").exists()


def test_notebook_08_is_the_one_that_needs_the_serving_app():
    assert runner.OPTIONAL == {"08_cloud_inference": ("fedvit_serve", "make serve-venv")}
    assert (paths.NOTEBOOKS_DIR / "08_cloud_inference.ipynb").exists()
