"""Figures of training runs: accuracy per round for FedAvg and the centralized baseline.

Every function takes data and returns a `matplotlib.figure.Figure` (no pyplot state), so notebooks
display it and save it, and tests can inspect it.
"""

from __future__ import annotations

import textwrap

import pandas as pd
from matplotlib.figure import Figure


def accuracy_curves(federated: pd.DataFrame, centralized: pd.DataFrame | None, title: str = "") -> Figure:
    """Test accuracy per round: integrated (global) model, the clients' spread, and the baseline per epoch."""
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    glob = federated[(federated["model"] == "global") & (federated["client"].astype(str) == "all")]
    per_client = federated[(federated["model"] == "global") & (federated["client"].astype(str) != "all")]
    if not per_client.empty:
        spread = per_client.groupby("round")["accuracy"].agg(["min", "max"])
        ax.fill_between(spread.index, spread["min"], spread["max"], alpha=0.2, color="C0",
                        label="integrated model, min-max over clients' test splits")
    ax.plot(glob["round"], glob["accuracy"], "o-", color="C0", label="integrated model (FedAvg), full test set")
    local = federated[federated["model"] == "local"]
    if not local.empty:
        mean_local = local.groupby("round")["accuracy"].mean()
        ax.plot(mean_local.index, mean_local.values, "s--", color="C2", alpha=0.8,
                label="clients' local models, mean on own test split")
    if centralized is not None and not centralized.empty:
        base = centralized[(centralized["model"] == "centralized") & (centralized["client"].astype(str) == "all")]
        ax.plot(base["round"], base["accuracy"], "^-", color="C1", label="baseline (centralized), per epoch")
    ax.set_xlabel("round (= epoch over each client's data)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(textwrap.fill(title, 95), fontsize=8)  # labels name profile, data and hardware: long
    return fig
