"""The server's arithmetic: the example-weighted mean of client updates (McMahan et al. 2017, the paper's [5]).

FedAvg: the server's new weights are the clients' weights averaged with weights n_k / n, n_k being
client k's number of training examples. FedSGD: the same average over the clients' gradients, followed
by one server SGD step (`strategies` says which a run uses and applies the mean). The average folds
clients in one at a time (an iterator is enough), in float64, so 10 ViT-B/16 updates need no more
memory than 2: the float64 accumulator (2 float32 copies) plus the float32 result, each key released
as soon as it is converted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

StateMapping = Mapping[str, torch.Tensor]  # any state dict, read only


class NoClientUpdates(ValueError):
    """A round ended without a single usable client update (every client failed or none took part)."""


class FedAvg:
    """Running example-weighted mean of state dicts: `add` one client at a time, then `result`.

    Accumulates in float64 so the order of clients does not matter to float32 precision, and holds
    one float64 accumulator whatever the number of clients (updates are folded in as they arrive).
    """

    def __init__(self) -> None:
        self._acc: dict[str, torch.Tensor] = {}
        self._dtypes: dict[str, torch.dtype] = {}
        self._total = 0.0
        self.count = 0

    def add(self, state: StateMapping, weight: float) -> None:
        """Fold in one client's state with its weight (its number of training examples)."""
        i = self.count
        weight = float(weight)
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"client {i} has weight {weight}; weights are example counts and must be > 0.")
        if not self._acc:
            self._dtypes = {k: v.dtype for k, v in state.items()}
            self._acc = {k: torch.zeros(v.shape, dtype=torch.float64, device=v.device) for k, v in state.items()}
        elif state.keys() != self._acc.keys():
            diff = sorted(set(state) ^ set(self._acc))[:5]
            raise ValueError(f"client {i}'s state has different keys ({diff}...): all clients must share one model.")
        for k, v in state.items():
            if v.shape != self._acc[k].shape:
                raise ValueError(f"client {i}: {k} has shape {tuple(v.shape)}, expected {tuple(self._acc[k].shape)}.")
            # add_ promotes v to float64 element by element: no float64 copy of the client tensor.
            self._acc[k].add_(v, alpha=weight)
        self._total += weight
        self.count += 1

    def result(self) -> dict[str, torch.Tensor]:
        """The weighted mean, in each entry's own dtype (frees the accumulator)."""
        if not self._acc:
            raise NoClientUpdates("fedavg got no client states: at least one client must report an update.")
        out = {}
        for k in list(self._acc):
            mean = self._acc.pop(k).div_(self._total)
            # Integer buffers (e.g. BatchNorm's num_batches_tracked) get the rounded weighted mean.
            dtype = self._dtypes[k]
            out[k] = mean.to(dtype) if dtype.is_floating_point else mean.round_().to(dtype)
        return out


def fedavg(states: Iterable[StateMapping] | Iterable[tuple[StateMapping, float]],
           weights: Iterable[float] | None = None) -> dict:
    """Example-weighted mean of state dicts; `states` may be an iterator of (state, weight) pairs."""
    pairs = iter(states) if weights is None else zip(states, weights, strict=True)
    mean = FedAvg()
    for pair in pairs:
        try:
            state, weight = pair
        except (TypeError, ValueError):
            raise TypeError("without `weights`, pass (state_dict, num_examples) pairs") from None
        mean.add(state, weight)
    return mean.result()


def is_finite_state(state: StateMapping) -> bool:
    """True if every floating tensor in a state dict is free of NaN and Inf."""
    return all(torch.isfinite(v).all().item() for v in state.values() if v.is_floating_point())
