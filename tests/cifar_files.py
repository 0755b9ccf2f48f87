"""CIFAR batches in torchvision's file layout, made by the tests (CIFAR-100 has no offline copy here)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

LAYOUT = {
    "cifar10": ("cifar-10-batches-py", {"train": ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                                  "data_batch_5"], "test": ["test_batch"]},
                "batches.meta", "labels", "label_names", 10),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "meta", "fine_labels",
                 "fine_label_names", 100),
}


def write_cifar(root: str | Path, name: str, per_class: dict[str, int], seed: int = 0) -> Path:
    """Write random CIFAR images (`per_class[split]` per class, class-interleaved) as torchvision's batches."""
    folder_name, files, meta, label_key, names_key, classes = LAYOUT[name]
    folder = Path(root) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, batch_files in files.items():
        n = per_class[split] * classes
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [i % classes for i in range(n)]
        for part, fname in enumerate(batch_files):  # CIFAR-10 splits its training set over five batches
            rows = slice(part * n // len(batch_files), (part + 1) * n // len(batch_files))
            doc = {"data": data[rows], label_key: labels[rows], "batch_label": fname}
            (folder / fname).write_bytes(pickle.dumps(doc, protocol=2))
    (folder / meta).write_bytes(pickle.dumps({names_key: [f"class{i:02d}" for i in range(classes)]}, protocol=2))
    return folder
