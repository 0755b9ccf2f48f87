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

Where no profile is named (a notebook opened in JupyterLab, ``make study``, the command line), the
profile is ``$FEDVIT_PROFILE``, else ``quick`` (`default_profile`); the test suite sets ``smoke``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .datasets import DATASETS
from .federated.strategies import STRATEGIES  # names only: no torch (the strategies run in federated.server)
from .keys import KEY_KINDS

SMALL_VIT = dict(img_size=32, patch_size=8, embed_dim=192, depth=6, num_heads=3)
SCHEMES = ("iid", "dirichlet")  # how clients' splits are drawn (see partition)
PROFILE_ENV = "FEDVIT_PROFILE"  # the profile used where none is named (tests set "smoke")
DEFAULT_PROFILE = "quick"


class ProfileError(ValueError):
    """A profile setting that cannot work; the message names the setting, its value and the choices."""


@dataclass
class SecuritySettings:
    """Sizes of the security notebook (06); its studies run on images at the model's input size.

    Smoke-sized defaults (seconds, for tests); the study profiles set the sizes their tables report.
    """

    dataset: str | None = None  # which of the profile's datasets is studied; None -> the first
    n_images: int = 8  # test images sampled: visual security, and the pool of known and unseen images
    known_pairs: list[int] = field(default_factory=lambda: [1, 2])  # k of the known-plaintext draws
    known_plaintext_draws: int = 2  # random draws (a fresh key and k fresh known images) per k
    n_unseen: int = 4  # images decrypted with a recovered key (known plaintext, extraction, jigsaw)
    photo_known_pairs: list[int] = field(default_factory=list)  # k on the 224x224 photographs (3); [] skips them
    wrong_key_images: int = 40  # clients' test images the wrong-key accuracies are measured on
    n_keys: int = 2  # independent keys per kind for wrong keys, key extraction and the jigsaw after it
    extraction_widths: list[int] = field(default_factory=list)  # D of fresh ViTs of the model's geometry
    prior_images: int = 20  # public (train) images whose block statistics the D < L estimate uses
    position_keys: int = 1  # keys per kind for each position-embedding condition
    jigsaw_images: int = 2  # images for the ciphertext-only jigsaw
    jigsaw_ciphertexts: list[int] = field(default_factory=lambda: [2])  # a client's ciphertexts the jigsaw uses
    cloud_queries: list[int] = field(default_factory=lambda: [20])  # n of a client's queries the cloud sees
    cloud_public_images: int = 100  # public (train) images the cloud holds, with their labels
    cloud_keys: int = 1  # keys per kind for the cloud's view
    cloud_scored_images: int = 10  # of the n queries, how many recovered images are scored
    cloud_relearn_images: int = 40  # public images the cloud re-learns the plain embeddings on
    cloud_relearn_epochs: int = 1
    # The statistics attacks again at another geometry (the study profiles: the paper's 224x224 with 16x16
    # blocks), with no model: the dataset resized to it as queries and public images, the photographs as
    # further queries. Smoke-sized defaults (32x32 with 4x4 blocks, seconds).
    cloud_geometry: list[int] = field(default_factory=lambda: [32, 4])  # [image size, block size]
    cloud_geometry_queries: list[int] = field(default_factory=lambda: [20])
    cloud_geometry_public_images: int = 20
    cloud_geometry_keys: int = 1
    cloud_geometry_scored_images: int = 4
    seed: int = 0  # image samples and demo keys of the security notebook


STUDY_SECURITY = dict(  # the quick and cpu profiles: 32x32 images, block 8 (L = 192, N = 16)
    n_images=1000, known_pairs=[1, 2, 4, 8, 11, 12, 13, 16], known_plaintext_draws=30, n_unseen=100,
    photo_known_pairs=[1, 2], wrong_key_images=2000, n_keys=5, extraction_widths=[96, 384], prior_images=2000,
    position_keys=20, jigsaw_images=64, jigsaw_ciphertexts=[1, 2, 5, 10],
    cloud_queries=[10, 100, 1000, 10000], cloud_public_images=10000, cloud_keys=5, cloud_scored_images=100,
    cloud_relearn_images=5000, cloud_relearn_epochs=2,
    cloud_geometry=[224, 16], cloud_geometry_queries=[10, 100, 1000], cloud_geometry_public_images=1000,
    cloud_geometry_keys=5, cloud_geometry_scored_images=20,
)


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
    aggregation: str = "fedavg"  # a registered strategy: "fedavg" | "fedsgd" (federated.strategies)
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
            unknown = set(self.security) - {f.name for f in dataclasses.fields(SecuritySettings)}
            if unknown:
                raise ProfileError(f"unknown security settings {sorted(unknown)}; see profiles.SecuritySettings.")
            self.security = SecuritySettings(**self.security)
        if isinstance(self.datasets, str):
            self.datasets = [self.datasets]
        _validate(self)

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


def _validate(p: Profile) -> None:
    """Refuse, before any work starts, settings that cannot train or that a later step would reject."""

    def check(ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise ProfileError(f"profile {p.name!r}: {name}={getattr(p, name, None)!r} is not valid; {rule}.")

    def integer(value: object, low: int = 1) -> bool:
        return type(value) is int and value >= low

    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

    check(isinstance(p.datasets, list) and bool(p.datasets) and set(p.datasets) <= set(DATASETS), "datasets",
          f"choose from {list(DATASETS)}")
    check(isinstance(p.model, str) and bool(p.model), "model", "name a timm ViT, e.g. 'vit_base_patch16_224'")
    check(isinstance(p.model_kwargs, dict), "model_kwargs", "give a mapping of timm.create_model arguments")
    for name in ("num_clients", "train_per_client", "test_per_client", "rounds", "local_epochs", "batch_size",
                 "eval_batch_size"):
        check(integer(getattr(p, name)), name, "use a whole number >= 1")
    for name in ("partition_seed", "training_seed", "key_seed"):
        check(integer(getattr(p, name), 0), name, "use a whole number >= 0")
    check(p.max_per_class is None or integer(p.max_per_class), "max_per_class", "use None or a whole number >= 1")
    check(p.partition_scheme in SCHEMES, "partition_scheme", f"choose from {list(SCHEMES)}")
    check(p.partition_scheme != "dirichlet" or (number(p.dirichlet_alpha) and p.dirichlet_alpha > 0),
          "dirichlet_alpha", "the dirichlet scheme needs alpha > 0 (e.g. 0.5; smaller is more skewed)")
    check(p.aggregation in STRATEGIES, "aggregation", f"choose from {list(STRATEGIES)}")
    check(p.clients_per_round is None or (integer(p.clients_per_round) and p.clients_per_round <= p.num_clients),
          "clients_per_round", f"use None (every client) or a whole number in 1..num_clients={p.num_clients}")
    check(number(p.lr) and p.lr > 0, "lr", "use a finite learning rate > 0 (the paper: 1e-3)")
    check(number(p.momentum) and 0 <= p.momentum < 1, "momentum", "use a value in [0, 1) (the paper: 0.9)")
    check(number(p.weight_decay) and p.weight_decay >= 0, "weight_decay", "use a finite value >= 0")
    check(isinstance(p.device, str) and (p.device in ("auto", "cpu", "mps") or p.device.split(":")[0] == "cuda"),
          "device", "choose 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    check(p.key_kind in KEY_KINDS, "key_kind", f"choose from {list(KEY_KINDS)}")
    check(p.checkpoint_path is None or isinstance(p.checkpoint_path, str), "checkpoint_path",
          "give the path of a local weights file, or leave it unset")
    s = p.security

    def refuse(name: str, rule: str) -> None:
        raise ProfileError(f"profile {p.name!r}: security.{name}={getattr(s, name)!r} is not valid; {rule}.")

    if s.dataset is not None and s.dataset not in p.datasets:
        refuse("dataset", f"choose one of the profile's datasets {p.datasets}, or None for the first")
    for name in ("n_images", "n_unseen", "known_plaintext_draws", "wrong_key_images", "prior_images", "position_keys",
                 "jigsaw_images", "cloud_keys", "cloud_scored_images", "cloud_relearn_images", "cloud_relearn_epochs",
                 "cloud_geometry_keys", "cloud_geometry_scored_images"):
        if not integer(getattr(s, name)):
            refuse(name, "use a whole number >= 1")
    if not integer(s.n_keys, 2):
        refuse("n_keys", "use a whole number >= 2 (another client's key needs a second key)")
    lists = (("known_pairs", 0, False), ("photo_known_pairs", 0, True), ("jigsaw_ciphertexts", 1, False),
             ("extraction_widths", 1, True), ("cloud_queries", 2, False), ("cloud_geometry_queries", 2, False))
    for name, low, empty in lists:
        ks = getattr(s, name)
        if not (isinstance(ks, list) and (ks or empty) and all(integer(k, low) for k in ks)):
            refuse(name, f"use a{'' if empty else ' non-empty'} list of whole numbers >= {low}")
    for name in ("cloud_public_images", "cloud_geometry_public_images"):
        if not integer(getattr(s, name), 4):
            refuse(name, "use a whole number >= 4 (the attacker splits them to simulate its own key)")
    geometry = s.cloud_geometry
    if not (isinstance(geometry, list) and len(geometry) == 2 and all(integer(v, 2) for v in geometry)
            and geometry[0] % geometry[1] == 0):
        refuse("cloud_geometry", "give [image size, block size], whole numbers >= 2, the size a multiple of the block")
    if max(s.known_pairs) + s.n_unseen > s.n_images:
        refuse("n_images", f"max(known_pairs)={max(s.known_pairs)} known plus n_unseen={s.n_unseen} unseen images "
                           f"need that many: raise n_images or lower the others")
    if max(s.jigsaw_ciphertexts) + s.n_unseen > s.n_images or s.jigsaw_images > s.n_images:
        refuse("n_images", f"max(jigsaw_ciphertexts)={max(s.jigsaw_ciphertexts)} plus n_unseen={s.n_unseen}, and "
                           f"jigsaw_images={s.jigsaw_images}, must fit in n_images")
    if max(s.photo_known_pairs, default=0) >= 3:
        refuse("photo_known_pairs", "use k <= 2: three photographs, one of them kept unseen")




PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        model_kwargs=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
        train_per_client=20, test_per_client=10, max_per_class=20, rounds=2, batch_size=8, lr=1e-2,
        eval_batch_size=100,
    ),
    "quick": Profile(
        name="quick", train_per_client=1000, test_per_client=200, max_per_class=1000, rounds=5,
        security=SecuritySettings(**STUDY_SECURITY),
    ),
    "cpu": Profile(
        name="cpu",
        security=SecuritySettings(**STUDY_SECURITY),
    ),
    "paper": Profile(
        name="paper", datasets=["cifar10", "cifar100"], model="vit_base_patch16_224", model_kwargs={},
        pretrained=True, download=True, eval_batch_size=128,
        # 224x224 (CIFAR resized as the model's preprocessing does), block 16: L = 768, N = 196.
        security=SecuritySettings(n_images=64, known_pairs=[1, 2, 3, 4], known_plaintext_draws=20, n_unseen=16,
                                  photo_known_pairs=[1, 2], wrong_key_images=2000, n_keys=5, extraction_widths=[384],
                                  prior_images=100, position_keys=5, jigsaw_images=8, jigsaw_ciphertexts=[1, 2, 5]),
    ),
}


def default_profile() -> str:
    """The profile used where none is named: $FEDVIT_PROFILE, else "quick"."""
    return os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE


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
            raise ProfileError(f"unknown profile {text!r}: use one of {sorted(PROFILES)} or a YAML file.")
        changes = yaml.safe_load(path.read_text()) or {}
        base = changes.pop("base", "smoke")
        if base not in PROFILES:
            raise ProfileError(f"{path}: base {base!r} is not a profile; use one of {sorted(PROFILES)}.")
        doc = _merge(dataclasses.asdict(PROFILES[base]), {"name": path.stem, **changes})
    known = {f.name for f in dataclasses.fields(Profile)}
    unknown = (set(doc) | set(overrides)) - known
    if unknown:
        raise ProfileError(f"unknown profile settings {sorted(unknown)}; see fedvit_utils.profiles.Profile.")
    return Profile(**_merge(doc, {k: v for k, v in overrides.items() if v is not None}))

