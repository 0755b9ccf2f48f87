"""Named settings of a whole study run, shared by the notebooks, the command line and the Flower app.

``paper`` is exactly Sec. 4.1 of Nagamori & Kiya: ImageNet-pretrained ViT-B/16, CIFAR images resized
32 -> 224, 10 clients x (5,000 train + 1,000 test), SGD lr 1e-3, momentum 0.9, batch 8, cross-entropy,
one local epoch per round, 10 rounds (needs a GPU and internet). ``cpu`` keeps the paper's partition
and optimizer but trains a small ViT from scratch on native 32x32 images so it fits a 2-core CPU.
``quick`` is the study's default (minutes), ``smoke`` is for tests (seconds).

A profile file is YAML: ``base: <profile>`` plus any settings to change, e.g.::

    base: paper
    checkpoint_path: vit_b16.pth
    security: {n_images: 16}

The same file works for ``python -m fedvit_utils train``, ``study`` and the notebooks' ``profile``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SMALL_VIT = dict(img_size=32, patch_size=8, embed_dim=192, depth=6, num_heads=3)


@dataclass
class SecuritySettings:
    """Sizes of the security notebook (06): how many images, known pairs and unseen images."""

    n_images: int = 8  # CIFAR test images for visual security, jigsaw and key extraction
    known_pairs: list[int] = field(default_factory=lambda: [0, 1, 2])  # k of the known-plaintext curve
    photo_known_pairs: list[int] = field(default_factory=lambda: [1])  # k on the 224x224 photographs
    n_unseen: int = 4  # images decrypted with a recovered key
    seed: int = 0  # image samples and demo keys of the security notebook


@dataclass
class Profile:
    """Every setting of one federated run, its baseline and the study; one seed per concern."""

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
    security: SecuritySettings = field(default_factory=SecuritySettings)

    def __post_init__(self) -> None:
        if isinstance(self.security, dict):
            self.security = SecuritySettings(**self.security)
        if isinstance(self.datasets, str):
            self.datasets = [self.datasets]
        if self.aggregation not in ("fedavg", "fedsgd"):
            raise ValueError(f"aggregation must be 'fedavg' or 'fedsgd', not {self.aggregation!r}.")
        if self.clients_per_round is not None and not 1 <= self.clients_per_round <= self.num_clients:
            raise ValueError(f"clients_per_round={self.clients_per_round} must be in 1..{self.num_clients}.")

    @property
    def total_epochs(self) -> int:
        """Epochs over each client's data: the centralized baseline trains this many."""
        return self.rounds * self.local_epochs

    def to_dict(self) -> dict:
        """Plain dict for JSON records."""
        return dataclasses.asdict(self)

    def training_settings(self) -> dict:
        """The settings that determine trained weights (a resumed run must match them)."""
        doc = self.to_dict()
        for name in ("name", "security", "key_seed", "key_kind", "eval_batch_size", "device", "download"):
            doc.pop(name)
        return doc


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        model_kwargs=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
        train_per_client=20, test_per_client=10, max_per_class=20, rounds=2, batch_size=8, lr=1e-2,
        eval_batch_size=100,
    ),
    "quick": Profile(
        name="quick", train_per_client=1000, test_per_client=200, max_per_class=1000, rounds=5,
        security=SecuritySettings(n_images=32, known_pairs=[0, 1, 2, 4, 8, 16], photo_known_pairs=[0, 1, 2],
                                  n_unseen=16),
    ),
    "cpu": Profile(
        name="cpu",
        security=SecuritySettings(n_images=64, known_pairs=[0, 1, 2, 4, 8, 12, 16, 24], photo_known_pairs=[0, 1, 2],
                                  n_unseen=16),
    ),
    "paper": Profile(
        name="paper", datasets=["cifar10", "cifar100"], model="vit_base_patch16_224", model_kwargs={},
        pretrained=True, download=True, eval_batch_size=128,
        security=SecuritySettings(n_images=64, known_pairs=[0, 1, 2, 3, 4], photo_known_pairs=[0, 1, 2],
                                  n_unseen=16),
    ),
}


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_profile(name_or_path: str | os.PathLike = "smoke", **overrides) -> Profile:
    """A named profile or a YAML file (``base: <profile>`` plus changes), then keyword overrides."""
    text = str(name_or_path)
    if text in PROFILES:
        doc = dataclasses.asdict(PROFILES[text])
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ValueError(f"unknown profile {text!r}: use one of {sorted(PROFILES)} or a YAML file.")
        changes = yaml.safe_load(path.read_text()) or {}
        base = changes.pop("base", "smoke")
        if base not in PROFILES:
            raise ValueError(f"{path}: base {base!r} is not a profile; use one of {sorted(PROFILES)}.")
        doc = _merge(dataclasses.asdict(PROFILES[base]), {"name": path.stem, **changes})
    known = {f.name for f in dataclasses.fields(Profile)}
    unknown = (set(doc) | set(overrides)) - known
    if unknown:
        raise TypeError(f"unknown profile settings {sorted(unknown)}; see fedvit_utils.profiles.Profile.")
    return Profile(**_merge(doc, {k: v for k, v in overrides.items() if v is not None}))
