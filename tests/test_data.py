"""Data: the offline JPEG copy decoded into memory, the data setting, CIFAR-100 via torchvision, preprocessing."""

from __future__ import annotations

import os
import pickle

import pytest
import timm
import torch
import torch.nn.functional as F
import vit_zoo
from cifar_files import LAYOUT, write_cifar

from fedvit_utils import paths
from fedvit_utils.data import (
    DataError,
    DataNotFound,
    Preprocess,
    load_dataset,
    sample_images,
    to_unit_float,
)
from fedvit_utils.models import data_config


def example_image(data_root, split: str = "test", index: int = 0):
    """One CIFAR-10 image as RGB uint8 (H, W, 3), the `index`-th of the first class."""
    data = load_dataset("cifar10", split, data_root, max_per_class=index + 1)
    return data.images[index].permute(1, 2, 0).numpy()


def test_imagefolder_copy_loads_in_cifar_label_order(cifar_root):
    data = load_dataset("cifar10", "test", cifar_root, max_per_class=3)
    assert data.images.shape == (30, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.classes[0] == "airplane" and data.classes[9] == "truck"
    assert data.labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert example_image(cifar_root, "test", 2).shape == (32, 32, 3)


def test_data_setting_argument_then_environment_then_project_default(cifar_root, monkeypatch, tmp_path):
    monkeypatch.setenv("FEDVIT_DATA", str(cifar_root))
    assert paths.data_root(tmp_path) == tmp_path
    assert len(load_dataset("cifar10", "train", max_per_class=1)) == 10
    monkeypatch.setenv("FEDVIT_DATA", str(tmp_path / "elsewhere"))
    assert paths.data_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("FEDVIT_DATA")
    assert paths.data_root() == paths.default_data_root()  # pyproject.toml [tool.fedvit] data_root, if it exists
    monkeypatch.setattr(paths, "default_data_root", lambda: None)
    with pytest.raises(DataNotFound, match="FEDVIT_DATA"):
        load_dataset("cifar10", "train")


def test_wrong_folder_and_bad_names(cifar_root):
    with pytest.raises(DataNotFound, match="has 10 classes, not cifar100's 100"):
        load_dataset("cifar100", "test", cifar_root, max_per_class=1)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", "test", cifar_root)
    with pytest.raises(ValueError, match="split"):
        load_dataset("cifar10", "valid", cifar_root)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_torchvision_files_on_data_the_test_makes(tmp_path, name):
    folder = write_cifar(tmp_path, name, {"train": 3, "test": 2})
    data = load_dataset(name, "train", tmp_path)
    classes = 10 if name == "cifar10" else 100
    assert data.images.shape == (3 * classes, 3, 32, 32) and len(data.classes) == classes
    first_file = folder / LAYOUT[name][1]["train"][0]  # data_batch_1 or train
    first = torch.from_numpy(pickle.loads(first_file.read_bytes())["data"][0].reshape(3, 32, 32))
    assert torch.equal(data.images[0], first)
    assert data.labels[:3].tolist() == [0, 1, 2] and data.source == f"torchvision {name}"
    assert len(load_dataset(name, "test", tmp_path, max_per_class=1)) == classes


def test_a_crafted_cifar_batch_cannot_run_code(tmp_path):
    folder = write_cifar(tmp_path, "cifar100", {"train": 1, "test": 1})
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "train").write_bytes(pickle.dumps({"data": Payload()}, protocol=2))
    with pytest.raises(DataError, match="posix.system is not allowed"):
        load_dataset("cifar100", "train", tmp_path)
    assert not marker.exists()


def test_preprocess_follows_the_models_config():
    model = vit_zoo.make("small32_p8")
    pre = Preprocess.for_model(model)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    cfg = data_config(model)
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    assert not torch.equal(mean, torch.zeros_like(mean))  # a real normalization, not the identity
    out = pre(x)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)
    with pytest.raises(TypeError, match="uint8"):
        pre(x.float())


def test_preprocess_resizes_to_the_models_input():
    model = timm.create_model("vit_tiny_patch16_224", img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2)
    pre = Preprocess.for_model(model)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = pre(x)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    cfg = data_config(model)
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    up = F.interpolate(x.float() / 255, size=(64, 64), mode=cfg["interpolation"], align_corners=False).clamp(0, 1)
    torch.testing.assert_close(out, (up - mean) / std)
    model.eval()
    assert model(out).shape == (2, model.num_classes)  # the model takes what Preprocess gives it


def test_sample_images_is_seeded_and_bounded(cifar_test):
    s = sample_images(cifar_test, 6, seed=3)
    assert s.images.shape == (6, 3, 32, 32) and s.images.dtype == torch.uint8
    assert s.labels.dtype == torch.long and set(s.labels.tolist()) <= set(range(10))
    again = sample_images(cifar_test, 6, seed=3)
    assert torch.equal(s.images, again.images) and torch.equal(s.labels, again.labels)
    assert not torch.equal(s.images, sample_images(cifar_test, 6, seed=4).images)
    x = to_unit_float(s.images)
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0.05
    with pytest.raises(ValueError, match="asked for"):
        sample_images(cifar_test, 10**6)
    with pytest.raises(TypeError, match="uint8"):
        to_unit_float(x)
