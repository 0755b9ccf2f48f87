"""Properties each guarded only by a slow test (or none) before: fast checks, one per way the code could go wrong.

Each test names the single change to the code it catches (tried by hand: the test fails with that
change and passes without it).
"""

from __future__ import annotations

import os
import random
import stat

import nbformat
import numpy as np
import pytest
import torch

from fedvit_utils import paths
from fedvit_utils.data import DataNotFound, load_dataset
from fedvit_utils.federated import checkpoints
from fedvit_utils.federated.client import model_and_trainer
from fedvit_utils.federated.server import run_federated, select_clients
from fedvit_utils.models import build_model
from fedvit_utils.profiles import load_profile
from fedvit_utils.study import parameters, runner
from fedvit_utils.study.run import StudyRun

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _fedsgd_run(tmp_path, cifar_root, name, **kwargs):
    run = StudyRun.open(load_profile("smoke", aggregation="fedsgd"), tmp_path / name, cifar_root)
    out = run.dataset_dir("cifar10") / "federated"
    run_federated(run.profile, run.write_partition("cifar10"), out, run.device, progress=False, **kwargs)
    return out


def test_a_resumed_fedsgd_run_ends_with_the_uninterrupted_weights(tmp_path, cifar_root):
    # Catches: the resume not restoring the server optimizer (FedSGD's momentum is server state).
    whole = _fedsgd_run(tmp_path, cifar_root, "whole")
    killed = _fedsgd_run(tmp_path, cifar_root, "killed", stop_after=1)
    assert not (killed / checkpoints.MODEL).exists()
    _fedsgd_run(tmp_path, cifar_root, "killed")  # resumes for round 2 of 2
    assert _same(checkpoints.load_model_state(whole), checkpoints.load_model_state(killed))


def test_reopening_a_run_restores_the_random_state_of_its_last_checkpoint(tmp_path):
    # Catches: a resume that does not restore the RNG states (every epoch reseeds, so weights alone hide it).
    def draws():
        return torch.rand(4).tolist(), np.random.rand(4).tolist(), [random.random() for _ in range(4)]

    settings = {"what": "rng"}
    with checkpoints.TrainingRun(tmp_path, settings, steps=2) as run:
        run.save({"w": torch.zeros(1)}, [], 0.0, 0, 1)
        after_save = draws()
    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # the new process starts elsewhere
    with checkpoints.TrainingRun(tmp_path, settings, steps=2):
        assert draws() == after_save


def test_fit_from_the_same_global_weights_gives_the_same_update_on_a_used_model(cifar_root):
    # Catches: local training that does not load the global weights first (the model object is reused
    # for every client, so it would continue from the previous client's weights).
    profile = load_profile("smoke")
    model, trainer = model_and_trainer(profile, 10, torch.device("cpu"))
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    data = load_dataset("cifar10", "train", cifar_root, max_per_class=2)
    first = trainer.fit(model, global_state, data, round_index=1, client=3)
    second = trainer.fit(model, global_state, data, round_index=1, client=3)
    assert not _same(first.state, global_state)  # training moved the weights
    assert _same(first.state, second.state)


def test_the_keys_folder_is_created_owner_only(tmp_path, cifar_root):
    # Catches: the keys folder made with the default mode (0755 under the usual umask), readable by others.
    old = os.umask(0o022)
    try:
        run = StudyRun.open(load_profile("smoke"), tmp_path / "run", cifar_root)
        run.create_keys("cifar10", build_model(run.profile, 10))
    finally:
        os.umask(old)
    for folder in (run.folder / "keys", run.folder / "keys" / "cifar10"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in (run.folder / "keys" / "cifar10").glob("*.key"))


def test_a_study_on_an_empty_data_folder_fails_before_any_notebook_starts(tmp_path, monkeypatch):
    # Catches: the study runner skipping its preflight (the first notebooks would run, then one fail late).
    nbdir, empty = tmp_path / "notebooks", tmp_path / "empty"
    nbdir.mkdir()
    empty.mkdir()
    nb = nbformat.v4.new_notebook()
    params = "\n".join(f"{p.name} = {p.default!r}" for p in parameters.COMMON)
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("open('ran', 'w')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbdir / "01_writes.ipynb")
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nbdir)
    with pytest.raises(DataNotFound, match=str(empty)):
        runner.run_study("smoke", run_dir=tmp_path / "run", data=empty, publish=False, progress=False)
    assert not (nbdir / "ran").exists() and not (tmp_path / "run" / "notebooks").exists()


def test_client_sampling_never_draws_a_client_twice_in_a_round():
    # Catches: sampling with replacement (a duplicate shows in about 28 % of draws of 3 of 10, so one
    # draw is not enough).
    for rnd in range(1000):
        picks = select_clients(10, 3, training_seed=0, round_index=rnd)
        assert len(set(picks)) == 3 and all(0 <= c < 10 for c in picks), (rnd, picks)
