"""The FL client role: train the global model on local data and report the update with its size.

Each round a client starts from the server's weights with a fresh optimizer (FedAvg, McMahan et al.
2017, Alg. 1, ClientUpdate) and trains `local_epochs` epochs with the paper's settings (Sec. 4.1: SGD,
lr 1e-3, momentum 0.9, batch 8, cross-entropy); it returns its weights and its number of examples,
which FedAvg uses as the averaging weight. A FedSGD client returns its full-batch gradient instead.
Seeds derive from (training_seed, round, client, epoch), so a resumed run, or the same client in
another process (the Flower app), retrains exactly as the uninterrupted in-process run.

Batches are tensor indices into in-memory uint8 images; preprocessing runs on the training device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data import ImageData, Preprocess
from ..devices import autocast, prepare_model, to_device
from ..models import build_model
from ..profiles import Profile
from ..seeds import derive_seed

StateDict = dict[str, torch.Tensor]  # a model's state_dict (or a gradient per parameter)


@dataclass
class ClientUpdate:
    """What a client reports: its new weights (or gradient), its number of examples, its training metrics."""

    state: StateDict
    num_examples: int
    metrics: dict = field(default_factory=dict)


def batches(data: ImageData, batch_size: int, seed: int | None, preprocess: nn.Module,
            device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Preprocessed (images, labels) batches on `device`, in a seeded random order (None: data order)."""
    n = len(data)
    order = torch.arange(n) if seed is None else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield preprocess(to_device(data.images[idx], device)), to_device(data.labels[idx], device)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator, device: torch.device
                ) -> dict[str, float]:
    """One pass of SGD steps with cross-entropy over `batches`; returns mean loss, accuracy and count."""
    model.train()
    # Sums stay on the device: a .item() per batch would stall a GPU pipeline at every step.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in batches:
        with autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
    if n == 0:
        raise ValueError("cannot train on an empty dataset: this client holds no images.")
    mean_loss = loss_sum.item() / n
    if not math.isfinite(mean_loss):
        # A diverged client: the server leaves its update out of the average.
        raise FloatingPointError(f"training loss became {mean_loss} over {n} examples")
    return {"loss": mean_loss, "accuracy": correct.item() / n, "n": n}


@dataclass
class LocalTraining:
    """How every client (and the baseline) trains: the profile's optimizer settings, preprocessing, device."""

    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    local_epochs: int
    training_seed: int
    eval_batch_size: int  # passes that update nothing: evaluation and FedSGD's full-data gradient (memory only)
    preprocess: nn.Module
    device: torch.device
    progress: bool = False

    @classmethod
    def from_profile(cls, profile: Profile, preprocess: nn.Module, device: torch.device,
                     progress: bool = False) -> LocalTraining:
        """The local-training settings of `profile` on `device`."""
        return cls(profile.batch_size, profile.lr, profile.momentum, profile.weight_decay, profile.local_epochs,
                   profile.training_seed, profile.eval_batch_size, preprocess, device, progress)

    def optimizer(self, model: nn.Module) -> torch.optim.SGD:
        """SGD as in the paper (lr 1e-3, momentum 0.9 by default)."""
        return torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, data: ImageData, seed: int,
              desc: str = "batches") -> dict[str, float]:
        """One epoch over `data` in the order drawn from `seed` (dropout draws seeded too)."""
        torch.manual_seed(seed)  # dropout / drop-path draws, if the model has any
        steps = batches(data, self.batch_size, seed, self.preprocess, self.device)
        total = -(-len(data) // self.batch_size)
        steps = tqdm(steps, desc=desc, total=total, leave=False, disable=not self.progress)
        return train_epoch(model, optimizer, steps, self.device)

    def fit(self, model: nn.Module, global_state: StateDict, data: ImageData, round_index: int, client: int
            ) -> ClientUpdate:
        """FedAvg ClientUpdate: local epochs from the global weights with a fresh optimizer."""
        model.load_state_dict(global_state)
        optimizer = self.optimizer(model)
        metrics: dict = {}
        for epoch in range(self.local_epochs):
            seed = derive_seed(self.training_seed, "client", round_index, client, epoch)
            metrics = self.epoch(model, optimizer, data, seed, desc=f"client {client}")
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return ClientUpdate(state, len(data), metrics)

    def gradient(self, model: nn.Module, global_state: StateDict, data: ImageData) -> ClientUpdate:
        """FedSGD: the mean gradient of the loss over all local data at the global weights."""
        model.load_state_dict(global_state)
        model.train()
        model.zero_grad(set_to_none=True)
        n, loss_sum = len(data), 0.0
        for x, y in batches(data, self.eval_batch_size, None, self.preprocess, self.device):
            with autocast(self.device):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            (loss / n).backward()
            loss_sum += loss.item()
        grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
        return ClientUpdate(grads, n, {"loss": loss_sum / n, "n": n})


def model_and_trainer(profile: Profile, num_classes: int, device: torch.device, progress: bool = False
                      ) -> tuple[nn.Module, LocalTraining]:
    """The profile's model on `device` (initialised from training_seed) and how it is trained locally."""
    model = prepare_model(build_model(profile, num_classes), device)
    return model, LocalTraining.from_profile(profile, Preprocess.for_model(model).to(device), device, progress)
