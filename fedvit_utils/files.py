"""Files a run writes: atomically, so a crash leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], mode: int | None = None) -> Path:
    """Write through `write(fh)` into a temp file beside `path`, fsync, then rename over it.

    The temp file is created 0600 (mkstemp), so secrets are never readable by others, even for a
    moment; `mode` sets the final mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    """Atomically write `data` to `path`."""
    return atomic_write(path, lambda fh: fh.write(data), mode)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write `text` (UTF-8) to `path`."""
    return write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, doc: object, indent: int | None = 1) -> Path:
    """Atomically write a JSON record (results pass between notebooks as files)."""
    return write_text(path, json.dumps(doc, indent=indent, default=str) + "\n")


def save_torch(obj: object, path: str | os.PathLike) -> Path:
    """torch.save `obj` atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())
