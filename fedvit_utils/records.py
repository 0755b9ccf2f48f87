"""Run records: atomic checkpoints, per-round metrics as CSV and JSON, and loading them back.

A checkpoint is written to a temporary file and renamed over the old one, so a run killed at any
moment leaves either the previous or the new checkpoint, never a torn one: finished rounds are
never lost.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .evaluation import metrics_from_logits
from .paths import atomic_write


def save_atomic(obj: object, path: str | os.PathLike) -> Path:
    """torch.save to a temp file in the same folder, then rename over `path`."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def rng_states() -> dict:
    """Global RNG states of torch, numpy and python (saved with every checkpoint)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_states(states: dict) -> None:
    """Restore what `rng_states` saved."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def load_checkpoint(path: str | os.PathLike, expect: dict) -> dict | None:
    """The checkpoint at `path` if any; refuses one written with other settings (`expect`)."""
    path = Path(path)
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("settings") != expect:
        changed = sorted(k for k in expect if ckpt.get("settings", {}).get(k) != expect[k])
        raise ValueError(
            f"{path} belongs to a run with other settings ({changed}); resume with the same profile, "
            f"or start a new run folder."
        )
    return ckpt


def client_rows(logits: torch.Tensor, labels: torch.Tensor, client_test: list[np.ndarray], **fields) -> list[dict]:
    """Metrics on each client's test split and on the whole test set, from one set of logits."""
    rows = [dict(fields, client="all", **metrics_from_logits(logits, labels))]
    for c, idx in enumerate(client_test):
        i = torch.as_tensor(idx, dtype=torch.long)
        rows.append(dict(fields, client=c, **metrics_from_logits(logits[i], labels[i])))
    return rows


def write_history(out: str | os.PathLike, history: list[dict], summary: dict) -> None:
    """history.csv (one row per round x model x client) and metrics.json (settings, seeds, summary)."""
    out = Path(out)
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)
    (out / "metrics.json").write_text(json.dumps({**summary, "history": history}, indent=1, default=str))


def load_history(out: str | os.PathLike) -> pd.DataFrame:
    """The history.csv a run wrote."""
    path = Path(out) / "history.csv"
    if not path.exists():
        raise FileNotFoundError(f"no {path}: run the training notebook (02) or `python -m fedvit_utils train` first.")
    return pd.read_csv(path)
