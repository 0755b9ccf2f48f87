"""Predictions and accuracy, and the per-client check of the paper's central claim (Eq. 14).

`predict` runs uint8 images through the model's preprocessing, then an optional transform (image
encryption comes here, after normalization), then the model. `verify_encryption` is step 3 of the
paper's Fig. 1 for every client: its encrypted copy of the integrated model (Eq. 3, 8) on its own
test images encrypted with the same key (Eq. 12), against the plain model on plain images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .devices import autocast, full_float32, to_device
from .encryption import EncryptImages
from .keys import SecretKey
from .model_encryption import encrypt_model

Transform = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 256,
    device: torch.device | str | None = None,
    transform: Transform | None = None,
    exact: bool = False,
) -> torch.Tensor:
    """Logits (float32, CPU): preprocess each batch, then `transform` (e.g. EncryptImages), then the model.

    `exact=True` turns autocast and TF32 off, so comparisons such as plain vs encrypted are made in
    full float32.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    if isinstance(preprocess, nn.Module):
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
        "accuracy": accuracy(logits, labels),
        "loss": F.cross_entropy(logits, labels).item(),
        "n": len(labels),
    }


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of logits (n, classes) against labels (n,)."""
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} predictions but {len(labels)} labels.")
    return (logits.argmax(-1).cpu() == labels.cpu()).float().mean().item()


Predict = Callable[..., torch.Tensor]  # (model, uint8 images, transform=None) -> logits


def exact_predictor(preprocess: Callable, batch_size: int, device: torch.device) -> Predict:
    """`predict` in full float32 with fixed preprocessing, batch size and device."""

    def run(model: nn.Module, images: torch.Tensor, transform: Transform | None = None) -> torch.Tensor:
        return predict(model, images, preprocess, batch_size, device, transform, exact=True)

    return run


def verify_encryption(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    client_indices: Sequence[np.ndarray],
    keys: Sequence[SecretKey],
    predict: Predict,
) -> pd.DataFrame:
    """One row per client: its encrypted model on its encrypted test images against the plain path (Eq. 14)."""
    if len(keys) != len(client_indices):
        raise ValueError(f"{len(keys)} keys for {len(client_indices)} clients: make one key per client.")
    rows = []
    for client, (idx, key) in enumerate(zip(client_indices, keys, strict=True)):
        idx_t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        x, y = images[idx_t], labels[idx_t]
        plain = predict(model, x)
        enc = predict(encrypt_model(model, key), x, transform=EncryptImages(key))
        rows.append(
            {
                "client": client,
                "n_test": len(idx_t),
                "acc_encrypted": accuracy(enc, y),
                "acc_plain": accuracy(plain, y),
                "identical_predictions": (enc.argmax(1) == plain.argmax(1)).float().mean().item(),
                "max_abs_logit_diff": (enc - plain).abs().max().item(),
                "key_kind": key.kind,
                "key_fingerprint": key.fingerprint,
            }
        )
    return pd.DataFrame(rows)
