"""The local training loop shared by federated clients and the centralized baseline.

Paper defaults (Sec. 4.1): SGD, lr 1e-3, momentum 0.9, batch 8, cross-entropy. Batches are tensor
indices into in-memory uint8 images; preprocessing runs on the training device. On CUDA: bf16
autocast, channels_last, pinned host batches and non-blocking copies. On CPU everything runs in
float32 so that runs are bit-for-bit repeatable.
"""

from __future__ import annotations

import contextlib
import hashlib

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import ImageData


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU; anything else is passed to torch.device."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (half the memory traffic, same range as fp32); a no-op elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple (e.g. training_seed, round, client): stable across runs and resumes."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move the model to the device; channels_last on CUDA helps the patch-embedding convolution."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float = 0.0) -> torch.optim.SGD:
    """SGD as in the paper (lr 1e-3, momentum 0.9 by default)."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host batch to the device; pinned and non-blocking on CUDA so the copy overlaps compute."""
    if device.type == "cuda":
        return images.pin_memory().to(device, non_blocking=True)
    return images.to(device)


def train_epoch(
    model: nn.Module,
    data: ImageData,
    preprocess: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "batches",
) -> dict[str, float]:
    """One pass over `data` in a seeded random order; returns mean loss, accuracy and example count."""
    model.train()
    n = len(data)
    if n == 0:
        raise ValueError("cannot train on an empty dataset: this client holds no images.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)  # dropout / drop-path draws, if the model has any
    # Sums stay on the device: a .item() per batch would stall a GPU pipeline at every step.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        x = preprocess(to_device(data.images[idx], device))
        y = to_device(data.labels[idx], device)
        with autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
    mean_loss = loss_sum.item() / n
    if not torch.isfinite(torch.tensor(mean_loss)):
        # A diverged client: the server leaves its update out of the average.
        raise FloatingPointError(f"training loss became {mean_loss} over {n} examples")
    return {"loss": mean_loss, "accuracy": correct.item() / n, "n": n}


def epoch_gradient(
    model: nn.Module,
    data: ImageData,
    preprocess: nn.Module,
    batch_size: int,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Mean gradient of the loss over all of `data` at the current weights (a FedSGD client step)."""
    model.train()
    model.zero_grad(set_to_none=True)
    n = len(data)
    loss_sum = 0.0
    for start in range(0, n, batch_size):
        x = preprocess(to_device(data.images[start : start + batch_size], device))
        y = to_device(data.labels[start : start + batch_size], device)
        with autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        (loss / n).backward()
        loss_sum += loss.item()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return grads, {"loss": loss_sum / n, "n": n}
