"""The FL server role: rounds of client selection, local training, integration and evaluation.

Sec. 4.1 of the paper: 10 clients, FedAvg after every local epoch, 10 rounds. One model object lives
on the device and clients are trained in turn, so 10 clients need the memory of one. Updates are
folded into the average as they arrive (no list of 10 state dicts). A client whose training raises,
or whose update is not finite, is left out of that round with a warning; the round still completes.
After every round: an atomic checkpoint and the records (see `checkpoints`); `resume=True` continues a
killed run and ends with exactly the weights of an uninterrupted one (CPU, same seeds).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..evaluation import metrics_from_logits, predict
from ..partition import FederatedDataset
from ..profiles import Profile
from ..seeds import derive_seed
from .aggregation import FedAvg, NoClientUpdates, is_finite_state
from .checkpoints import TrainingRun, evaluation_rows
from .client import ClientUpdate, LocalTraining, model_and_trainer
from .strategies import Strategy, strategy_class


def select_clients(num_clients: int, per_round: int | None, training_seed: int, round_index: int) -> list[int]:
    """The clients taking part in a round (all, or a seeded sample of `per_round`)."""
    if per_round is None or per_round >= num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng(derive_seed(training_seed, "select", round_index))
    return sorted(rng.choice(num_clients, per_round, replace=False).tolist())


def run_settings(profile: Profile, dataset: str) -> dict:
    """What a checkpoint must match to be resumed: the dataset and every setting that changes weights."""
    return {"dataset": dataset, **profile.training_settings()}


def run_federated(profile: Profile, data: FederatedDataset, out: str | os.PathLike, device: torch.device,
                  progress: bool = True, resume: bool = True, stop_after: int | None = None) -> Path:
    """Train with the profile's aggregation strategy (FedAvg, FedSGD, ...) for its rounds into `out`; returns `out`."""
    model, trainer = model_and_trainer(profile, data.num_classes, device, progress)
    strategy = strategy_class(profile.aggregation)(trainer, model)
    client_test = data.client_test_indices()

    def one_round(rnd: int) -> StepResult:
        global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        mean, rows, trained = FedAvg(), [], 0
        for c in select_clients(profile.num_clients, profile.clients_per_round, profile.training_seed, rnd):
            update = _train_client(strategy, global_state, data, rnd, c)
            if update is None:
                continue
            mean.add(update.state, update.num_examples)
            trained += strategy.images_trained(update)
            rows += _client_rows(strategy, data, client_test, update, profile, rnd, c)
        model.load_state_dict(global_state)
        try:
            integrated = mean.result()
        except NoClientUpdates:
            warnings.warn(f"round {rnd + 1}: every client failed; the global model is unchanged.", stacklevel=2)
        else:
            strategy.integrate(integrated)
        return StepResult(rows, trained, mean.count)

    return run_resumable(profile, data, out, model, trainer, one_round, steps=profile.rounds, unit="rounds",
                         label="integrated", server_state=("server_optimizer", strategy), progress=progress,
                         resume=resume, stop_after=stop_after)


@dataclass
class StepResult:
    """What one step (a round, an epoch) reports: its training rows, the images it trained on, its updates."""

    rows: list[dict]
    images: int
    updates: int


def run_resumable(profile: Profile, data: FederatedDataset, out: str | os.PathLike, model: nn.Module,
                  trainer: LocalTraining, step: Callable[[int], StepResult], *, steps: int, unit: str, label: str,
                  server_state: tuple[str, Any], progress: bool, resume: bool, stop_after: int | None) -> Path:
    """The loop both trainings share: resume, run `step` for each step left, evaluate, checkpoint, finish.

    `server_state` is (name in the checkpoint, an object with state_dict/load_state_dict): what besides
    the weights a resumed run needs (FedSGD's server optimizer, the baseline's optimizer). The global
    RNG states are saved and restored with every checkpoint (`checkpoints.TrainingRun`).
    """
    out = Path(out)
    name, holder = server_state
    client_test = data.client_test_indices()
    with TrainingRun(out, run_settings(profile, data.name), steps, resume) as run:
        if run.model_state is not None:
            model.load_state_dict(run.model_state)
            holder.load_state_dict(run.extra[name])
        last = steps if stop_after is None else min(steps, stop_after)
        for i in tqdm(range(run.done, last), desc=unit, disable=not progress, initial=run.done, total=steps):
            tic = time.perf_counter()
            result = step(i)
            seconds = time.perf_counter() - tic
            logits = predict(model, data.test.images, trainer.preprocess, profile.eval_batch_size, trainer.device)
            rows = evaluation_rows(logits, data.test.labels, client_test, round=i + 1, model=label) + result.rows
            run.save(model.state_dict(), rows, seconds, result.images, result.updates,
                     extra={name: holder.state_dict()},
                     summary={"partition_seed": data.splits.settings["partition_seed"],
                              "training_seed": profile.training_seed, f"{unit}_done": i + 1})
        run.finish(model.state_dict())
    return out


def _train_client(strategy: Strategy, global_state: dict, data: FederatedDataset, rnd: int, client: int
                  ) -> ClientUpdate | None:
    """One client's update, or None (with a warning) if its training raised or its update is not finite."""
    local = data.client_train(client)
    try:
        update = strategy.client_update(global_state, local, rnd, client)
    except Exception as exc:  # a failing client must not sink the round
        warnings.warn(f"round {rnd + 1}: client {client} failed ({type(exc).__name__}: {exc}); left out.",
                      stacklevel=3)
        return None
    if not is_finite_state(update.state):
        warnings.warn(f"round {rnd + 1}: client {client} sent a non-finite update; left out.", stacklevel=3)
        return None
    return update


def _client_rows(strategy: Strategy, data: FederatedDataset, client_test: list[torch.Tensor], update: ClientUpdate,
                 profile: Profile, rnd: int, client: int) -> list[dict]:
    """History rows of one client: its training metrics and (if it holds a trained local model) its test metrics."""
    local_test = None
    if profile.eval_local and strategy.client_holds_local_model:
        idx = client_test[client]  # the model still holds this client's trained weights
        local_test = metrics_on(strategy.trainer, strategy.model, data.test.images[idx], data.test.labels[idx],
                                profile.eval_batch_size)
    return client_rows(update, rnd + 1, client, local_test)


def metrics_on(trainer: LocalTraining, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 batch_size: int) -> dict:
    """Accuracy, loss and count of `model` on a client's own test images (uint8), with the trainer's preprocessing."""
    logits = predict(model, images, trainer.preprocess, batch_size, trainer.device)
    return metrics_from_logits(logits, labels)


def client_rows(update: ClientUpdate, round_label: int, client: int, local_test: dict | None = None) -> list[dict]:
    """History rows of one client's round: its training metrics, and its local model's test metrics if given.

    Shared by this engine and the Flower app (fedvit_flower), so both write the same records.
    """
    rows = [{"round": round_label, "model": "local", "data": "train", "scope": "client", "client": client,
             "accuracy": update.metrics.get("accuracy"), "loss": update.metrics["loss"], "n": update.num_examples}]
    if local_test is not None:
        rows.append({"round": round_label, "model": "local", "data": "test", "scope": "client", "client": client,
                     **local_test})
    return rows
