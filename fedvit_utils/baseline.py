"""The paper's "Baseline": one model trained centrally on the same (plain) training images.

Same model, optimizer and batch size as the federated run, and the same number of epochs over the
data (rounds x local epochs), on the union of the clients' training images. One optimizer lives
through all epochs (it is the federated clients that restart theirs every round). Checkpointed after
every epoch like the federated run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .data import Preprocess
from .evaluation import predict
from .records import client_rows, load_checkpoint, rng_states, save_atomic, set_rng_states, write_history
from .task import Task, build_model
from .training import derive_seed, make_optimizer, prepare_model, train_epoch


def run_centralized(task: Task, progress: bool = True, resume: bool = True, stop_after: int | None = None) -> Path:
    """Train the baseline for the profile's total epochs; returns the output folder."""
    p, device = task.profile, task.device
    out = task.out_dir / "centralized"
    out.mkdir(parents=True, exist_ok=True)
    model = prepare_model(build_model(p, task.num_classes), device)
    preprocess = Preprocess.for_model(model).to(device)
    optimizer = make_optimizer(model, p.lr, p.momentum, p.weight_decay)
    data = task.train.subset(np.sort(np.concatenate(task.client_train)))
    settings = {"dataset": task.dataset, **p.to_dict()}
    start, history, seconds = 0, [], 0.0
    ckpt = load_checkpoint(out / "checkpoint.pt", settings) if resume else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, history, seconds = ckpt["epoch"], ckpt["history"], ckpt["seconds"]
        set_rng_states(ckpt["rng"])
    last = p.total_epochs if stop_after is None else min(p.total_epochs, stop_after)
    for epoch in tqdm(range(start, last), desc="epochs", disable=not progress, initial=start, total=p.total_epochs):
        tic = time.perf_counter()
        metrics = train_epoch(model, data, preprocess, optimizer, p.batch_size,
                              derive_seed(p.training_seed, "centralized", epoch), device, progress, desc="batches")
        seconds += time.perf_counter() - tic
        logits = predict(model, task.test.images, preprocess, p.eval_batch_size, device)
        history += client_rows(logits, task.test.labels, task.client_test, round=epoch + 1, model="centralized")
        history.append({"round": epoch + 1, "model": "centralized-train", "client": "all", **metrics})
        save_atomic(
            {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "history": history, "seconds": seconds, "rng": rng_states(), "settings": settings},
            out / "checkpoint.pt",
        )
        write_history(out, history, {"settings": settings, **task.seeds(), "epochs_done": epoch + 1,
                                     "train_seconds": seconds, "train_images_per_s": len(data) * (epoch + 1) / seconds})
    if last == p.total_epochs:
        save_atomic(model.state_dict(), out / "model.pt")
    return out


def load_trained(task: Task, which: str = "federated"):
    """The final model of a finished run ('federated' or 'centralized') in eval mode, on the task's device."""
    import torch

    path = task.out_dir / which / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"no {path}: finish training first (notebook 02 or `python -m fedvit_utils train`).")
    model = build_model(task.profile, task.num_classes)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return prepare_model(model, task.device).eval()
