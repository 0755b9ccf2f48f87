"""Splitting a dataset among federated clients: IID class-balanced (the paper) or Dirichlet label skew.

The paper gives each of 10 clients 5,000 CIFAR training images and 1,000 test images; here "iid" draws
them class-balanced (500 + 100 per class for CIFAR-10). "dirichlet" draws each client's class
proportions from Dir(alpha) (Hsu et al., 2019): small alpha gives strongly non-IID clients.

`client_splits` turns a profile into both splits (train and test, each from its own seed stream);
`FederatedDataset` is a dataset in memory together with those splits: what the engine trains on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import ImageData
from .files import read_checked_json, write_checked_json
from .profiles import SCHEMES, Profile
from .seeds import derive_seed


def partition(
    labels: np.ndarray,
    num_clients: int,
    scheme: str = "iid",
    samples_per_client: int | None = None,
    alpha: float | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """Disjoint sorted index arrays, one per client; seeded."""
    labels = np.asarray(labels)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {SCHEMES}.")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}.")
    n = len(labels)
    per_client = samples_per_client or n // num_clients
    if per_client * num_clients > n:
        raise ValueError(
            f"{num_clients} clients x {per_client} samples = {num_clients * per_client} > {n} available: "
            f"lower samples_per_client or num_clients."
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    if scheme == "iid":
        if per_client % len(classes):
            raise ValueError(
                f"samples_per_client={per_client} is not a multiple of the {len(classes)} classes; "
                f"class-balanced IID clients need one."
            )
        k = per_client // len(classes)
        short = [c for c in classes if len(pools[c]) < k * num_clients]
        if short:
            raise ValueError(f"classes {short[:5]} have fewer than {k * num_clients} images for balanced clients.")
        return [np.sort(np.concatenate([pools[c][i * k : (i + 1) * k] for c in classes])) for i in range(num_clients)]
    if alpha is None or alpha <= 0:
        raise ValueError("scheme='dirichlet' needs alpha > 0 (e.g. 0.5; smaller is more skewed).")
    taken = {c: 0 for c in classes}
    clients = []
    for _ in range(num_clients):
        # Draw this client's class mix, then fill it from what is left, topping up from other classes.
        want = rng.multinomial(per_client, rng.dirichlet(np.full(len(classes), alpha)))
        idx = []
        for c, w in zip(classes, want, strict=True):
            got = pools[c][taken[c] : taken[c] + w]
            taken[c] += len(got)
            idx.append(got)
        missing = per_client - sum(len(i) for i in idx)
        for c in rng.permutation(classes):
            if missing == 0:
                break
            got = pools[c][taken[c] : taken[c] + missing]
            taken[c] += len(got)
            missing -= len(got)
            idx.append(got)
        clients.append(np.sort(np.concatenate(idx)))
    return clients


def partition_like(
    labels: np.ndarray, reference: np.ndarray, samples_per_client: int, seed: int = 0
) -> list[np.ndarray]:
    """Disjoint splits whose class mix follows `reference` (clients x classes counts), e.g. test like train.

    A non-IID client's test images must come from the classes it holds, or its local accuracy
    measures the wrong thing.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    if reference.shape[1] != len(classes):
        raise ValueError(f"reference has {reference.shape[1]} classes, the labels {len(classes)}.")
    if samples_per_client * len(reference) > len(labels):
        raise ValueError(f"{len(reference)} x {samples_per_client} > {len(labels)} labels: lower samples_per_client.")
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    clients = []
    for counts in reference:
        share = counts / counts.sum()
        want = np.floor(share * samples_per_client).astype(int)
        want[np.argsort(-(share * samples_per_client - want))[: samples_per_client - want.sum()]] += 1
        idx = []
        for c, w in zip(classes, want, strict=True):
            idx += [pools[c].pop() for _ in range(min(w, len(pools[c])))]
        for c in classes[np.argsort(-share)]:  # a class ran dry: top up from the client's other classes
            while len(idx) < samples_per_client and pools[c]:
                idx.append(pools[c].pop())
        for c in classes:
            while len(idx) < samples_per_client and pools[c]:
                idx.append(pools[c].pop())
        clients.append(np.sort(np.asarray(idx, dtype=np.int64)))
    return clients


def class_counts(clients: list[np.ndarray], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Table (clients x classes) of how many images of each class each client holds."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[idx], minlength=num_classes) for idx in clients])


@dataclass(frozen=True)
class ClientSplits:
    """Each client's training and test indices, and the settings they were drawn with."""

    train: list[np.ndarray]
    test: list[np.ndarray]
    settings: dict
    num_classes: int

    @property
    def num_clients(self) -> int:
        """How many clients the dataset is split among."""
        return len(self.train)


def split_settings(profile: Profile, data_source: str) -> dict:
    """The profile settings a partition depends on (recorded with it, compared when it is reused)."""
    return dict(scheme=profile.partition_scheme, num_clients=profile.num_clients,
                train_per_client=profile.train_per_client, test_per_client=profile.test_per_client,
                alpha=profile.dirichlet_alpha, partition_seed=profile.partition_seed,
                max_per_class=profile.max_per_class, data=data_source)


def client_splits(profile: Profile, train_labels: np.ndarray, test_labels: np.ndarray, num_classes: int,
                  data_source: str) -> ClientSplits:
    """Draw the profile's client splits of the training and test labels (seeded by partition_seed)."""
    for split, labels, per_client in (("train", train_labels, profile.train_per_client),
                                      ("test", test_labels, profile.test_per_client)):
        if profile.num_clients * per_client > len(labels):
            raise ValueError(
                f"profile {profile.name!r}: num_clients={profile.num_clients} x {split}_per_client={per_client} needs "
                f"{profile.num_clients * per_client} {split} images but {data_source} has {len(labels)} (max_per_class="
                f"{profile.max_per_class}): lower {split}_per_client or num_clients, or raise max_per_class."
            )
    train = partition(train_labels, profile.num_clients, profile.partition_scheme, profile.train_per_client,
                      profile.dirichlet_alpha, profile.partition_seed)
    # The test split has its own seed stream so changing test sizes never reshuffles training data.
    test_seed = derive_seed(profile.partition_seed, "test") % 2**32
    if profile.partition_scheme == "iid":
        test = partition(test_labels, profile.num_clients, "iid", profile.test_per_client, seed=test_seed)
    else:  # non-IID: each client's test images follow its own class mix
        test = partition_like(test_labels, class_counts(train, train_labels, num_classes), profile.test_per_client,
                              test_seed)
    return ClientSplits(train, test, split_settings(profile, data_source), num_classes)


def save_splits(path: str | os.PathLike, splits: ClientSplits, train_labels: np.ndarray, test_labels: np.ndarray
                ) -> Path:
    """Record client splits in a partition file: indices, per-client class counts, settings (seed, scheme, ...)."""
    doc = {"meta": splits.settings, "num_classes": splits.num_classes, "splits": {}}
    for name, clients, labels in (("train", splits.train, train_labels), ("test", splits.test, test_labels)):
        doc["splits"][name] = {"indices": [c.tolist() for c in clients],
                               "class_counts": class_counts(clients, labels, splits.num_classes).tolist()}
    return write_checked_json(path, doc)


PARTITION_HINT = ("delete it and rerun notebook 01 (or `python -m fedvit_utils train --restart`): the split is drawn "
                  "again from partition_seed")


def load_splits(path: str | os.PathLike) -> ClientSplits:
    """Read client splits back from a partition file, verifying its checksum."""
    doc = read_checked_json(path, PARTITION_HINT)
    train, test = ([np.asarray(c, dtype=np.int64) for c in doc["splits"][split]["indices"]]
                   for split in ("train", "test"))
    return ClientSplits(train, test, doc["meta"], int(doc["num_classes"]))


@dataclass
class FederatedDataset:
    """One dataset in memory and its split among clients: what federated training and evaluation use."""

    name: str
    train: ImageData
    test: ImageData
    splits: ClientSplits

    @property
    def num_classes(self) -> int:
        """Number of classes of the dataset."""
        return len(self.train.classes)

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return self.splits.num_clients

    def client_train(self, client: int) -> ImageData:
        """The training images of one client (a copy)."""
        return self.train.subset(self.splits.train[client])

    def client_test_indices(self) -> list[torch.Tensor]:
        """Each client's test indices as index tensors into `test`."""
        return [torch.as_tensor(idx, dtype=torch.long) for idx in self.splits.test]

    def all_client_train(self) -> ImageData:
        """The union of the clients' training images (the centralized baseline's data)."""
        return self.train.subset(np.sort(np.concatenate(self.splits.train)))

    def all_client_test_indices(self) -> np.ndarray:
        """Sorted union of the clients' test indices."""
        return np.sort(np.concatenate(self.splits.test))
