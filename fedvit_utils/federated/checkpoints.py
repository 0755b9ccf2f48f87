"""A training run's folder: lock, resume from the last checkpoint, one checkpoint per step, records.

Federated training (one step = one round) and the centralized baseline (one step = one epoch) share
this skeleton. While training, the run holds the folder's lock (a second run into it is refused).
After every step the checkpoint is written atomically with a checksum (a run killed at any moment
leaves the previous checkpoint or the new one; a damaged one is named, never silently loaded) and the
records — history.csv (one row per step x model x data x scope) and metrics.json (settings, seeds,
summary, and the code, packages and hardware that wrote them: `provenance.environment`) — are rewritten
from it, as they are on every resume, so deleted or torn records come back.
A finished run also writes model.pt, the final weights (checksummed the same way).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import provenance
from ..evaluation import metrics_from_logits
from ..files import RunLock, load_checked, remove_orphans, save_checked, write_json, write_text

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
HISTORY = "history.csv"
METRICS = "metrics.json"
RESTART_HINT = "rerun with --restart (or restart=True) to train this run again from the start, or delete the file"


class NothingTrained(RuntimeError):
    """A run ended without a single successful client update (or training step): there is no model."""


def rng_states() -> dict:
    """Global RNG states of torch, numpy and python, as tensors and lists (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": version, "state": list(state), "gauss": gauss}}


def set_rng_states(states: dict) -> None:
    """Restore what `rng_states` saved."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


class TrainingRun:
    """The output folder of one training loop of `steps` steps; use it as a `with` block (it holds the lock)."""

    def __init__(self, out: str | os.PathLike, settings: dict, steps: int, resume: bool = True) -> None:
        self.out = Path(out)
        self.settings = settings
        self.steps = steps
        self.resume = resume
        self.done = 0  # steps finished
        self.history: list[dict] = []
        self.seconds = 0.0  # training time, summed over steps and resumes
        self.images = 0  # images trained on, summed the same way
        self.updates = 0  # successful client updates (or baseline epochs), summed the same way
        self.summary: dict = {}
        self.model_state: dict | None = None
        self.extra: dict = {}  # loop-specific state (optimizer), saved and restored as given
        self._lock = RunLock(self.out, "train")

    def __enter__(self) -> TrainingRun:
        self._lock.__enter__()  # refuses a folder in use, or one we cannot write, before any training
        try:
            remove_orphans(self.out)
            if self.resume:
                self._load()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)

    def _load(self) -> None:
        path = self.out / CHECKPOINT
        if not path.exists():
            return
        ckpt = load_checked(path, RESTART_HINT)
        if ckpt.get("settings") != self.settings:
            changed = sorted(k for k in self.settings if ckpt.get("settings", {}).get(k) != self.settings[k])
            raise ValueError(
                f"{path} belongs to a run with other settings ({changed}); resume with the same profile, "
                f"or start a new run folder."
            )
        self.done, self.history, self.seconds = ckpt["step"], ckpt["history"], ckpt["seconds"]
        self.images, self.updates, self.summary = ckpt["images"], ckpt["updates"], ckpt["summary"]
        self.model_state, self.extra = ckpt["model"], ckpt["extra"]
        set_rng_states(ckpt["rng"])
        self.write_records()  # a record lost or torn after the last checkpoint comes back from it

    def save(self, model_state: dict, rows: list[dict], seconds: float, images: int, updates: int,
             extra: dict | None = None, summary: dict | None = None) -> None:
        """Record one finished step: its history rows, time, images and updates, then checkpoint and records."""
        self.done += 1
        self.history += rows
        self.seconds += seconds
        self.images += images
        self.updates += updates
        self.extra = extra or {}
        self.summary = summary or {}
        save_checked({"step": self.done, "model": model_state, "history": self.history, "seconds": self.seconds,
                      "images": self.images, "updates": self.updates, "summary": self.summary, "extra": self.extra,
                      "rng": rng_states(), "settings": self.settings}, self.out / CHECKPOINT)
        self.write_records()

    def write_records(self) -> None:
        """history.csv and metrics.json from what the run holds (atomically)."""
        write_text(self.out / HISTORY, pd.DataFrame(self.history).to_csv(index=False))
        write_json(self.out / METRICS, {"settings": self.settings, "steps_done": self.done, "steps": self.steps,
                                        "train_seconds": self.seconds, "client_updates": self.updates,
                                        "train_images_per_s": self.images / self.seconds if self.seconds else None,
                                        **self.summary, "history": self.history,
                                        "provenance": provenance.environment()})

    def finish(self, model_state: dict) -> None:
        """Write the final weights once every step is done; a run that trained nothing raises instead."""
        if self.done < self.steps:
            return
        if self.updates == 0:
            raise NothingTrained(
                f"{self.out}: {self.done} steps ran but no client update succeeded in any of them (see the "
                f"warnings above), so there is no trained model; fix the cause and rerun with --restart."
            )
        save_checked(model_state, self.out / MODEL)


def evaluation_rows(logits: torch.Tensor, labels: torch.Tensor, client_test: list[torch.Tensor], **fields
                    ) -> list[dict]:
    """History rows of one model on the test images: all of them (scope "all"), and each client's split."""
    rows = [dict(fields, data="test", scope="all", client=None, **metrics_from_logits(logits, labels))]
    for c, idx in enumerate(client_test):
        metrics = metrics_from_logits(logits[idx], labels[idx])
        rows.append(dict(fields, data="test", scope="client", client=c, **metrics))
    return rows


def union_row(client_rows: list[dict], **fields) -> dict:
    """One scope-"all" row from per-client test rows: accuracy and loss weighted by each client's n.

    It covers the union of the clients' own test splits: what a federation can score without any party
    seeing all test images (the Flower app); `evaluation_rows` scores every loaded test image instead.
    """
    n = sum(int(r["n"]) for r in client_rows)
    if n == 0:
        return dict(fields, data="test", scope="all", client=None, accuracy=float("nan"), loss=float("nan"), n=0)
    accuracy = sum(float(r["accuracy"]) * int(r["n"]) for r in client_rows) / n
    loss = sum(float(r["loss"]) * int(r["n"]) for r in client_rows) / n
    return dict(fields, data="test", scope="all", client=None, accuracy=accuracy, loss=loss, n=n)


def load_history(out: str | os.PathLike) -> pd.DataFrame:
    """The history.csv of a training run (`client` as a nullable integer column)."""
    path = Path(out) / HISTORY
    if not path.exists():
        hint = ("rerun the training (notebook 02 or `python -m fedvit_utils train`): it rebuilds the records "
                "from the checkpoint") if (Path(out) / CHECKPOINT).exists() else \
            "run the training notebook (02) or `python -m fedvit_utils train` first"
        raise FileNotFoundError(f"no {path}: {hint}.")
    return pd.read_csv(path, dtype={"client": "Int64"})


def load_model_state(out: str | os.PathLike) -> dict:
    """The final weights of a finished training run (checksum verified)."""
    path = Path(out) / MODEL
    if not path.exists():
        raise FileNotFoundError(f"no {path}: finish training first (notebook 02 or `python -m fedvit_utils train`).")
    return load_checked(path, "delete it and rerun the training: the last checkpoint rebuilds it")

