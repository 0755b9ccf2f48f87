"""Predictions and accuracy, with an optional transform (e.g. image encryption) after preprocessing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .training import autocast, to_device


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Disable TF32 for matmuls and convolutions inside the block (restored afterwards).

    On Ampere and newer GPUs cuDNN convolutions default to TF32 (10-bit mantissa): the patch embedding
    would then differ by ~1e-3 between plain and encrypted inputs, and Eq. (14) could not be checked.
    """
    precision = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    preprocess: nn.Module,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    exact: bool = False,
) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 images: preprocess, then `transform` (e.g. EncryptImages), then model.

    `exact=True` turns autocast and TF32 off, so comparisons such as plain vs encrypted are made in
    full float32.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    preprocess = preprocess.to(device)
    out = []
    with full_float32() if exact else autocast(device):
        for start in range(0, len(images), batch_size):
            x = preprocess(to_device(images[start : start + batch_size], device))
            if transform is not None:
                x = transform(x)
            out.append(model(x).float().cpu())
    if not out:
        return torch.empty(0)
    return torch.cat(out)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, mean cross-entropy and count."""
    if len(labels) == 0:
        return {"accuracy": float("nan"), "loss": float("nan"), "n": 0}
    return {
        "accuracy": (logits.argmax(1) == labels).float().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
        "n": len(labels),
    }


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    preprocess: nn.Module,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Accuracy and loss of `model` on uint8 `images` (optionally transformed after preprocessing)."""
    return metrics_from_logits(predict(model, images, preprocess, batch_size, device, transform), labels)
