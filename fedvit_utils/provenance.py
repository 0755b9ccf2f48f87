"""Where a result came from: the code (git commit, dirty or not), the packages, the data, the profile, the machine.

Every study run writes `provenance.json` into its folder (and into study.json); every training record
(metrics.json) carries the same environment; publishing copies it beside the figures and names profile,
data fingerprint and commit under every published table. `python -m fedvit_utils provenance --run-dir X`
collects it for a run folder made by another process.

The data fingerprint is a SHA-256 over every visible file of each dataset folder the profile reads, in
sorted order: its path relative to the folder, its size and its bytes. Reading 60,000 JPEGs takes seconds,
so the digest is cached (in `paths.cache_dir()`) keyed by the folder's listing of (path, size, mtime): a
re-run only lists the folder, and a changed, added or removed file changes the key and is read again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from functools import cache
from importlib import metadata
from pathlib import Path

from . import paths
from .files import write_json

FILE_NAME = "provenance.json"
# The packages whose versions change results; all others are in the full list and its digest.
KEY_PACKAGES = ("torch", "torchvision", "timm", "numpy", "pillow", "pandas", "scikit-image", "matplotlib",
                "flwr", "ray", "papermill", "ipykernel", "jupyterlab")


def git_state(root: str | os.PathLike = paths.PROJECT_ROOT) -> dict:
    """The checkout's commit and whether tracked or untracked (not ignored) files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changes = git("status", "--porcelain").splitlines()
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "note": "git is not installed: the code version is unknown"}
    except subprocess.CalledProcessError:
        return {"commit": None, "dirty": None, "note": f"{root} is not a git checkout: the code version is unknown"}
    return {"commit": commit, "dirty": bool(changes), "changed_files": len(changes)}


@cache
def packages() -> dict:
    """Exact versions of the installed distributions: the key ones by name, all of them in a list and a digest."""
    versions = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions[name.lower().replace("_", "-")] = dist.version
    everything = sorted(f"{name}=={version}" for name, version in versions.items())
    import torch  # the wheel's local version names its build (2.14.1+cu130 vs +cpu); the metadata does not

    return {"python": platform.python_version(), "torch_build": torch.__version__,
            "key": {name: versions.get(name) for name in KEY_PACKAGES if name in versions},
            "all_sha256": hashlib.sha256("\n".join(everything).encode()).hexdigest(),
            "count": len(everything), "all": everything}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The hardware a result was computed on: CPU model and cores, GPUs, torch's threads."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "cores_usable": usable, "gpus": gpus,
            "torch_threads": torch.get_num_threads(), "platform": platform.platform()}


def environment() -> dict:
    """Code, packages and hardware (what every training record carries; no data, no profile)."""
    pkgs = packages()
    return {"git": git_state(),
            "packages": {k: pkgs[k] for k in ("python", "torch_build", "key", "all_sha256", "count")},
            "hardware": machine()}


# -- data -------------------------------------------------------------------------------------------
def _listing(folder: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of every visible file under `folder`, sorted."""
    entries, todo = [], [("", str(folder))]
    while todo:  # os.scandir: one stat per file, no Path objects (60,000 files in about a second)
        prefix, where = todo.pop()
        with os.scandir(where) as it:
            for entry in it:
                if entry.name.startswith("."):  # hidden entries are not data (as in data.py)
                    continue
                if entry.is_dir():
                    todo.append((prefix + entry.name + "/", entry.path))
                elif entry.is_file():
                    st = entry.stat()
                    entries.append((prefix + entry.name, st.st_size, st.st_mtime_ns))
    return sorted(entries)


def _digest(folder: Path, listing: list[tuple[str, int, int]]) -> str:
    h = hashlib.sha256()
    for rel, size, _ in listing:
        h.update(f"{rel}\0{size}\0".encode())
        with open(folder / rel, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def data_fingerprint(folder: str | os.PathLike) -> dict:
    """SHA-256 over a data folder's files (paths, sizes, bytes), cached by its (path, size, mtime) listing."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        return {"folder": str(folder), "sha256": None, "note": "folder does not exist (yet)"}
    listing = _listing(folder)
    key = hashlib.sha256(json.dumps([str(folder), listing]).encode()).hexdigest()
    cache_file = paths.cache_dir() / "data_fingerprints.json"
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return {"folder": str(folder), "files": len(listing), "sha256": known[key], "cached": True}
    digest = _digest(folder, listing)
    known[key] = digest
    try:
        write_json(cache_file, known, indent=None)
    except OSError:  # a read-only home only costs the next run a re-read
        pass
    return {"folder": str(folder), "files": len(listing), "sha256": digest, "cached": False}


def data_record(profile: object, data_root: str | os.PathLike | None) -> dict[str, dict]:
    """The fingerprint of the folder each of the profile's datasets is read from (as `data.locate_dataset` finds
    it); a dataset that cannot be found is recorded with the reason instead."""
    from .data import DataError, locate_dataset
    from .datasets import dataset_spec

    found = {}
    for name in profile.datasets:
        try:
            source = locate_dataset(name, data_root, profile.download)
        except (DataError, FileNotFoundError) as exc:
            found[name] = {"folder": None, "sha256": None, "note": str(exc)}
            continue
        folder = source.root if source.kind == "imagefolder" else source.root / dataset_spec(name).torchvision.folder
        found[name] = data_fingerprint(folder)
    return found


# -- the whole record -------------------------------------------------------------------------------
def collect(profile: object, data_root: str | os.PathLike | None, when: str = "at the start of the run") -> dict:
    """Everything a result depends on: code, packages (all of them), data fingerprints, profile and seeds, hardware."""
    start = time.monotonic()
    record = {"collected": when, "git": git_state(), "packages": packages(), "data": data_record(profile, data_root),
              "profile": dataclasses.asdict(profile),
              "seeds": {k: getattr(profile, k) for k in ("partition_seed", "training_seed", "key_seed")},
              "hardware": machine(), "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])}
    record["seconds"] = round(time.monotonic() - start, 2)
    return record


def short(record: dict) -> dict:
    """The lines a reader needs beside a result: commit (dirty?), data digests, packages digest, key versions."""
    git = record["git"]
    commit = "unknown" if git["commit"] is None else git["commit"][:12] + (" (dirty)" if git["dirty"] else "")
    return {"commit": commit, "data": {k: (v["sha256"] or "none")[:16] for k, v in record["data"].items()},
            "packages_sha256": record["packages"]["all_sha256"][:16], **record["packages"]["key"]}


def footer(record: dict) -> str:
    """One line naming profile, data fingerprint and commit, for the foot of every published table."""
    s = short(record)
    data = ", ".join(f"{name} {digest}" for name, digest in s["data"].items())
    return (f"Provenance: profile {record['profile']['name']} · data sha256 {data} · commit {s['commit']} · "
            f"packages sha256 {s['packages_sha256']} (torch {record['packages']['torch_build']}) · "
            f"details in {FILE_NAME}")


def write(folder: str | os.PathLike, record: dict) -> Path:
    """Write `record` as <folder>/provenance.json (atomically)."""
    return write_json(Path(folder) / FILE_NAME, record)


def read(folder: str | os.PathLike) -> dict | None:
    """The provenance.json of a run or published folder, or None where there is none."""
    path = Path(folder) / FILE_NAME
    return json.loads(path.read_text()) if path.exists() else None
