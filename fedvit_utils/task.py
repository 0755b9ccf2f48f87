"""What every role needs: the data, the clients' splits and the model, built from a profile.

Clients each hold `train_per_client` training and `test_per_client` test images (the paper: 5,000 +
1,000 of CIFAR), partitioned with `partition_seed`; the model is initialised from `training_seed`.
The partition is written to the run folder so later notebooks (and resumed runs) reuse it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import partition as part
from .data import ImageData, load_dataset
from .models import create_vit
from .profiles import Profile
from .training import derive_seed, resolve_device


@dataclass
class Task:
    """One dataset of one profile: data in memory, client index splits, device."""

    profile: Profile
    dataset: str
    train: ImageData
    test: ImageData
    client_train: list[np.ndarray]
    client_test: list[np.ndarray]
    device: torch.device
    out_dir: Path

    @property
    def num_classes(self) -> int:
        """Number of classes of the dataset."""
        return len(self.train.classes)

    def seeds(self) -> dict[str, int]:
        """The seeds recorded with every result (key seeds are recorded by fingerprint only)."""
        return {"partition_seed": self.profile.partition_seed, "training_seed": self.profile.training_seed}


def load_task(profile: Profile, dataset: str, run_dir: str | os.PathLike, data_root=None) -> Task:
    """Load `dataset`, partition it among the profile's clients, and record the partition in the run folder."""
    p = profile
    train = load_dataset(dataset, "train", data_root, p.max_per_class, p.download)
    test = load_dataset(dataset, "test", data_root, p.max_per_class, p.download)
    out = Path(run_dir) / dataset
    out.mkdir(parents=True, exist_ok=True)
    path = out / "partition.json"
    settings = dict(scheme=p.partition_scheme, num_clients=p.num_clients, train_per_client=p.train_per_client,
                    test_per_client=p.test_per_client, alpha=p.dirichlet_alpha, partition_seed=p.partition_seed,
                    max_per_class=p.max_per_class, data=train.source)
    if path.exists():
        splits, meta = part.load_partition(path)
        if meta != json.loads(json.dumps(settings)):
            raise ValueError(f"{path} was made with other settings {meta}; use a new run folder for {settings}.")
    else:
        train_split = part.partition(train.labels.numpy(), p.num_clients, p.partition_scheme, p.train_per_client,
                                     p.dirichlet_alpha, p.partition_seed)
        # The test split has its own seed stream so changing test sizes never reshuffles training data.
        test_seed = derive_seed(p.partition_seed, "test") % 2**32
        if p.partition_scheme == "iid":
            test_split = part.partition(test.labels.numpy(), p.num_clients, "iid", p.test_per_client, seed=test_seed)
        else:  # non-IID: each client's test images follow its own class mix
            mix = part.class_counts(train_split, train.labels.numpy(), len(train.classes))
            test_split = part.partition_like(test.labels.numpy(), mix, p.test_per_client, test_seed)
        splits = {"train": train_split, "test": test_split}
        part.save_partition(path, splits, {"train": train.labels.numpy(), "test": test.labels.numpy()},
                            len(train.classes), **settings)
    return Task(p, dataset, train, test, splits["train"], splits["test"], resolve_device(p.device), out)


def build_model(profile: Profile, num_classes: int) -> nn.Module:
    """The profile's ViT, initialised from `training_seed` (pretrained weights where the profile asks)."""
    torch.manual_seed(profile.training_seed)
    return create_vit(profile.model, num_classes, pretrained=profile.pretrained,
                      checkpoint_path=profile.checkpoint_path, **profile.model_kwargs)
