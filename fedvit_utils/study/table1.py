"""Table 1 of Nagamori & Kiya: the integrated model on encrypted images against the plain baseline.

"Integrated model" is each client's encrypted copy of the FedAvg model (Eq. 3, 8) applied to that
client's test images encrypted with the same key (Eq. 12) — the per-client rows of
`evaluation.verify_encryption`; "Baseline" is a centrally trained model on plain images. We add the
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


def spread_table(runs: list[dict]) -> pd.DataFrame:
    """Table 1 over several runs (other seeds): mean and standard deviation per dataset and column.

    `runs` holds, per run folder, its Table 1 record (table1.json) under "table1" and, per dataset,
    its per-client Eq. (14) check (encryption_check.json) under "checks". The standard deviation is the
    sample one (ddof=1) over runs; with one run it is undefined (NaN).
    """
    rows = []
    names = [r["dataset"] for r in runs[0]["table1"]["rows"] if r.get("status") == "run"]
    for name in names:
        cells = [next(r for r in run["table1"]["rows"] if r["dataset"] == name) for run in runs]
        dataset = next(k for k, v in DATASET_NAMES.items() if v == name)
        clients = [c for run in runs for c in run["checks"][dataset]["clients"]]
        identical = sum(round(c["identical_predictions"] * c["n_test"]) for c in clients)
        total = sum(c["n_test"] for c in clients)
        row = {"dataset": name, "runs": len(runs)}
        for column in ("integrated_model_encrypted", "integrated_model_plain", "baseline"):
            values = pd.Series([c[column] for c in cells], dtype=float)
            row[f"{column}_mean"] = values.mean()
            row[f"{column}_std"] = values.std(ddof=1)  # NaN for a single run
        row.update(identical_predictions=f"{identical} of {total}", max_abs_logit_diff=max(
            c["max_abs_logit_diff"] for c in clients), training_key_seeds=", ".join(
            f"{run['table1']['training_seed']}/{run['checks'][dataset]['key_seed']}" for run in runs),
            paper_integrated=PAPER_TABLE1[name]["integrated"], paper_baseline=PAPER_TABLE1[name]["baseline"])
        rows.append(row)
    return pd.DataFrame(rows)
