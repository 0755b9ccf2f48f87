"""Shared fixtures: the data folder comes from the project's one data setting (fedvit_utils.paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedvit_utils import paths


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The CIFAR-10 ImageFolder copy the data setting names (argument, $FEDVIT_DATA, or the project default)."""
    root = paths.data_root()
    if root is None or not (root / "test").is_dir():
        pytest.fail(f"no CIFAR-10 ImageFolder tree at {root}: set {paths.DATA_ENV}=/path/to/cifar10-jpeg "
                    f"or put the offline copy where pyproject.toml's [tool.fedvit] data_root points.")
    return root


@pytest.fixture(scope="session")
def cifar_test(cifar_root):
    """The CIFAR-10 test split of the data folder, decoded once per test session."""
    from fedvit_utils.data import load_dataset

    return load_dataset("cifar10", "test", cifar_root)
