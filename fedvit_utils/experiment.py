"""The study's steps as functions, so that notebooks only call, show and save.

Step 3 of the paper's Fig. 1: after the last integration, every client draws an independent key,
encrypts the integrated model (Eq. 3, 8) and its own test images (Eq. 12), and checks that the
predictions are those of the plain model (Eq. 14). Keys go to the run folder's owner-only keys/
folder (git-ignored); only fingerprints are ever shown or recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from torch import nn

from . import paths
from .data import Preprocess
from .evaluation import metrics_from_logits, predict
from .keys import SecretKey, client_keys
from .models import input_size, patch_size
from .profiles import Profile, load_profile
from .tables import per_client_encrypted_accuracy
from .task import Task, load_task

DATA_NOTE = "CIFAR-10 lossy JPEG copy (q75), not the original"


def study_profile(profile: str, partition_seed: int, training_seed: int, key_seed: int) -> Profile:
    """The named profile with the notebook's seeds (one seed per concern)."""
    return load_profile(profile, partition_seed=partition_seed, training_seed=training_seed, key_seed=key_seed)


@dataclass
class Study:
    """What every study notebook starts from: settings, run folder, figures folder, tasks, hardware."""

    cfg: Profile
    run: Path
    figures: Path
    tasks: list[Task]
    hardware: str


def setup(profile: str, run_dir, data_root, partition_seed: int, training_seed: int, key_seed: int) -> Study:
    """Resolve a notebook's parameters into a Study (data loaded, partition recorded)."""
    from .study import hardware

    cfg = study_profile(profile, partition_seed, training_seed, key_seed)
    run = paths.run_dir(profile, run_dir)
    return Study(cfg, run, paths.run_figures(run), tasks(cfg, run, data_root), hardware())


def tasks(profile: Profile, run: Path, data_root=None) -> list[Task]:
    """One Task per dataset of the profile (data loaded, partition recorded in the run folder)."""
    return [load_task(profile, name, run, data_root) for name in profile.datasets]


def data_label(task: Task) -> str:
    """What the data is, for figure and table labels (the offline copy says it is lossy)."""
    return DATA_NOTE if "ImageFolder" in task.train.source and task.dataset == "cifar10" else task.train.source


def run_label(profile: Profile, task: Task, hardware: str) -> str:
    """One line naming profile, data and hardware, for every figure and table."""
    return f"profile {profile.name} · {task.dataset} ({data_label(task)}) · {hardware}"


def keys_for_clients(task: Task, model: nn.Module) -> list[SecretKey]:
    """Each client's key for this run: loaded from the run's keys/ folder, or drawn and saved there."""
    p = task.profile
    folder = paths.keys_dir(task.out_dir.parent, task.dataset)
    files = [folder / f"client_{c:02d}.key" for c in range(p.num_clients)]
    if all(f.exists() for f in files):
        keys = [SecretKey.load(f) for f in files]
        if keys[0].kind == p.key_kind and keys[0].image_size == input_size(model):
            return keys
    keys = client_keys(p.num_clients, input_size(model), patch_size(model), 3, p.key_kind, p.key_seed)
    for key, f in zip(keys, files, strict=True):
        key.save(f)
    return keys


def exact_predictor(task: Task, model: nn.Module):
    """predict(model, uint8 images, transform=None) in float32 on the task's device."""
    preprocess = Preprocess.for_model(model)

    def run(m: nn.Module, images, transform=None):
        return predict(m, images, preprocess, task.profile.eval_batch_size, task.device, transform, exact=True)

    return run


def encryption_check(task: Task, model: nn.Module, keys: list[SecretKey]) -> pd.DataFrame:
    """Per client: its encrypted integrated model on its encrypted test images vs the plain path."""
    return per_client_encrypted_accuracy(model, task.test.images, task.test.labels, task.client_test, keys,
                                         exact_predictor(task, model))


def baseline_accuracy(task: Task, baseline: nn.Module) -> float:
    """Accuracy of the centralized model on plain images of all clients' test splits."""
    import numpy as np

    idx = np.sort(np.concatenate(task.client_test))
    logits = exact_predictor(task, baseline)(baseline, task.test.images[idx])
    return metrics_from_logits(logits, task.test.labels[idx])["accuracy"]


def write_json(path: Path, doc: dict) -> Path:
    """Write a results JSON (results pass between notebooks as files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str))
    return path
