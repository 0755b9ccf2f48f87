"""Splitting a dataset among federated clients: IID class-balanced (the paper) or Dirichlet label skew.

The paper gives each of 10 clients 5,000 CIFAR training images and 1,000 test images; here "iid" draws
them class-balanced (500 + 100 per class for CIFAR-10). "dirichlet" draws each client's class
proportions from Dir(alpha) (Hsu et al., 2019): small alpha gives strongly non-IID clients.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

SCHEMES = ("iid", "dirichlet")


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


def save_partition(path: str | os.PathLike, splits: dict[str, list[np.ndarray]], labels: dict[str, np.ndarray],
                   num_classes: int, **meta) -> Path:
    """Write client indices, per-client class counts and the settings (seed, scheme, ...) as JSON."""
    doc = {"meta": meta, "num_classes": num_classes, "splits": {}}
    for name, clients in splits.items():
        doc["splits"][name] = {
            "indices": [c.tolist() for c in clients],
            "class_counts": class_counts(clients, labels[name], num_classes).tolist(),
        }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def load_partition(path: str | os.PathLike) -> tuple[dict[str, list[np.ndarray]], dict]:
    """Read a partition file: ({split: [indices per client]}, meta)."""
    doc = json.loads(Path(path).read_text())
    splits = {name: [np.asarray(c, dtype=np.int64) for c in s["indices"]] for name, s in doc["splits"].items()}
    return splits, doc["meta"]


def plot_class_counts(counts: np.ndarray, classes: list[str], title: str = "") -> Figure:
    """Stacked bars: images per class for each client."""
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    bottom = np.zeros(len(counts))
    cmap = matplotlib.colormaps["tab20"]
    for c, name in enumerate(classes):
        ax.bar(np.arange(len(counts)), counts[:, c], bottom=bottom, label=name, color=cmap(c % 20))
        bottom += counts[:, c]
    ax.set_xlabel("client")
    ax.set_ylabel("images")
    ax.set_xticks(np.arange(len(counts)))
    if len(classes) <= 20:
        ax.legend(fontsize=7, ncols=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(title, fontsize=9)
    return fig
