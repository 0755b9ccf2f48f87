"""The datasets a profile may name: a registry of names, class counts and torchvision file layouts.

Kept apart from `data` (which decodes images and needs torch) so that loading a profile, which checks
its dataset names here, does not import torch. A dataset is found under the data setting as an
ImageFolder tree ``<root>/<name>/{train,test}/<class>/`` (any dataset), or as torchvision's python
batches (those with `TorchvisionFiles`). Registering one more is one call::

    register_dataset(DatasetSpec("cifar10_gray", num_classes=10))

after which profiles accept ``datasets: [cifar10_gray]`` and `data.load_dataset` reads its tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class TorchvisionFiles:
    """Where torchvision's class for a dataset keeps its python batches, and what they hold."""

    dataset_class: str  # the class in torchvision.datasets that downloads and verifies the files
    folder: str  # the folder its files unpack to under the data root
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str  # the batch holding the class names
    labels: str  # the key of the labels in a batch
    names: str  # the key of the class names in the meta batch


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its name in profiles, its number of classes, and torchvision's files if it has any."""

    name: str
    num_classes: int
    torchvision: TorchvisionFiles | None = None


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make `spec` a dataset profiles may name; a name is registered once."""
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} is already registered; choose another name.")
    if type(spec.num_classes) is not int or spec.num_classes < 2:
        raise ValueError(f"dataset {spec.name!r}: num_classes={spec.num_classes!r}; a classifier needs >= 2.")
    DATASETS[spec.name] = spec
    return spec


def dataset_spec(name: str) -> DatasetSpec:
    """The registered dataset called `name`; ValueError lists the registered ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {tuple(DATASETS)} or register it "
                         f"(datasets.register_dataset).")
    return DATASETS[name]


class _NumClasses(Mapping[str, int]):
    """name -> number of classes, read from the registry (so registered datasets appear in it)."""

    def __getitem__(self, name: str) -> int:
        return DATASETS[name].num_classes

    def __iter__(self) -> Iterator[str]:
        return iter(DATASETS)

    def __len__(self) -> int:
        return len(DATASETS)


NUM_CLASSES: Mapping[str, int] = _NumClasses()

register_dataset(DatasetSpec("cifar10", 10, TorchvisionFiles(
    "CIFAR10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
    "batches.meta", "labels", "label_names")))
register_dataset(DatasetSpec("cifar100", 100, TorchvisionFiles(
    "CIFAR100", "cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names")))
