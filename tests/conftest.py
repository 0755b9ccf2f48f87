"""Shared fixtures: the data folder comes from the FEDVIT_DATA setting (the Makefile sets it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The CIFAR-10 ImageFolder copy named by $FEDVIT_DATA (skips with the reason when unset)."""
    root = os.environ.get("FEDVIT_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("set FEDVIT_DATA to a CIFAR-10 ImageFolder directory (make test does this)")
    return Path(root)
