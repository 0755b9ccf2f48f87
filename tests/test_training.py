"""The federated engine on real data (smoke profile): determinism, exact resume, failing clients, records."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from fedvit_utils.__main__ import main
from fedvit_utils.federated import checkpoints
from fedvit_utils.federated.centralized import run_centralized
from fedvit_utils.federated.client import LocalTraining
from fedvit_utils.federated.server import run_federated, select_clients
from fedvit_utils.files import load_checked
from fedvit_utils.models import build_model
from fedvit_utils.profiles import load_profile
from fedvit_utils.study.run import StudyRun

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Task:
    """A smoke-profile dataset split among clients in its own run folder, ready for either trainer."""

    def __init__(self, tmp_path, cifar_root, name="run", **overrides):
        self.run = StudyRun.open(load_profile("smoke", **overrides), tmp_path / name, cifar_root)
        self.profile = self.run.profile
        self.data = self.run.write_partition("cifar10")

    def train(self, runner, **kwargs):
        out = self.run.dataset_dir("cifar10") / runner.__name__
        return runner(self.profile, self.data, out, self.run.device, progress=False, **kwargs)


def _weights(out):
    return checkpoints.load_model_state(out)


def _step(out):
    return load_checked(out / checkpoints.CHECKPOINT, "")["step"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seeds_same_run_other_seed_other_weights(tmp_path, cifar_root):
    a = _Task(tmp_path, cifar_root, "a").train(run_federated)
    b = _Task(tmp_path, cifar_root, "b").train(run_federated)
    c = _Task(tmp_path, cifar_root, "c", training_seed=1).train(run_federated)
    assert _same(_weights(a), _weights(b)) and not _same(_weights(a), _weights(c))
    assert pd.read_csv(a / "history.csv").equals(pd.read_csv(b / "history.csv"))
    metrics = json.loads((a / "metrics.json").read_text())
    assert metrics["partition_seed"] == 0 and metrics["training_seed"] == 0 and metrics["rounds_done"] == 2


@pytest.mark.parametrize("runner", [run_federated, run_centralized])
def test_resumed_run_ends_with_exactly_the_uninterrupted_weights(tmp_path, cifar_root, runner):
    whole = _Task(tmp_path, cifar_root, "whole", rounds=3).train(runner)
    out = _Task(tmp_path, cifar_root, "killed", rounds=3).train(runner, stop_after=1)  # as if killed after round 1
    assert not (out / "model.pt").exists()
    _Task(tmp_path, cifar_root, "killed", rounds=3).train(runner)  # a new process resumes
    assert _same(_weights(whole), _weights(out))
    assert pd.read_csv(whole / "history.csv").equals(pd.read_csv(out / "history.csv"))


def test_resume_refuses_other_settings(tmp_path, cifar_root):
    out = _Task(tmp_path, cifar_root).train(run_federated, stop_after=1)
    with pytest.raises(ValueError, match="other settings") as err:
        _Task(tmp_path, cifar_root, lr=0.5).train(run_federated)
    assert str(out / "checkpoint.pt") in str(err.value) and "'lr'" in str(err.value)
    base = _Task(tmp_path, cifar_root, "c").train(run_centralized, stop_after=1)
    with pytest.raises(ValueError, match="training_seed"):
        _Task(tmp_path, cifar_root, "c", training_seed=7).train(run_centralized)
    assert _step(base) == 1  # the old run is left intact


def test_failing_and_diverging_clients_are_left_out(tmp_path, cifar_root, monkeypatch):
    real_fit = LocalTraining.fit

    def flaky(self, model, state, data, rnd, c):
        if c == 3:
            raise RuntimeError("disk full")
        update = real_fit(self, model, state, data, rnd, c)
        if c == 5:
            nan = float("nan")
            update.state = {k: v.float() * nan if v.is_floating_point() else v for k, v in update.state.items()}
        return update

    monkeypatch.setattr(LocalTraining, "fit", flaky)
    with pytest.warns(UserWarning, match="client 5") as caught5, pytest.warns(UserWarning, match="client 3") as caught:
        out = _Task(tmp_path, cifar_root).train(run_federated)
    text = " ".join(str(w.message) for w in [*caught, *caught5])
    assert "client 3 failed (RuntimeError: disk full)" in text and "client 5 sent a non-finite update" in text
    assert _step(out) == 2
    weights = _weights(out)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    trained = pd.read_csv(out / "history.csv").query("model == 'local' and data == 'train'")
    assert sorted(trained["client"].astype(int).unique()) == [0, 1, 2, 4, 6, 7, 8, 9]


def test_fedsgd_and_client_sampling(tmp_path, cifar_root):
    task = _Task(tmp_path, cifar_root, aggregation="fedsgd", clients_per_round=3)
    init = build_model(task.profile, 10).state_dict()
    out = task.train(run_federated)
    assert not _same(init, _weights(out))
    picks = select_clients(10, 3, 0, 0)
    assert len(set(picks)) == 3 and picks == select_clients(10, 3, 0, 0) and picks != select_clients(10, 3, 0, 1)


def test_history_covers_every_model_and_client(tmp_path, cifar_root):
    out = _Task(tmp_path, cifar_root).train(run_federated)
    h = pd.read_csv(out / "history.csv", dtype={"client": "Int64"})
    assert set(zip(h["model"], h["data"], strict=True)) == {("integrated", "test"), ("local", "test"),
                                                            ("local", "train")}
    integrated = h.query("model == 'integrated'")
    assert integrated.query("scope == 'all'")["client"].isna().all()
    assert set(integrated.query("scope == 'client'")["client"]) == set(range(10))
    for split in ("test", "train"):
        assert set(h[(h["model"] == "local") & (h["data"] == split)]["client"]) == set(range(10))
    assert len(integrated) == 2 * 11  # two rounds x (all + 10 clients)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["partition_seed"], metrics["training_seed"]) == (0, 0)


def test_command_line_trains_both_models(tmp_path, cifar_root):
    main(["train", "--profile", "smoke", "--run-dir", str(tmp_path / "cli"), "--data", str(cifar_root),
          "--no-progress"])
    assert (tmp_path / "cli" / "cifar10" / "federated" / "model.pt").exists()
    assert (tmp_path / "cli" / "cifar10" / "centralized" / "model.pt").exists()


def test_throughput_counts_only_images_really_trained(tmp_path, cifar_root):
    out = _Task(tmp_path, cifar_root, clients_per_round=2).train(run_federated)
    metrics = json.loads((out / "metrics.json").read_text())
    trained = 2 * 2 * 20  # rounds x sampled clients x images per client
    assert metrics["train_images_per_s"] == pytest.approx(trained / metrics["train_seconds"])
