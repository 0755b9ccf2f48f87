"""Files a run writes and resumes from: atomic, checksummed, and locked while a run uses its folder.

* Atomic: everything is written to a temp file beside the target, fsynced, then renamed over it, so a
  crash leaves the old file or the new one, never a torn one.
* Checked: files a run resumes from (checkpoints, final weights, the partition) carry a SHA-256 of
  their content and are verified when read; a damaged file raises `DamagedFile`, which names the file
  and what to do. Torch files load with ``weights_only=True``: a crafted checkpoint cannot run code.
* Locked: a training run or a study holds `RunLock` on its folder, so a second run into the same
  folder is refused at start with the PID of the first. The lock is an ``flock``: the kernel drops it
  when its process dies, so a killed run never leaves a stale lock behind; a run that ends removes its
  lock file, so a finished run folder holds results only.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

FORMAT = "fedvit-checked-1"


class DamagedFile(RuntimeError):
    """A file a run resumes from is truncated, corrupted or was edited; the message says what to do."""


class FolderInUse(RuntimeError):
    """Another process holds the run folder's lock."""


RESULT_MODE = 0o644  # results (figures, tables, records, checkpoints): readable by others on a shared machine
SECRET_MODE = 0o600  # key files: the owner only


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], mode: int = RESULT_MODE) -> Path:
    """Write through `write(fh)` into a temp file beside `path`, fsync, then rename over it.

    The temp file is created 0600 (mkstemp), so secrets are never readable by others, even for a
    moment; `mode` sets the final mode (results 0644; secrets pass `SECRET_MODE`). A full disk raises an
    OSError that names the file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except PermissionError as exc:
        raise PermissionError(f"cannot write in {path.parent} ({exc.strerror}): make the folder writable or "
                              f"choose another run folder.") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(exc.errno, f"disk full while writing {path}: free space on that disk and rerun; the "
                                     f"previous version of the file is intact") from exc
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_orphans(folder: str | os.PathLike) -> list[Path]:
    """Delete temp files that a killed writer left in `folder` (call it while holding the folder's lock)."""
    orphans = [p for p in Path(folder).glob(".*.tmp") if p.is_file()]
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans


def write_bytes(path: str | os.PathLike, data: bytes, mode: int = RESULT_MODE) -> Path:
    """Atomically write `data` to `path`."""
    return atomic_write(path, lambda fh: fh.write(data), mode)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write `text` (UTF-8) to `path`."""
    return write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, doc: object, indent: int | None = 1) -> Path:
    """Atomically write a JSON record (results pass between notebooks as files)."""
    return write_text(path, json.dumps(doc, indent=indent, default=str) + "\n")


# -- checked files ----------------------------------------------------------------------------------
def content_digest(obj: object) -> str:
    """SHA-256 of nested dicts, lists, tensors, arrays and scalars (dtype, shape and bytes of tensors)."""
    h = hashlib.sha256()
    # No tensor can exist before torch is imported; looking it up keeps this module (and the key and
    # profile modules that use it) free of the torch import.
    torch = sys.modules.get("torch")

    def feed(x: object) -> None:
        if torch is not None and isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, np.ndarray):
            h.update(f"A{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            h.update(f"D{len(x)}".encode())
            for k in sorted(x, key=repr):
                feed(k)
                feed(x[k])
        elif isinstance(x, list | tuple):
            h.update(f"L{len(x)}".encode())
            for v in x:
                feed(v)
        else:
            h.update(f"S{type(x).__name__}:{x!r};".encode())

    feed(obj)
    return h.hexdigest()


def save_checked(obj: object, path: str | os.PathLike) -> Path:
    """torch.save `obj` atomically, wrapped with the SHA-256 of its content."""
    import torch

    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "sha256": content_digest(obj), "content": obj}, buffer)
    return write_bytes(path, buffer.getvalue())


def load_checked(path: str | os.PathLike, fix: str) -> object:
    """Load what `save_checked` wrote, verifying its checksum; `fix` says what to do if it is damaged."""
    import torch

    path = Path(path)
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated zip, bad pickle, a class weights_only refuses to build
        raise DamagedFile(f"{path} is damaged and cannot be read ({type(exc).__name__}): {fix}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "content" not in doc:
        raise DamagedFile(f"{path} is not a checked fedvit file (no checksum): {fix}")
    if content_digest(doc["content"]) != doc.get("sha256"):
        raise DamagedFile(f"{path} fails its checksum (corrupted or edited): {fix}")
    return doc["content"]


def write_checked_json(path: str | os.PathLike, doc: object, indent: int | None = None) -> Path:
    """Atomically write JSON with the SHA-256 of its canonical form."""
    digest = hashlib.sha256(_canonical(doc).encode()).hexdigest()
    return write_json(path, {"format": FORMAT, "sha256": digest, "content": doc}, indent=indent)


def read_checked_json(path: str | os.PathLike, fix: str) -> object:
    """Read what `write_checked_json` wrote, verifying its checksum; `fix` says what to do if it is damaged."""
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes().decode())
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DamagedFile(f"{path} is damaged and cannot be read ({type(exc).__name__}): {fix}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "content" not in doc:
        raise DamagedFile(f"{path} is not a checked fedvit file (no checksum): {fix}")
    if hashlib.sha256(_canonical(doc["content"]).encode()).hexdigest() != doc.get("sha256"):
        raise DamagedFile(f"{path} fails its checksum (corrupted or edited): {fix}")
    return doc["content"]


def _canonical(doc: object) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)


# -- locking ----------------------------------------------------------------------------------------
class RunLock:
    """Exclusive lock on a folder (``flock`` on <folder>/.<name>.lock, holding our PID) for a `with` block."""

    def __init__(self, folder: str | os.PathLike, name: str = "run") -> None:
        self.folder = Path(folder)
        self.path = self.folder / f".{name}.lock"
        self._fh = None

    def __enter__(self) -> RunLock:
        while True:  # a holder unlinks the file as it releases; a lock on an unlinked file is retried
            fh = self._acquire()
            try:
                same = os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            fh.close()
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def _acquire(self):
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")  # held open for the life of the lock
        except OSError as exc:
            raise PermissionError(f"run folder {self.folder} is not writable ({exc.strerror}): make it writable "
                                  f"or choose another run folder.") from exc
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise FolderInUse(f"{self.folder} is in use by another run (PID {holder}): wait for it to finish, or "
                              f"use another run folder.") from None
        return fh

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self.path.unlink(missing_ok=True)  # while still held: a waiter that opened it retries (see __enter__)
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
