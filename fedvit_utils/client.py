"""The FL client role: train the global model on local data and report the update with its size.

Each round a client starts from the server's weights with a fresh optimizer (FedAvg, McMahan et al.
2017, Alg. 1, ClientUpdate) and trains `local_epochs` epochs; it returns its weights and its number
of examples, which FedAvg uses as the averaging weight. A FedSGD client returns its full-batch
gradient instead. Seeds derive from (training_seed, round, client), so a resumed run retrains a
client exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import torch
from torch import nn

from .data import ImageData
from .profiles import Profile
from .training import derive_seed, epoch_gradient, make_optimizer, train_epoch

State = dict[str, torch.Tensor]


def fit(
    model: nn.Module,
    global_state: State,
    data: ImageData,
    preprocess: nn.Module,
    profile: Profile,
    round_index: int,
    client: int,
    device: torch.device,
    progress: bool = False,
) -> tuple[State, int, dict]:
    """Local training from the global weights; returns (weights, num_examples, metrics)."""
    model.load_state_dict(global_state)
    optimizer = make_optimizer(model, profile.lr, profile.momentum, profile.weight_decay)
    metrics = {}
    for epoch in range(profile.local_epochs):
        seed = derive_seed(profile.training_seed, "client", round_index, client, epoch)
        metrics = train_epoch(model, data, preprocess, optimizer, profile.batch_size, seed, device,
                              progress, desc=f"client {client}")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, len(data), metrics


def gradient(
    model: nn.Module,
    global_state: State,
    data: ImageData,
    preprocess: nn.Module,
    profile: Profile,
    device: torch.device,
) -> tuple[State, int, dict]:
    """FedSGD: the mean gradient over all local data at the global weights; (gradient, n, metrics)."""
    model.load_state_dict(global_state)
    grads, metrics = epoch_gradient(model, data, preprocess, profile.eval_batch_size, device)
    return grads, len(data), metrics
