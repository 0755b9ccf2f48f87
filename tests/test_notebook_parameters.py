"""Notebook parameters are checked before any work: unknown, mistyped or out-of-range values fail in one line."""

from __future__ import annotations

import papermill
import pytest

from fedvit_utils import paths
from fedvit_utils.profiles import ProfileError, default_profile
from fedvit_utils.study import parameters
from fedvit_utils.study.parameters import ParameterError, open_run
from fedvit_utils.study.run import StudyRun


def namespace(notebook: str = "02_federated_training", injected: str | None = None, **values) -> dict:
    """A notebook's globals after its parameters cell (and papermill's injected cell, if any)."""
    ns = {p.name: p.default for p in parameters.declared(notebook)}
    ns["In"] = ["", "profile = None\n..."] + ([injected] if injected else [])
    ns.update(values)
    return ns


def test_defaults_pass_and_open_the_default_profile(monkeypatch, tmp_path):
    monkeypatch.delenv("FEDVIT_PROFILE", raising=False)
    assert default_profile() == "quick"
    monkeypatch.setenv("FEDVIT_PROFILE", "smoke")
    run = open_run("04_encrypted_images", namespace("04_encrypted_images", run_dir=str(tmp_path / "r")))
    assert run.profile.name == "smoke" and run.folder == (tmp_path / "r").resolve()
    assert not (tmp_path / "r").exists(), "opening a run creates nothing"


def test_an_undeclared_papermill_parameter_is_refused_by_name():
    injected = '# Parameters\nprofile = "smoke"\nkey_kind = "permutation"\n'
    with pytest.raises(ParameterError, match=r"unknown parameter key_kind='permutation' for notebook "
                                             r"02_federated_training; it takes profile, run_dir, .*progress\."
                                             r" key_kind is a profile setting: .*YAML profile"):
        parameters.check("02_federated_training", namespace(injected=injected, key_kind="permutation"))
    # a notebook's own extras are unknown to the others
    with pytest.raises(ParameterError, match="unknown parameter photo_block=16 for notebook 02"):
        parameters.check("02_federated_training", namespace(injected="# Parameters\nphoto_block = 16\n",
                                                            photo_block=16))


def test_globals_a_notebook_makes_itself_are_not_parameters():
    """In JupyterLab a cell may run again after later cells defined names: only papermill's cell counts."""
    values = parameters.check("02_federated_training", namespace(name="cifar10", data=object()))
    assert "name" not in values and values["progress"] is None


@pytest.mark.parametrize(("name", "value", "rule"), [
    ("partition_seed", "3", "a whole number >= 0, or None"),
    ("key_seed", -1, "a whole number >= 0, or None"),
    ("progress", "no", "True, False, or None"),
    ("run_dir", "", "a folder path, or None"),
])
def test_bad_common_values_name_the_value_and_the_rule(name, value, rule):
    with pytest.raises(ParameterError, match=f"parameter {name}={value!r} is not valid for notebook "
                                             f"02_federated_training: use {rule}"):
        parameters.check("02_federated_training", namespace(**{name: value}))


@pytest.mark.parametrize(("notebook", "name", "value", "rule"), [
    ("04_encrypted_images", "photo_name", "astronot", r"one of \['astronaut', 'coffee', 'chelsea'\]"),
    ("04_encrypted_images", "photo_block", 15, "a block size that divides 224"),
    ("04_encrypted_images", "cifar_index", -1, "a whole number >= 0"),
    ("01_data_partitioning", "dirichlet_alpha", 0, "a number > 0"),
])
def test_bad_notebook_values_name_the_choices(notebook, name, value, rule):
    with pytest.raises(ParameterError, match=f"parameter {name}={value!r} is not valid for notebook {notebook}: "
                                             f"use {rule}"):
        parameters.check(notebook, namespace(notebook, **{name: value}))


def test_a_missing_parameter_and_a_bad_notebook_name_are_named():
    ns = namespace()
    del ns["key_seed"]
    with pytest.raises(ParameterError, match="does not define its parameter key_seed"):
        parameters.check("02_federated_training", ns)
    with pytest.raises(ParameterError, match="'federated_training' is not a study notebook"):
        parameters.declared("federated_training")


def test_a_profile_typo_fails_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "runs_dir", lambda: tmp_path / "runs")
    with pytest.raises(ProfileError, match=r"unknown profile 'smok': use one of \['cpu', 'paper', 'quick', 'smoke'\]"):
        open_run("04_encrypted_images", namespace("04_encrypted_images", profile="smok"))
    assert not (tmp_path / "runs").exists()


def test_a_yaml_profile_without_run_dir_gets_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "runs_dir", lambda: tmp_path / "runs")
    profile = tmp_path / "mine.yaml"
    profile.write_text("base: smoke\nkey_kind: permutation\n")
    run = StudyRun.open(str(profile))
    assert run.profile.name == "mine" and run.profile.key_kind == "permutation"
    assert run.folder == tmp_path / "runs" / "mine" and not run.folder.exists()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "mine").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"run folder .*mine is a file, not a folder: pass another run_dir"):
        StudyRun.open(str(profile))


@pytest.mark.slow
@pytest.mark.parametrize(("given", "message"), [
    ({"key_kind": "permutation"}, "ParameterError: unknown parameter key_kind='permutation' for notebook 00_"),
    ({"profile": "smok"}, "ProfileError: unknown profile 'smok': use one of"),
])
def test_papermill_runs_stop_in_the_first_cell_and_write_nothing(tmp_path, given, message):
    """`papermill -p key_kind ...` is not silently ignored, `-p profile smok` does not make runs/smok/."""
    out = tmp_path / "out.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(paths.NOTEBOOKS_DIR / "00_how_it_works.ipynb"), str(out),
                                   parameters={"run_dir": str(tmp_path / "run"), **given}, progress_bar=False,
                                   cwd=str(tmp_path))
    assert message in f"{err.value.ename}: {err.value.evalue}"
    assert err.value.exec_count == 3, "the cell right after the parameters (and papermill's) must fail"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ipynb"], "nothing else may be written"
