"""The model store: one folder holding every client's uploaded encrypted model, written atomically, verified when read.

Layout under the store folder:

* ``blobs/<sha256>.safetensors`` — an upload's bytes exactly as checked (`wire.decode_model`), named by their SHA-256;
* ``models/<id>.json`` — the model id's record (checked JSON, `fedvit_utils.files`): the blob's SHA-256, size and
  architecture. Writing the record is the commit point: a crash before it leaves the old model in place.

A model is loaded only when its blob's SHA-256 matches the record, so a damaged file is refused, never served.
A restarted server reads the same folder and serves the same models.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import torch

from fedvit_utils.files import (
    DamagedFile,
    FolderInUse,
    RunLock,
    read_checked_json,
    remove_orphans,
    write_bytes,
    write_checked_json,
)

from .wire import MAX_MODEL_BYTES, Architecture, BadRequest, decode_model

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LOCK_WAIT_S = 10.0


class UnknownModel(LookupError):
    """No model is stored under this id (HTTP 404)."""

    status = 404


class ModelExists(BadRequest):
    """An upload would replace a stored model without asking to (HTTP 409)."""

    status = 409


def check_model_id(model_id: str) -> str:
    """Refuse ids that are not 1-64 letters, digits, '_', '.', '-' (starting with a letter or digit)."""
    if not isinstance(model_id, str) or not ID_PATTERN.fullmatch(model_id) or ".." in model_id:
        raise BadRequest(f"model id {model_id!r} is not allowed: use 1 to 64 letters, digits, '_', '.' or '-', "
                         f"starting with a letter or digit.")
    return model_id


class ModelStore:
    """The folder of uploaded models (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.models = self.root / "models"
        self.blobs = self.root / "blobs"
        self.models.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)

    def ids(self) -> list[str]:
        """The stored model ids, sorted."""
        return sorted(p.stem for p in self.models.glob("*.json") if ID_PATTERN.fullmatch(p.stem))

    def _record_path(self, model_id: str) -> Path:
        return self.models / f"{check_model_id(model_id)}.json"

    def record(self, model_id: str) -> dict:
        """The id's record (blob SHA-256, size, architecture JSON); `UnknownModel` if there is none."""
        try:
            return read_checked_json(self._record_path(model_id), f"upload model {model_id!r} again with replace.")
        except FileNotFoundError:
            raise UnknownModel(f"no model {model_id!r} on this server: upload it first (POST /v1/models/"
                               f"{model_id}).") from None

    def architecture(self, model_id: str) -> Architecture:
        """The stored model's architecture."""
        return Architecture.from_json(self.record(model_id)["architecture"])

    def put(self, model_id: str, body: bytes, replace: bool = False, max_bytes: int = MAX_MODEL_BYTES) -> dict:
        """Check an upload body and store it under `model_id`; `ModelExists` unless `replace` for a taken id."""
        check_model_id(model_id)
        architecture, _ = decode_model(body, max_bytes)  # refused bodies never reach the folder
        digest = hashlib.sha256(body).hexdigest()
        record = {"id": model_id, "sha256": digest, "bytes": len(body), "architecture": architecture.to_json()}
        with self._lock():
            remove_orphans(self.models)
            remove_orphans(self.blobs)
            path = self._record_path(model_id)
            old = self.record(model_id) if path.exists() else None
            if old is not None and not replace:
                raise ModelExists(f"model {model_id!r} is already stored: ask to replace it (?replace=true), or "
                                  f"choose another id.")
            blob = self.blobs / f"{digest}.safetensors"
            if not blob.exists():
                write_bytes(blob, body)
            write_checked_json(path, record)  # the commit point
            if old is not None and old["sha256"] != digest and not self._referenced(old["sha256"]):
                (self.blobs / f"{old['sha256']}.safetensors").unlink(missing_ok=True)
        return record

    def load(self, model_id: str) -> tuple[Architecture, dict[str, torch.Tensor]]:
        """The stored model's architecture and tensors, after its blob's SHA-256 matched the record."""
        record = self.record(model_id)
        blob = self.blobs / f"{record['sha256']}.safetensors"
        fix = f"upload model {model_id!r} again with replace."
        try:
            body = blob.read_bytes()
        except FileNotFoundError:
            raise DamagedFile(f"{blob} (model {model_id!r}) is missing: {fix}") from None
        if hashlib.sha256(body).hexdigest() != record["sha256"]:
            raise DamagedFile(f"{blob} (model {model_id!r}) fails its checksum (corrupted or edited): {fix}")
        return decode_model(body, max_bytes=len(body))  # its size was checked when it was uploaded

    def _referenced(self, digest: str) -> bool:
        return any(self.record(i)["sha256"] == digest for i in self.ids())

    def _lock(self) -> RunLock:
        """The store's write lock, waited for (another replica may be writing) up to LOCK_WAIT_S."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            lock = RunLock(self.root, "store")
            try:
                lock.__enter__()
                return _Held(lock)
            except FolderInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


class _Held:
    """A RunLock already entered, released by `with`."""

    def __init__(self, lock: RunLock) -> None:
        self.lock = lock

    def __enter__(self) -> RunLock:
        return self.lock

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__(*exc)
