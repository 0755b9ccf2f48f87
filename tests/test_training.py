"""The federated engine on real data (smoke profile): determinism, exact resume, failing clients, records."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from fedvit_utils import client as client_role
from fedvit_utils.__main__ import main
from fedvit_utils.baseline import run_centralized
from fedvit_utils.profiles import load_profile
from fedvit_utils.server import run_federated, select_clients
from fedvit_utils.task import build_model, load_task


@pytest.fixture(autouse=True)
def _one_thread():
    # Smoke models are tiny: one thread is fastest, and two threads beside another torch process on a
    # 2-core machine spin-wait each other (a 1 s run then takes a minute).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _task(tmp_path, cifar_root, name="run", **overrides):
    return load_task(load_profile("smoke", **overrides), "cifar10", tmp_path / name, cifar_root)


def _weights(out):
    return torch.load(out / "model.pt", weights_only=True)


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seeds_same_run_other_seed_other_weights(tmp_path, cifar_root):
    a = run_federated(_task(tmp_path, cifar_root, "a"), progress=False)
    b = run_federated(_task(tmp_path, cifar_root, "b"), progress=False)
    c = run_federated(_task(tmp_path, cifar_root, "c", training_seed=1), progress=False)
    assert _same(_weights(a), _weights(b)) and not _same(_weights(a), _weights(c))
    assert pd.read_csv(a / "history.csv").equals(pd.read_csv(b / "history.csv"))
    metrics = json.loads((a / "metrics.json").read_text())
    assert metrics["partition_seed"] == 0 and metrics["training_seed"] == 0 and metrics["rounds_done"] == 2


@pytest.mark.parametrize("runner", [run_federated, run_centralized])
def test_resumed_run_ends_with_exactly_the_uninterrupted_weights(tmp_path, cifar_root, runner):
    whole = runner(_task(tmp_path, cifar_root, "whole", rounds=3), progress=False)
    killed = _task(tmp_path, cifar_root, "killed", rounds=3)
    out = runner(killed, progress=False, stop_after=1)  # as if killed after round 1
    assert not (out / "model.pt").exists()
    runner(_task(tmp_path, cifar_root, "killed", rounds=3), progress=False)  # a new process resumes
    assert _same(_weights(whole), _weights(out))
    assert pd.read_csv(whole / "history.csv").equals(pd.read_csv(out / "history.csv"))


def test_resume_refuses_other_settings(tmp_path, cifar_root):
    out = run_federated(_task(tmp_path, cifar_root), progress=False, stop_after=1)
    with pytest.raises(ValueError, match="other settings") as err:
        run_federated(_task(tmp_path, cifar_root, lr=0.5), progress=False)
    assert str(out / "checkpoint.pt") in str(err.value) and "'lr'" in str(err.value)
    base = run_centralized(_task(tmp_path, cifar_root, "c"), progress=False, stop_after=1)
    with pytest.raises(ValueError, match="training_seed"):
        run_centralized(_task(tmp_path, cifar_root, "c", training_seed=7), progress=False)
    assert torch.load(base / "checkpoint.pt", weights_only=False)["epoch"] == 1  # the old run is left intact


def test_failing_and_diverging_clients_are_left_out(tmp_path, cifar_root, monkeypatch):
    real_fit = client_role.fit

    def flaky(model, state, data, pre, profile, rnd, c, device, progress=False):
        if c == 3:
            raise RuntimeError("disk full")
        update, n, metrics = real_fit(model, state, data, pre, profile, rnd, c, device, progress)
        if c == 5:
            update = {k: v.float() * float("nan") if v.is_floating_point() else v for k, v in update.items()}
        return update, n, metrics

    monkeypatch.setattr(client_role, "fit", flaky)
    with pytest.warns(UserWarning, match="client 5") as caught5, pytest.warns(UserWarning, match="client 3") as caught:
        out = run_federated(_task(tmp_path, cifar_root), progress=False)
    text = " ".join(str(w.message) for w in [*caught, *caught5])
    assert "client 3 failed (RuntimeError: disk full)" in text and "client 5 sent a non-finite update" in text
    assert torch.load(out / "checkpoint.pt", weights_only=False)["round"] == 2
    weights = _weights(out)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    trained = pd.read_csv(out / "history.csv").query("model == 'local-train'")
    assert sorted(trained["client"].astype(int).unique()) == [0, 1, 2, 4, 6, 7, 8, 9]


def test_fedsgd_and_client_sampling(tmp_path, cifar_root):
    task = _task(tmp_path, cifar_root, aggregation="fedsgd", clients_per_round=3)
    init = build_model(task.profile, 10).state_dict()
    out = run_federated(task, progress=False)
    assert not _same(init, _weights(out))
    picks = select_clients(10, 3, 0, 0)
    assert len(set(picks)) == 3 and picks == select_clients(10, 3, 0, 0) and picks != select_clients(10, 3, 0, 1)


def test_history_covers_every_model_and_client(tmp_path, cifar_root):
    out = run_federated(_task(tmp_path, cifar_root), progress=False)
    h = pd.read_csv(out / "history.csv")
    assert set(h["model"]) == {"global", "local", "local-train"}
    assert set(h.query("model == 'global'")["client"].astype(str)) == {"all", *map(str, range(10))}
    for name in ("local", "local-train"):
        assert set(h[h["model"] == name]["client"].astype(str)) == set(map(str, range(10)))
    assert len(h.query("model == 'global'")) == 2 * 11  # two rounds x (all + 10 clients)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["partition_seed"], metrics["training_seed"]) == (0, 0)


def test_command_line_trains_both_models(tmp_path, cifar_root):
    main(["train", "--profile", "smoke", "--run-dir", str(tmp_path / "cli"), "--data", str(cifar_root),
          "--no-progress"])
    assert (tmp_path / "cli" / "cifar10" / "federated" / "model.pt").exists()
    assert (tmp_path / "cli" / "cifar10" / "centralized" / "model.pt").exists()


def test_throughput_counts_only_images_really_trained(tmp_path, cifar_root):
    out = run_federated(_task(tmp_path, cifar_root, clients_per_round=2), progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    trained = 2 * 2 * 20  # rounds x sampled clients x images per client
    assert metrics["train_images_per_s"] == pytest.approx(trained / metrics["train_seconds"])
