"""Table 1 of Nagamori & Kiya: the integrated model on encrypted images against the plain baseline.

"Integrated model" is each client's encrypted copy of the FedAvg model (Eq. 3, 8) applied to that
client's test images encrypted with the same key (Eq. 12); "Baseline" is a centrally trained model on
plain images. We add the integrated model on plain images and the share of test images whose
prediction is identical between the plain and the encrypted path (Eq. 14 says 100%).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .encryption import EncryptImages, encrypt_model
from .keys import SecretKey

# Table 1 of the paper (ViT-B/16, ImageNet-pretrained, 224x224, 10 clients, 10 rounds).
PAPER_TABLE1 = {
    "CIFAR-10": {"integrated": 0.977, "baseline": 0.978},
    "CIFAR-100": {"integrated": 0.851, "baseline": 0.851},
}

Predict = Callable[..., torch.Tensor]  # (model, uint8 images, transform=None) -> logits


def per_client_encrypted_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    client_indices: Sequence[np.ndarray],
    keys: Sequence[SecretKey],
    predict: Predict,
) -> pd.DataFrame:
    """One row per client: accuracy of its encrypted model on its encrypted test images, and of the plain path."""
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
                "acc_encrypted": (enc.argmax(1) == y).float().mean().item(),
                "acc_plain": (plain.argmax(1) == y).float().mean().item(),
                "identical_predictions": (enc.argmax(1) == plain.argmax(1)).float().mean().item(),
                "max_abs_logit_diff": (enc - plain).abs().max().item(),
                "key_kind": key.kind,
                "key_fingerprint": key.fingerprint,
            }
        )
    return pd.DataFrame(rows)


def table1_row(dataset: str, clients: pd.DataFrame, baseline_accuracy: float) -> dict:
    """Aggregate per-client results into one Table 1 row (test-image-weighted means)."""
    n = clients["n_test"]
    paper = PAPER_TABLE1.get(dataset, {})

    def weighted(col: str) -> float:
        return float((clients[col] * n).sum() / n.sum())

    return {
        "dataset": dataset,
        "integrated_model_encrypted": weighted("acc_encrypted"),
        "integrated_model_plain": weighted("acc_plain"),
        "baseline": baseline_accuracy,
        "identical_predictions": weighted("identical_predictions"),
        "max_abs_logit_diff": float(clients["max_abs_logit_diff"].max()),
        "n_test": int(n.sum()),
        "paper_integrated": paper.get("integrated"),
        "paper_baseline": paper.get("baseline"),
        "status": "run",
    }


def not_run_row(dataset: str, reason: str) -> dict:
    """A Table 1 row for a dataset this run did not cover, with the paper's numbers beside it."""
    paper = PAPER_TABLE1.get(dataset, {})
    return {
        "dataset": dataset,
        "paper_integrated": paper.get("integrated"),
        "paper_baseline": paper.get("baseline"),
        "status": f"not run here: {reason}",
    }


def to_markdown(table: pd.DataFrame, caption: str) -> str:
    """Render Table 1 as GitHub Markdown with a caption line (no extra dependency)."""

    def fmt(v: object) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "—"
        if isinstance(v, float) and v.is_integer() and abs(v) >= 2:  # counts (n_test) stay integers
            return str(int(v))
        if isinstance(v, float):
            return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.3f}"
        return str(v)

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return f"{caption}\n\n" + "\n".join(lines) + "\n"


def save_table(table: pd.DataFrame, folder: str | Path, name: str, caption: str) -> tuple[Path, Path]:
    """Write `name`.csv and `name`.md into `folder`; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv, md = folder / f"{name}.csv", folder / f"{name}.md"
    table.to_csv(csv, index=False)
    md.write_text(to_markdown(table, caption))
    return csv, md
