"""Datasets decoded once into memory, and the model's own preprocessing as a batch module.

The paper uses CIFAR-10 and CIFAR-100 (32x32), resized to the ViT's 224x224 input. Images are kept
as one uint8 tensor (N, 3, 32, 32): 150 MB for CIFAR's 50,000 training images, so an epoch never
re-reads files and a batch is a tensor index. Resizing and normalization run per batch on the
training device (`Preprocess`), where they are cheap; image encryption comes after them.

Sources: any ImageFolder tree ``<root>/{train,test}/<class>/*.jpg`` (e.g. the offline JPEG copy of
CIFAR-10), or torchvision's CIFAR10/CIFAR100 classes (download on a machine with internet).
"""

from __future__ import annotations

import codecs
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy._core.multiarray as np_multiarray
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import paths
from .datasets import DATASETS as DATASETS  # the registry lives in `datasets` (no torch there)
from .datasets import NUM_CLASSES, dataset_spec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataNotFound(FileNotFoundError):
    """No data where the data setting points, and downloading was not allowed or not possible."""


@dataclass
class ImageData:
    """Images as uint8 (N, C, H, W), labels as int64 (N,), and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray | torch.Tensor) -> ImageData:
        """The images at `indices` (a copy)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return ImageData(self.images[idx], self.labels[idx], self.classes, self.source)


class DataError(ValueError):
    """A data folder holds something that cannot be used; the message names the file or folder."""


def _visible(folder: Path) -> list[Path]:
    # Hidden entries (.DS_Store, macOS "._*" resource forks, editor files) are not data.
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _is_imagefolder(root: Path, split: str) -> bool:
    d = root / split
    return d.is_dir() and any(p.is_dir() for p in _visible(d))


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode {path} ({exc}): replace or delete that file.") from exc


def load_imagefolder(root: str | os.PathLike, split: str = "train", max_per_class: int | None = None) -> ImageData:
    """Decode `<root>/<split>/<class>/*` into memory; classes sorted by name (CIFAR-10's label order)."""
    base = Path(root) / split
    if not base.is_dir():
        raise DataNotFound(f"{Path(root)} has no {split}/ folder: an ImageFolder tree needs "
                           f"<root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg.")
    classes = [p.name for p in _visible(base) if p.is_dir()]
    images, labels = [], []
    for label, name in enumerate(classes):
        files = [f for f in _visible(base / name) if f.suffix.lower() in IMAGE_SUFFIXES]
        for f in files[:max_per_class]:
            images.append(_decode(f))
            labels.append(label)
    if not images:
        raise DataNotFound(f"{base} has class folders but no images ({IMAGE_SUFFIXES}).")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images in {base} differ in size {sorted(shapes)[:3]}; resize them to one size first.")
    array = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ImageData(array, torch.tensor(labels, dtype=torch.long), classes, f"ImageFolder {Path(root).name}")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR's python batches that builds numpy arrays and nothing else (no code runs)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np_multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np_multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol 2 stores bytes
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch file")
        return self._ALLOWED[(module, name)]


def _read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return _CifarUnpickler(fh, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read {path} as a CIFAR batch ({type(exc).__name__}: {exc}): replace the file "
                        f"(torchvision's download writes it).") from exc


def load_torchvision_cifar(
    name: str, root: str | os.PathLike, split: str = "train", download: bool = False
) -> ImageData:
    """CIFAR-10/100 from torchvision's python batches under `root` (`download` fetches and verifies them first).

    The batches are read here with an unpickler that can only build numpy arrays, so a crafted file
    cannot run code; torchvision itself is used only to download (it checks the published MD5 sums).
    """
    root = Path(root)
    layout = dataset_spec(name).torchvision
    if layout is None:
        raise DataNotFound(f"{name} has no torchvision files; put it in an ImageFolder tree <root>/{name}/.")
    if download:
        from torchvision import datasets

        cls = getattr(datasets, layout.dataset_class)
        try:
            cls(str(root), train=split == "train", download=True)
        except (RuntimeError, OSError) as exc:  # torchvision: "Dataset not found or corrupted."; no network
            raise DataNotFound(_missing_message(name, root, [f"the download failed: {exc}"])) from exc
    folder = root / layout.folder
    files = layout.train if split == "train" else layout.test
    missing = [f for f in (*files, layout.meta) if not (folder / f).is_file()]
    if missing:
        raise DataNotFound(_missing_message(name, root, [f"{folder} lacks {missing}"]))
    batches = [_read_batch(folder / f) for f in files]
    try:
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
        labels = np.concatenate([np.asarray(b[layout.labels], dtype=np.int64) for b in batches])
        classes = [str(c) for c in _read_batch(folder / layout.meta)[layout.names]]
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{folder} does not hold CIFAR batches in torchvision's layout ({exc}).") from exc
    labels_fit = len(labels) == len(data) and (len(labels) == 0 or 0 <= labels.min() <= labels.max() < len(classes))
    if not labels_fit or len(classes) != NUM_CLASSES[name]:
        raise DataError(f"{folder}: {len(data)} images, {len(labels)} labels and {len(classes)} class names do not fit "
                        f"{name}; replace the files.")
    return ImageData(torch.from_numpy(data), torch.from_numpy(labels), classes, f"torchvision {name}")


@dataclass(frozen=True)
class DataSource:
    """Where a dataset is read from: an ImageFolder tree, torchvision's CIFAR files, or a download."""

    kind: str  # "imagefolder" | "torchvision" | "download"
    root: Path


def locate_dataset(name: str, data_root: str | os.PathLike | None = None, download: bool = False) -> DataSource:
    """Find `name` under the data setting without decoding anything; DataNotFound says what is missing.

    Looked for, in order: an ImageFolder tree <root>/<name>/{train,test}/<class>/; torchvision's files
    (<root>/cifar-10-batches-py, <root>/cifar-100-python); an ImageFolder tree at <root> itself whose
    class count fits the dataset; else a torchvision download if `download` is allowed.
    """
    layout = dataset_spec(name).torchvision
    root = paths.data_root(data_root)
    notes = []
    if root is not None:
        for folder in (root / name, root):
            if not (_is_imagefolder(folder, "train") or _is_imagefolder(folder, "test")):
                continue
            for split in ("train", "test"):
                if not _is_imagefolder(folder, split):
                    raise DataNotFound(f"{folder} has class folders under {'test' if split == 'train' else 'train'}/ "
                                       f"but none under {split}/: an ImageFolder tree needs both splits, "
                                       f"<root>/{{train,test}}/<class>/*.jpg.")
            classes = len([p for p in _visible(folder / "train") if p.is_dir()])
            if classes == NUM_CLASSES[name]:
                return DataSource("imagefolder", folder)
            if folder == root / name:
                raise DataError(f"{folder} has {classes} classes but {name} has {NUM_CLASSES[name]}: wrong folder?")
            notes.append(f"the ImageFolder tree at {root} has {classes} classes, not {name}'s {NUM_CLASSES[name]}")
        if layout is not None and (root / layout.folder).is_dir():
            return DataSource("torchvision", root)
    if download and layout is not None:
        return DataSource("download", root or paths.runs_dir() / "data")
    raise DataNotFound(_missing_message(name, root, notes))


def _missing_message(name: str, root: Path | None, notes: list[str] | None = None) -> str:
    where = f"under {root}" if root else "(no data folder set)"
    why = f" ({'; '.join(notes)})" if notes else ""
    layout = dataset_spec(name).torchvision
    torchvision = f" or at a folder holding torchvision's {layout.folder}" if layout else ""
    return (
        f"no {name} data {where}{why}. Point the data setting at an ImageFolder tree "
        f"<root>/{{train,test}}/<class>/*.jpg (or <root>/{name}/...){torchvision} — argument data_root=..., "
        f"environment variable {paths.DATA_ENV}=..., "
        f"`make study DATA=...`, or pyproject.toml [tool.fedvit] data_root"
        + (" — or allow download on a machine with internet." if layout else ".")
    )


def load_dataset(
    name: str,
    split: str = "train",
    data_root: str | os.PathLike | None = None,
    max_per_class: int | None = None,
    download: bool = False,
) -> ImageData:
    """Load a registered dataset (`datasets.DATASETS`) from wherever `locate_dataset` finds it, decoded into memory."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}.")
    source = locate_dataset(name, data_root, download)
    if source.kind == "imagefolder":
        return load_imagefolder(source.root, split, max_per_class)
    data = load_torchvision_cifar(name, source.root, split, source.kind == "download")
    if max_per_class is not None:
        labels = data.labels.numpy()
        keep = np.concatenate([np.flatnonzero(labels == c)[:max_per_class] for c in range(len(data.classes))])
        data = data.subset(np.sort(keep))
    return data


def check_same_classes(train: ImageData, test: ImageData) -> None:
    """Refuse train and test splits whose class lists differ (labels would silently mean other classes)."""
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise DataError(
            f"the train and test splits of {train.source} name different classes (only in train: {only_train[:5]}, "
            f"only in test: {only_test[:5]}): rename the class folders so both splits have the same ones."
        )


def sample_images(data: ImageData, n: int, seed: int = 0) -> ImageData:
    """`n` images drawn at random (seeded, without replacement) from `data`, in draw order."""
    if n > len(data):
        raise ValueError(f"asked for {n} images but {data.source} holds {len(data)}: lower the number.")
    return data.subset(np.random.default_rng(seed).choice(len(data), size=n, replace=False))


PHOTOS = ("astronaut", "coffee", "chelsea")


def photographs(names: tuple[str, ...] | list[str] = PHOTOS, size: int = 224) -> torch.Tensor:
    """scikit-image photographs, centre-cropped square and resized (bicubic): uint8 (n, 3, size, size)."""
    import skimage.data

    out = []
    for name in names:
        if name not in PHOTOS:
            raise ValueError(f"unknown photo {name!r}; choose one of {PHOTOS}.")
        img = getattr(skimage.data, name)()[..., :3]
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        crop = Image.fromarray(img[top : top + s, left : left + s])
        out.append(np.asarray(crop.resize((size, size), Image.BICUBIC)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) as float32 in [0, 1]."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images (0..255), got {images.dtype}.")
    return images.float() / 255.0


class Preprocess(nn.Module):
    """uint8 (B, C, h, w) -> float (B, C, H, W): scale to [0, 1], resize to the model's input, normalize."""

    def __init__(self, input_size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...],
                 interpolation: str = "bicubic") -> None:
        super().__init__()
        self.input_size = tuple(input_size)
        self.interpolation = "bilinear" if interpolation not in ("bilinear", "bicubic") else interpolation
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def for_model(cls, model: nn.Module) -> Preprocess:
        """Preprocessing from the model's timm data config (input size, mean, std, interpolation)."""
        from .models import data_config

        cfg = data_config(model)
        return cls(cfg["input_size"][1:], cfg["mean"], cfg["std"], cfg.get("interpolation", "bicubic"))

    def unit(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, h, w) -> float [0, 1] at the model's input size: resized as `forward` does, not normalized."""
        if images.dtype != torch.uint8:
            raise TypeError(f"Preprocess takes uint8 images (0..255), got {images.dtype}.")
        x = images.float().div_(255.0)
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode=self.interpolation, align_corners=False,
                              antialias=x.shape[-1] > self.input_size[-1]).clamp_(0.0, 1.0)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.unit(images) - self.mean) / self.std
