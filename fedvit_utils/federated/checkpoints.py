"""A training run's folder: resume from the last checkpoint, one checkpoint per step, history records.

Federated training (one step = one round) and the centralized baseline (one step = one epoch) share
this skeleton. After every step the checkpoint is written atomically (a run killed at any moment
leaves the previous checkpoint or the new one, never a torn one) and the records — history.csv (one
row per step x model x data x scope) and metrics.json (settings, seeds, summary) — are rewritten from
it. A finished run also writes model.pt, the final weights.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..evaluation import metrics_from_logits
from ..files import save_torch, write_json, write_text

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
HISTORY = "history.csv"
METRICS = "metrics.json"


def rng_states() -> dict:
    """Global RNG states of torch, numpy and python (saved with every checkpoint)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_states(states: dict) -> None:
    """Restore what `rng_states` saved."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


class TrainingRun:
    """The output folder of one training loop of `steps` steps, resumed from its checkpoint if asked."""

    def __init__(self, out: str | os.PathLike, settings: dict, steps: int, resume: bool = True) -> None:
        self.out = Path(out)
        self.settings = settings
        self.steps = steps
        self.done = 0  # steps finished
        self.history: list[dict] = []
        self.seconds = 0.0  # training time, summed over steps and resumes
        self.images = 0  # images trained on, summed the same way
        self.model_state: dict | None = None
        self.extra: dict = {}  # loop-specific state (optimizer), saved and restored as given
        if resume:
            self._resume()

    def _resume(self) -> None:
        path = self.out / CHECKPOINT
        if not path.exists():
            return
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if ckpt.get("settings") != self.settings:
            changed = sorted(k for k in self.settings if ckpt.get("settings", {}).get(k) != self.settings[k])
            raise ValueError(
                f"{path} belongs to a run with other settings ({changed}); resume with the same profile, "
                f"or start a new run folder."
            )
        self.done, self.history, self.seconds = ckpt["step"], ckpt["history"], ckpt["seconds"]
        self.images, self.model_state, self.extra = ckpt["images"], ckpt["model"], ckpt["extra"]
        set_rng_states(ckpt["rng"])

    def save(self, model_state: dict, rows: list[dict], seconds: float, images: int, extra: dict | None = None,
             summary: dict | None = None) -> None:
        """Record one finished step: its history rows, time and images, then checkpoint and records."""
        self.done += 1
        self.history += rows
        self.seconds += seconds
        self.images += images
        self.extra = extra or {}
        save_torch({"step": self.done, "model": model_state, "history": self.history, "seconds": self.seconds,
                    "images": self.images, "extra": self.extra, "rng": rng_states(), "settings": self.settings},
                   self.out / CHECKPOINT)
        self.write_records(summary or {})

    def write_records(self, summary: dict) -> None:
        """history.csv and metrics.json from what the run holds."""
        write_text(self.out / HISTORY, pd.DataFrame(self.history).to_csv(index=False))
        write_json(self.out / METRICS, {"settings": self.settings, "steps_done": self.done, "steps": self.steps,
                                        "train_seconds": self.seconds,
                                        "train_images_per_s": self.images / self.seconds if self.seconds else None,
                                        **summary, "history": self.history})

    def finish(self, model_state: dict) -> None:
        """Write the final weights once every step is done."""
        if self.done == self.steps:
            save_torch(model_state, self.out / MODEL)


def evaluation_rows(logits: torch.Tensor, labels: torch.Tensor, client_test: list[torch.Tensor], **fields
                    ) -> list[dict]:
    """History rows of one model on the test images: all of them (scope "all"), and each client's split."""
    rows = [dict(fields, data="test", scope="all", client=None, **metrics_from_logits(logits, labels))]
    for c, idx in enumerate(client_test):
        metrics = metrics_from_logits(logits[idx], labels[idx])
        rows.append(dict(fields, data="test", scope="client", client=c, **metrics))
    return rows


def load_history(out: str | os.PathLike) -> pd.DataFrame:
    """The history.csv of a training run (`client` as a nullable integer column)."""
    path = Path(out) / HISTORY
    if not path.exists():
        raise FileNotFoundError(f"no {path}: run the training notebook (02) or `python -m fedvit_utils train` first.")
    return pd.read_csv(path, dtype={"client": "Int64"})


def load_model_state(out: str | os.PathLike) -> dict:
    """The final weights of a finished training run."""
    path = Path(out) / MODEL
    if not path.exists():
        raise FileNotFoundError(f"no {path}: finish training first (notebook 02 or `python -m fedvit_utils train`).")
    return torch.load(path, map_location="cpu", weights_only=True)
