"""Shared fixtures: the data folder comes from the project's one data setting (fedvit_utils.paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedvit_utils import paths

# Whole files of the slow tier (`make test-fast` runs `-m "not slow"`): notebooks, Flower, the paper miniature.
SLOW_FILES = {"test_notebooks.py", "test_flower.py", "test_paper_miniature.py"}


def pytest_collection_modifyitems(config, items):
    """Mark every test of SLOW_FILES `slow`; single slow tests carry @pytest.mark.slow themselves."""
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test: smoke models are tiny, and two threads beside another torch job spin-wait.
    A test file that trains opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
