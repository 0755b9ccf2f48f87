"""The FL server role: rounds of client selection, local training, integration and evaluation.

Sec. 4.1 of the paper: 10 clients, FedAvg after every local epoch, 10 rounds. One model object lives
on the device and clients are trained in turn, so 10 clients need the memory of one. Updates are
folded into the average as they arrive (no list of 10 state dicts). A client whose training raises,
or whose update is not finite, is left out of that round with a warning; the round still completes.
After every round: metrics (CSV + JSON) and an atomic checkpoint; `resume=True` continues a killed
run and ends with exactly the weights of an uninterrupted one (CPU, same seeds).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import client as client_role
from .data import Preprocess
from .evaluation import predict
from .federated import apply_gradient, fedavg, is_finite_state
from .records import client_rows, load_checkpoint, rng_states, save_atomic, set_rng_states, write_history
from .task import Task, build_model
from .training import derive_seed, make_optimizer, prepare_model


def select_clients(num_clients: int, per_round: int | None, training_seed: int, round_index: int) -> list[int]:
    """The clients taking part in a round (all, or a seeded sample of `per_round`)."""
    if per_round is None or per_round >= num_clients:
        return list(range(num_clients))
    rng = np.random.default_rng(derive_seed(training_seed, "select", round_index))
    return sorted(rng.choice(num_clients, per_round, replace=False).tolist())


def _settings(task: Task) -> dict:
    return {"dataset": task.dataset, **task.profile.to_dict()}


def run_federated(task: Task, progress: bool = True, resume: bool = True, stop_after: int | None = None) -> Path:
    """Train with FedAvg (or FedSGD) for the profile's rounds; returns the output folder."""
    p, device = task.profile, task.device
    out = task.out_dir / "federated"
    out.mkdir(parents=True, exist_ok=True)
    model = prepare_model(build_model(p, task.num_classes), device)
    preprocess = Preprocess.for_model(model).to(device)
    server_opt = make_optimizer(model, p.lr, p.momentum, p.weight_decay) if p.aggregation == "fedsgd" else None
    settings = _settings(task)
    start, history, seconds, images = 0, [], 0.0, 0
    ckpt = load_checkpoint(out / "checkpoint.pt", settings) if resume else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        start, history, seconds = ckpt["round"], ckpt["history"], ckpt["seconds"]
        images = ckpt.get("images", 0)
        if server_opt is not None:
            server_opt.load_state_dict(ckpt["server_optimizer"])
        set_rng_states(ckpt["rng"])
    last = p.rounds if stop_after is None else min(p.rounds, stop_after)
    for rnd in tqdm(range(start, last), desc="rounds", disable=not progress, initial=start, total=p.rounds):
        tic = time.perf_counter()
        global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        chosen = select_clients(p.num_clients, p.clients_per_round, p.training_seed, rnd)
        local_rows: list[dict] = []
        updates = _client_updates(task, model, preprocess, global_state, chosen, rnd, local_rows, progress)
        try:
            integrated = fedavg(updates)
        except ValueError as exc:
            if "no client states" not in str(exc):
                raise
            warnings.warn(f"round {rnd + 1}: every client failed; the global model is unchanged.", stacklevel=2)
            integrated = None
        model.load_state_dict(global_state)
        if integrated is not None and server_opt is not None:
            apply_gradient(model, integrated, server_opt)
        elif integrated is not None:
            model.load_state_dict(integrated)
        seconds += time.perf_counter() - tic
        # Count what was really trained: sampled clients only, failed ones excluded.
        images += sum(r["n"] for r in local_rows if r["model"] == "local-train") * p.local_epochs
        logits = predict(model, task.test.images, preprocess, p.eval_batch_size, device)
        history += client_rows(logits, task.test.labels, task.client_test, round=rnd + 1, model="global")
        history += local_rows
        save_atomic(
            {"round": rnd + 1, "model": model.state_dict(), "history": history, "seconds": seconds, "images": images,
             "server_optimizer": server_opt.state_dict() if server_opt else None, "rng": rng_states(),
             "settings": settings},
            out / "checkpoint.pt",
        )
        write_history(out, history, {"settings": settings, **task.seeds(), "rounds_done": rnd + 1,
                                     "train_seconds": seconds, "train_images_per_s": images / seconds})
    if last == p.rounds:
        save_atomic(model.state_dict(), out / "model.pt")
    return out


def _client_updates(task, model, preprocess, global_state, chosen, rnd, local_rows, progress) -> Iterator:
    """Yield (update, num_examples) per client in turn, skipping failed or non-finite updates."""
    p, device = task.profile, task.device
    for c in tqdm(chosen, desc=f"round {rnd + 1} clients", disable=not progress, leave=False):
        data = task.train.subset(task.client_train[c])
        try:
            if p.aggregation == "fedsgd":
                update, n, metrics = client_role.gradient(model, global_state, data, preprocess, p, device)
            else:
                update, n, metrics = client_role.fit(model, global_state, data, preprocess, p, rnd, c, device,
                                                     progress)
        except Exception as exc:  # a failing client must not sink the round
            warnings.warn(f"round {rnd + 1}: client {c} failed ({type(exc).__name__}: {exc}); left out.",
                          stacklevel=2)
            continue
        if not is_finite_state(update):
            warnings.warn(f"round {rnd + 1}: client {c} sent a non-finite update; left out.", stacklevel=2)
            continue
        if p.eval_local and p.aggregation == "fedavg":
            idx = torch.as_tensor(task.client_test[c], dtype=torch.long)
            logits = predict(model, task.test.images[idx], preprocess, p.eval_batch_size, device)
            local_rows += client_rows(logits, task.test.labels[idx], [], round=rnd + 1, model="local")[:1]
            local_rows[-1]["client"] = c
        local_rows.append({"round": rnd + 1, "model": "local-train", "client": c, "accuracy": metrics.get("accuracy"),
                           "loss": metrics["loss"], "n": n})
        yield update, n
