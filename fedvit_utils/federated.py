"""Model integration for federated learning: FedAvg and FedSGD (McMahan et al. 2017, the paper's [5]).

FedAvg: the server's new weights are the clients' weights averaged with weights n_k / n, n_k being
client k's number of training examples. FedSGD: the same average over the clients' gradients, followed
by one server SGD step. The average folds clients in one at a time (an iterator is enough), in
float64, so 10 ViT-B/16 updates need no more memory than 2: the float64 accumulator (2 float32
copies) plus the float32 result, each key released as soon as it is converted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

State = Mapping[str, torch.Tensor]


def fedavg(states: Iterable[State] | Iterable[tuple[State, float]], weights: Iterable[float] | None = None) -> dict:
    """Example-weighted mean of state dicts; `states` may be an iterator of (state, weight) pairs."""
    pairs = iter(states) if weights is None else zip(states, weights, strict=True)
    acc: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    total = 0.0
    for i, pair in enumerate(pairs):
        try:
            state, weight = pair
        except (TypeError, ValueError):
            raise TypeError("without `weights`, pass (state_dict, num_examples) pairs") from None
        weight = float(weight)
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"client {i} has weight {weight}; weights are example counts and must be > 0.")
        if not acc:
            dtypes = {k: v.dtype for k, v in state.items()}
            acc = {k: torch.zeros(v.shape, dtype=torch.float64, device=v.device) for k, v in state.items()}
        elif state.keys() != acc.keys():
            diff = sorted(set(state) ^ set(acc))[:5]
            raise ValueError(f"client {i}'s state has different keys ({diff}...): all clients must share one model.")
        for k, v in state.items():
            if v.shape != acc[k].shape:
                raise ValueError(f"client {i}: {k} has shape {tuple(v.shape)}, expected {tuple(acc[k].shape)}.")
            # add_ promotes v to float64 element by element: no float64 copy of the client tensor.
            acc[k].add_(v, alpha=weight)
        total += weight
    if not acc:
        raise ValueError("fedavg got no client states: at least one client must report an update.")
    out = {}
    for k in list(acc):
        mean = acc.pop(k).div_(total)
        # Integer buffers (e.g. BatchNorm's num_batches_tracked) get the rounded weighted mean.
        out[k] = mean.to(dtypes[k]) if dtypes[k].is_floating_point else mean.round_().to(dtypes[k])
    return out


def is_finite_state(state: State) -> bool:
    """True if every floating tensor in a state dict is free of NaN and Inf."""
    return all(torch.isfinite(v).all().item() for v in state.values() if v.is_floating_point())


def apply_gradient(model: torch.nn.Module, grads: State, optimizer: torch.optim.Optimizer) -> None:
    """Server step of FedSGD: set the averaged gradient on the global model and step its optimizer."""
    params = dict(model.named_parameters())
    missing = set(params) - set(grads)
    if missing:
        raise ValueError(f"averaged gradient lacks {sorted(missing)[:5]}: clients trained another model.")
    for name, p in params.items():
        p.grad = grads[name].to(p.device, p.dtype)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
