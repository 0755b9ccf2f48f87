"""Named experiment settings shared by the notebooks and the command line.

``paper`` is exactly Sec. 4.1 of Nagamori & Kiya: ImageNet-pretrained ViT-B/16, CIFAR images resized
32 -> 224, 10 clients x (5,000 train + 1,000 test), SGD lr 1e-3, momentum 0.9, batch 8, cross-entropy,
one local epoch per round, 10 rounds (needs a GPU and internet). ``cpu`` keeps the paper's partition
and optimizer but trains a small ViT from scratch on native 32x32 images so it fits a 2-core CPU.
``quick`` is the study's default (minutes), ``smoke`` is for tests (seconds).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SMALL_VIT = dict(img_size=32, patch_size=8, embed_dim=192, depth=6, num_heads=3)


@dataclass
class Profile:
    """Every setting of one federated run plus its baseline; seeds are one per concern."""

    name: str
    datasets: list[str] = field(default_factory=lambda: ["cifar10"])
    model: str = "vit_tiny_patch16_224"
    model_kwargs: dict = field(default_factory=lambda: dict(SMALL_VIT))
    pretrained: bool = False
    checkpoint_path: str | None = None  # local pretrained weights (offline)
    num_clients: int = 10
    train_per_client: int = 5000
    test_per_client: int = 1000
    partition_scheme: str = "iid"  # "iid" | "dirichlet"
    dirichlet_alpha: float | None = None
    max_per_class: int | None = None  # load only this many images per class (fast subsets)
    rounds: int = 10
    local_epochs: int = 1
    clients_per_round: int | None = None  # None: every client, every round
    aggregation: str = "fedavg"  # "fedavg" | "fedsgd"
    batch_size: int = 8
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    eval_batch_size: int = 256
    eval_local: bool = True  # also score each client's local model on its own test split
    device: str = "auto"
    download: bool = False  # let torchvision download CIFAR (needs internet)
    partition_seed: int = 0
    training_seed: int = 0
    key_seed: int = 0  # demo keys only: a published seed makes a public key
    key_kind: str = "orthogonal"

    def __post_init__(self) -> None:
        if self.aggregation not in ("fedavg", "fedsgd"):
            raise ValueError(f"aggregation must be 'fedavg' or 'fedsgd', not {self.aggregation!r}.")
        if self.clients_per_round is not None and not 1 <= self.clients_per_round <= self.num_clients:
            raise ValueError(f"clients_per_round={self.clients_per_round} must be in 1..{self.num_clients}.")
        if isinstance(self.datasets, str):
            self.datasets = [self.datasets]

    @property
    def total_epochs(self) -> int:
        """Epochs over each client's data: the centralized baseline trains this many."""
        return self.rounds * self.local_epochs

    def to_dict(self) -> dict:
        """Plain dict for JSON records."""
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        model_kwargs=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
        train_per_client=20, test_per_client=10, max_per_class=20, rounds=2, batch_size=8, lr=1e-2,
        eval_batch_size=100,
    ),
    "quick": Profile(name="quick", train_per_client=1000, test_per_client=200, max_per_class=1000, rounds=5),
    "cpu": Profile(name="cpu", model_kwargs=dict(SMALL_VIT)),
    "paper": Profile(
        name="paper", datasets=["cifar10", "cifar100"], model="vit_base_patch16_224", model_kwargs={},
        pretrained=True, download=True, eval_batch_size=128,
    ),
}


def load_profile(name_or_path: str | os.PathLike = "smoke", **overrides) -> Profile:
    """A named profile or a YAML file (with optional `base: <profile>`), then keyword overrides."""
    text = str(name_or_path)
    if text in PROFILES:
        base = dataclasses.asdict(PROFILES[text])
    else:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"unknown profile {text!r}: use one of {sorted(PROFILES)} or a YAML file.")
        doc = yaml.safe_load(path.read_text()) or {}
        base = dataclasses.asdict(PROFILES[doc.pop("base", "smoke")])
        base.update(doc)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Profile)}
    if unknown:
        raise TypeError(f"unknown profile settings {sorted(unknown)}; see fedvit_utils.profiles.Profile.")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Profile(**base)
