"""One study run folder: each artefact has one writer (a notebook), and later notebooks only read it.

    01_data_partitioning          writes  <dataset>/partition.json
    02_federated_training         writes  <dataset>/federated/, <dataset>/centralized/
    03_keys_and_model_encryption  writes  keys/<dataset>/client_NN.key, <dataset>/encryption_check.json
    05_accuracy_tables            writes  table1.json and figures/table1*
    (every notebook writes its own figures under figures/)

A reader that finds its input missing raises `MissingStep`, naming the notebook to run first. The
paper's step 3 (Fig. 1) lives here too: after the last integration every client draws an independent
key (Sec. 3.2) and checks Eq. (14) on its own test split. Keys go to the run's owner-only keys/ folder
(git-ignored) and are never overwritten; only fingerprints are ever shown or recorded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from .. import paths
from ..data import ImageData, Preprocess, check_same_classes, load_dataset, locate_dataset, sample_images
from ..devices import hardware, prepare_model, resolve_device
from ..evaluation import Predict, accuracy, exact_predictor
from ..federated import checkpoints
from ..federated.centralized import run_centralized
from ..federated.server import run_federated
from ..files import RunLock, remove_orphans, write_json
from ..keys import SecretKey, SecretKeyError, client_keys, key_kind
from ..models import build_model, input_size, patch_size, profile_geometry, require_pretrained_weights
from ..partition import FederatedDataset, client_splits, load_splits, save_splits, split_settings
from ..profiles import Profile, ProfileError, default_profile, load_profile
from . import reports

PARTITION = "01_data_partitioning"
TRAINING = "02_federated_training"
KEYS = "03_keys_and_model_encryption"
TABLES = "05_accuracy_tables"
DATA_NOTE = "CIFAR-10 lossy JPEG copy (q75), not the original"
VARIANT_MARK = "--"  # figures/<name>--<parameter>-<value>.png: made with a non-default figure parameter
FRONTEND_ENV = ("JPY_SESSION_NAME", "VSCODE_PID")  # set for kernels of Jupyter Server (JupyterLab) and VS Code


def frontend_attached() -> bool:
    """Whether this kernel serves an interactive front end (JupyterLab, Notebook, VS Code), not papermill or nbval."""
    return any(os.environ.get(name) for name in FRONTEND_ENV)


class MissingStep(FileNotFoundError):
    """An input of this step is missing: the message names the notebook (or command) that writes it."""


def _missing(path: Path, notebook: str) -> MissingStep:
    return MissingStep(f"no {path}: run notebook {notebook} first (or `make study`, which runs them in order).")


@dataclass
class StudyRun:
    """A study's settings and run folder, with the one writer and the readers of each artefact."""

    profile: Profile
    folder: Path
    data_root: Path | None
    hardware: str
    variant: str = ""  # suffix of figure and table names made with non-default figure parameters (parameters.py)
    _checked: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, profile: str | os.PathLike | Profile | None = None, run_dir: str | os.PathLike | None = None,
             data_root: str | os.PathLike | None = None, partition_seed: int | None = None,
             training_seed: int | None = None, key_seed: int | None = None) -> StudyRun:
        """Resolve a notebook's parameters: the profile (None: `default_profile()`; seeds overridden where
        given), run folder, data. Creates nothing: a bad profile or run folder fails before any file is written."""
        seeds = dict(partition_seed=partition_seed, training_seed=training_seed, key_seed=key_seed)
        given = {k: v for k, v in seeds.items() if v is not None}
        if isinstance(profile, Profile):
            settings = replace(profile, **given)
        else:
            settings = load_profile(default_profile() if profile is None else profile, **given)
        folder = paths.run_dir(settings.name, run_dir).resolve()
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"run folder {folder} is a file, not a folder: pass another run_dir "
                                     f"(profile {settings.name!r} defaults to {paths.run_dir(settings.name)}).")
        return cls(settings, folder, paths.data_root(data_root), hardware())

    # -- places -------------------------------------------------------------------------------------
    def dataset_dir(self, dataset: str) -> Path:
        """<run>/<dataset>: partition, trained models and the encryption check of one dataset."""
        return self.folder / dataset

    @property
    def figures(self) -> Path:
        """<run>/figures: every figure and table of the run."""
        return paths.figures_dir(self.folder)

    @property
    def device(self) -> torch.device:
        """The device the profile asks for ("auto": CUDA, then MPS, then CPU)."""
        return resolve_device(self.profile.device)

    def seeds(self) -> dict[str, int]:
        """The seeds recorded with every result (keys are recorded by fingerprint only)."""
        profile = self.profile
        return {"partition_seed": profile.partition_seed, "training_seed": profile.training_seed}

    # -- before any work ----------------------------------------------------------------------------
    def preflight(self) -> None:
        """Refuse, before any work, a run whose later steps would fail: data, model, weights, keys, folder.

        Every dataset must be found with both splits, the model must build, pretrained weights must be
        reachable (or given as a file), the clients' keys must be drawable for the model's geometry, and
        the run folder must be writable. Runs once per StudyRun; training and the partition call it.
        """
        if self._checked:
            return
        profile = self.profile
        for name in profile.datasets:
            locate_dataset(name, self.data_root, profile.download)
        image_size, block = profile_geometry(profile)
        if profile.checkpoint_path is not None and not Path(profile.checkpoint_path).expanduser().is_file():
            raise FileNotFoundError(f"profile {profile.name!r}: checkpoint_path {profile.checkpoint_path} does not "
                                    f"exist; give the weights file saved from {profile.model!r}.")
        if profile.pretrained and profile.checkpoint_path is None:
            require_pretrained_weights(profile.model)
        try:  # only some kinds' draws can be refused (conditioning); for the others one key checks the geometry
            clients = profile.num_clients if key_kind(profile.key_kind).draws_can_be_refused else 1
            client_keys(clients, image_size, block, 3, profile.key_kind, profile.key_seed)
        except SecretKeyError as exc:
            raise ProfileError(f"profile {profile.name!r}: the clients' {profile.key_kind} keys for {image_size} "
                               f"images with block size {block} cannot be drawn: {exc}") from exc
        with RunLock(self.folder, "preflight"):  # the run folder exists and is writable
            pass
        self._checked = True

    # -- 01: data and partition ---------------------------------------------------------------------
    def _load(self, dataset: str, split: str) -> ImageData:
        profile = self.profile
        return load_dataset(dataset, split, self.data_root, profile.max_per_class, profile.download)

    def _load_both(self, dataset: str) -> tuple[ImageData, ImageData]:
        train, test = self._load(dataset, "train"), self._load(dataset, "test")
        check_same_classes(train, test)
        return train, test

    def write_partition(self, dataset: str, restart: bool = False) -> FederatedDataset:
        """Notebook 01: load the data and record the clients' splits (kept if recorded alike; `restart` redraws)."""
        self.preflight()
        train, test = self._load_both(dataset)
        path = self.dataset_dir(dataset) / "partition.json"
        settings = json.loads(json.dumps(split_settings(self.profile, train.source)))
        with RunLock(self.dataset_dir(dataset), "partition"):
            remove_orphans(self.dataset_dir(dataset))
            if path.exists() and not restart:
                splits = load_splits(path)
                if splits.settings != settings:
                    raise ValueError(f"{path} was made with other settings {splits.settings}; use a new run folder "
                                     f"for {settings}, or start over with --restart.")
            else:
                splits = client_splits(self.profile, train.labels.numpy(), test.labels.numpy(), len(train.classes),
                                       train.source)
                save_splits(path, splits, train.labels.numpy(), test.labels.numpy())
        return FederatedDataset(dataset, train, test, splits)

    def load_data(self, dataset: str) -> FederatedDataset:
        """The data with the clients' splits recorded by notebook 01."""
        path = self.dataset_dir(dataset) / "partition.json"
        if not path.exists():
            raise _missing(path, PARTITION)
        splits = load_splits(path)
        train, test = self._load_both(dataset)
        expected = json.loads(json.dumps(split_settings(self.profile, train.source)))
        if splits.settings != expected:
            changed = sorted(k for k in expected if splits.settings.get(k) != expected[k])
            raise ValueError(f"{path} was made with other settings ({changed}): rerun notebook {PARTITION} "
                             f"into a new run folder, or open this run with its own profile.")
        return FederatedDataset(dataset, train, test, splits)

    # -- 02: training -------------------------------------------------------------------------------
    def train(self, data: FederatedDataset, progress: bool | None = None, resume: bool = True) -> tuple[Path, Path]:
        """Notebook 02: the federated run and the centralized baseline (each resumes from its checkpoint);
        `progress` None shows bars only where a front end is attached."""
        self.preflight()
        progress = frontend_attached() if progress is None else progress
        out = self.dataset_dir(data.name)
        federated = run_federated(self.profile, data, out / "federated", self.device, progress, resume)
        centralized = run_centralized(self.profile, data, out / "centralized", self.device, progress, resume)
        return federated, centralized

    def trained_model(self, dataset: str, which: str = "federated") -> nn.Module:
        """The final weights of notebook 02 ('federated': the integrated model; 'centralized': the baseline)."""
        if which not in ("federated", "centralized"):
            raise ValueError(f"which must be 'federated' or 'centralized', not {which!r}.")
        folder = self.dataset_dir(dataset) / which
        if not (folder / checkpoints.MODEL).exists():
            raise _missing(folder / checkpoints.MODEL, TRAINING)
        partition = self.dataset_dir(dataset) / "partition.json"
        if not partition.exists():
            raise _missing(partition, PARTITION)
        model = build_model(self.profile, load_splits(partition).num_classes)
        model.load_state_dict(checkpoints.load_model_state(folder))
        return prepare_model(model, self.device).eval()

    def history(self, dataset: str, which: str = "federated") -> pd.DataFrame:
        """The per-round records of notebook 02."""
        folder = self.dataset_dir(dataset) / which
        if not (folder / checkpoints.HISTORY).exists():
            raise _missing(folder / checkpoints.HISTORY, TRAINING)
        return checkpoints.load_history(folder)

    # -- 03: keys and the Eq. 14 check --------------------------------------------------------------
    def _key_files(self, dataset: str) -> list[Path]:
        folder = paths.keys_dir(self.folder, dataset)
        return [folder / f"client_{c:02d}.key" for c in range(self.profile.num_clients)]

    def create_keys(self, dataset: str, model: nn.Module) -> list[SecretKey]:
        """Notebook 03: one key per client, drawn and saved once; an existing set is loaded, never replaced."""
        files = self._key_files(dataset)
        folder = paths.private_dir(paths.private_dir(self.folder / "keys") / dataset)
        with RunLock(folder, "keys"):
            remove_orphans(folder)
            return self._create_keys(files, input_size(model), patch_size(model))

    def _create_keys(self, files: list[Path], image_size: tuple[int, int], block: int) -> list[SecretKey]:
        profile = self.profile
        if any(f.exists() for f in files):
            keys = self._load_keys(files)  # refuses an incomplete set
            wanted = (profile.key_kind, image_size, block)
            if (keys[0].kind, keys[0].image_size, keys[0].patch_size) != wanted:
                raise ValueError(
                    f"the keys in {files[0].parent} are {keys[0].kind} keys for {keys[0].image_size} images with "
                    f"block size {keys[0].patch_size}, but this profile asks for {wanted}: key files are never "
                    f"replaced. Use a new run folder, or move that folder away yourself if nothing encrypted "
                    f"with those keys needs to be decrypted again."
                )
            return keys
        keys = client_keys(profile.num_clients, image_size, block, 3, profile.key_kind, profile.key_seed)
        for key, f in zip(keys, files, strict=True):
            key.save(f)
        return keys

    def keys(self, dataset: str) -> list[SecretKey]:
        """The clients' keys written by notebook 03 (all of them, or an error naming what is missing)."""
        return self._load_keys(self._key_files(dataset))

    def _load_keys(self, files: list[Path]) -> list[SecretKey]:
        missing = [f for f in files if not f.exists()]
        if len(missing) == len(files):
            raise _missing(files[0].parent, KEYS)
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(files)} key files are missing in {files[0].parent} "
                f"({', '.join(f.name for f in missing[:3])}...): key files are never replaced; restore them from "
                f"a backup, or use a new run folder."
            )
        return [SecretKey.load(f) for f in files]

    def predictor(self, model: nn.Module) -> Predict:
        """Exact float32 predictions of `model` with its own preprocessing on the profile's device."""
        return exact_predictor(Preprocess.for_model(model), self.profile.eval_batch_size, self.device)

    def write_encryption_check(self, dataset: str, check: pd.DataFrame, key_seed: int | str | None = None) -> Path:
        """Notebook 03: record the per-client Eq. (14) check; `key_seed` names where the keys came from when
        that is not the profile's key_seed (the Flower app: its own demo seed, or "OS entropy")."""
        return write_json(self.dataset_dir(dataset) / "encryption_check.json", {
            "profile": self.profile.name, "dataset": dataset, **self.seeds(), "key_kind": self.profile.key_kind,
            "key_seed": self.profile.key_seed if key_seed is None else key_seed,
            "clients": check.to_dict(orient="records")})

    def encryption_check(self, dataset: str) -> pd.DataFrame:
        """The per-client Eq. (14) check written by notebook 03."""
        path = self.dataset_dir(dataset) / "encryption_check.json"
        if not path.exists():
            raise _missing(path, KEYS)
        return pd.DataFrame(json.loads(path.read_text())["clients"])

    def baseline_accuracy(self, data: FederatedDataset) -> float:
        """Accuracy of the centralized model on plain images of all clients' test splits."""
        model = self.trained_model(data.name, "centralized")
        idx = torch.as_tensor(data.all_client_test_indices())
        return accuracy(self.predictor(model)(model, data.test.images[idx]), data.test.labels[idx])

    # -- labels and output --------------------------------------------------------------------------
    def data_label(self, data: ImageData | FederatedDataset, dataset: str = "cifar10") -> str:
        """What the data is, for labels (the offline copy says it is lossy); `dataset` names an ImageData's set."""
        images = data.train if isinstance(data, FederatedDataset) else data
        name = data.name if isinstance(data, FederatedDataset) else dataset
        return DATA_NOTE if "ImageFolder" in images.source and name == "cifar10" else images.source

    def label(self, data: ImageData | FederatedDataset | None = None, dataset: str = "cifar10") -> str:
        """One line naming profile, data and hardware, for every figure and table."""
        if data is None:
            return f"profile {self.profile.name} · {self.hardware}"
        name = data.name if isinstance(data, FederatedDataset) else dataset
        return f"profile {self.profile.name} · {name} ({self.data_label(data, name)}) · {self.hardware}"

    def save_figure(self, fig: Figure, name: str) -> reports.InlineFigure:
        """Write `fig` to figures/<name>.png; the result shows that PNG inline in any notebook front end."""
        return reports.InlineFigure.saved(fig, self.figures, name + self.variant)

    def save_table(self, table: pd.DataFrame, name: str, caption: str | None = None) -> pd.DataFrame:
        """Write `table` to figures/<name>.csv and .md and return it."""
        reports.save_table(table, self.figures, name + self.variant, caption)
        return table

    def write_record(self, name: str, doc: dict) -> Path:
        """Write <run>/<name>.json (profile, seeds and hardware added)."""
        return write_json(self.folder / f"{name}.json", {"profile": self.profile.name, "hardware": self.hardware,
                                                          **self.seeds(), **doc})

    def sample(self, split: str, n: int, seed: int, dataset: str = "cifar10") -> ImageData:
        """`n` random images of a dataset's split (for pictures and attacks; no partition needed)."""
        return sample_images(load_dataset(dataset, split, self.data_root, self.profile.max_per_class,
                                          self.profile.download), n, seed)



def read_table1_records(folders: list[str | os.PathLike]) -> list[dict]:
    """Each run folder's Table 1 record (notebook 05) and per-dataset Eq. 14 checks (notebook 03)."""
    records = []
    for folder in map(Path, folders):
        path = folder / "table1.json"
        if not path.exists():
            raise _missing(path, TABLES)
        table = json.loads(path.read_text())
        checks = {}
        for dataset in [p.parent.name for p in sorted(folder.glob("*/encryption_check.json"))]:
            checks[dataset] = json.loads((folder / dataset / "encryption_check.json").read_text())
        records.append({"folder": str(folder), "table1": table, "checks": checks})
    profiles = {r["table1"]["profile"] for r in records}
    if len(profiles) != 1:
        raise ValueError(f"the runs {[r['folder'] for r in records]} belong to different profiles {sorted(profiles)}; "
                         f"a spread compares seeds of one profile.")
    return records
