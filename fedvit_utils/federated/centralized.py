"""The paper's "Baseline": one model trained centrally on the same (plain) training images.

Same model, optimizer and batch size as the federated run, and the same number of epochs over the
data (rounds x local epochs), on the union of the clients' training images. One optimizer lives
through all epochs (it is the federated clients that restart theirs every round). Checkpointed after
every epoch by the loop the federated run uses (`server.run_resumable`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..partition import FederatedDataset
from ..profiles import Profile
from ..seeds import derive_seed
from .client import model_and_trainer
from .server import StepResult, run_resumable


def run_centralized(profile: Profile, data: FederatedDataset, out: str | os.PathLike, device: torch.device,
                    progress: bool = True, resume: bool = True, stop_after: int | None = None) -> Path:
    """Train the baseline for the profile's total epochs into `out`; returns `out`."""
    model, trainer = model_and_trainer(profile, data.num_classes, device, progress)
    optimizer = trainer.optimizer(model)
    train = data.all_client_train()

    def one_epoch(epoch: int) -> StepResult:
        metrics = trainer.epoch(model, optimizer, train, derive_seed(profile.training_seed, "centralized", epoch))
        row = {"round": epoch + 1, "model": "centralized", "data": "train", "scope": "all", "client": None, **metrics}
        return StepResult([row], len(train), 1)

    return run_resumable(profile, data, out, model, trainer, one_epoch, steps=profile.total_epochs, unit="epochs",
                         label="centralized", server_state=("optimizer", optimizer), progress=progress,
                         resume=resume, stop_after=stop_after)
