"""Table 1 of Nagamori & Kiya: the integrated model on encrypted images against the plain baseline.

"Integrated model" is each client's encrypted copy of the FedAvg model (Eq. 3, 8) applied to that
client's test images encrypted with the same key (Eq. 12) — the per-client rows of
`evaluation.encryption_check`; "Baseline" is a centrally trained model on plain images. We add the
integrated model on plain images and the share of test images whose prediction is identical between
the plain and the encrypted path (Eq. 14 says 100%).
"""

from __future__ import annotations

import pandas as pd

DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}

# Table 1 of the paper (ViT-B/16, ImageNet-pretrained, 224x224, 10 clients, 10 rounds).
PAPER_TABLE1 = {
    "CIFAR-10": {"integrated": 0.977, "baseline": 0.978},
    "CIFAR-100": {"integrated": 0.851, "baseline": 0.851},
}

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
