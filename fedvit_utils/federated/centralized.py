"""The paper's "Baseline": one model trained centrally on the same (plain) training images.

Same model, optimizer and batch size as the federated run, and the same number of epochs over the
data (rounds x local epochs), on the union of the clients' training images. One optimizer lives
through all epochs (it is the federated clients that restart theirs every round). Checkpointed after
every epoch like the federated run (see `checkpoints`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..evaluation import predict
from ..partition import FederatedDataset
from ..profiles import Profile
from ..seeds import derive_seed
from .checkpoints import TrainingRun, evaluation_rows
from .client import model_and_trainer
from .server import run_settings


def run_centralized(profile: Profile, data: FederatedDataset, out: str | os.PathLike, device: torch.device,
                    progress: bool = True, resume: bool = True, stop_after: int | None = None) -> Path:
    """Train the baseline for the profile's total epochs into `out`; returns `out`."""
    out = Path(out)
    model, trainer = model_and_trainer(profile, data.num_classes, device, progress)
    preprocess = trainer.preprocess
    optimizer = trainer.optimizer(model)
    train = data.all_client_train()
    with TrainingRun(out, run_settings(profile, data.name), profile.total_epochs, resume) as run:
        if run.model_state is not None:
            model.load_state_dict(run.model_state)
            optimizer.load_state_dict(run.extra["optimizer"])
        client_test = data.client_test_indices()
        last = profile.total_epochs if stop_after is None else min(profile.total_epochs, stop_after)
        for epoch in tqdm(range(run.done, last), desc="epochs", disable=not progress, initial=run.done,
                          total=profile.total_epochs):
            tic = time.perf_counter()
            metrics = trainer.epoch(model, optimizer, train, derive_seed(profile.training_seed, "centralized", epoch))
            seconds = time.perf_counter() - tic
            logits = predict(model, data.test.images, preprocess, profile.eval_batch_size, device)
            rows = evaluation_rows(logits, data.test.labels, client_test, round=epoch + 1, model="centralized")
            rows.append({"round": epoch + 1, "model": "centralized", "data": "train", "scope": "all", "client": None,
                         **metrics})
            run.save(model.state_dict(), rows, seconds, len(train), 1, extra={"optimizer": optimizer.state_dict()},
                     summary={"partition_seed": data.splits.settings["partition_seed"],
                              "training_seed": profile.training_seed, "epochs_done": epoch + 1})
        run.finish(model.state_dict())
    return out
