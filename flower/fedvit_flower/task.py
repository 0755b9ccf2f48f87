"""What the Flower server and its clients share: run settings, a node's data and model, the client's steps.

Nagamori & Kiya, Sec. 2.1 and 4.1: every client trains the global ViT on its own split (SGD lr 1e-3,
momentum 0.9, batch 8, one local epoch per round) and the server integrates the updates with FedAvg;
after the last round each client encrypts the integrated model (Eq. 3, 8) and its own test images
(Eq. 9-13) with its own key and checks Eq. 14. Everything substantial is fedvit_utils' own code, so a
profile name means the same run here as in the in-process engine (`fedvit_utils.federated.server`):
the same partition (by partition id), model initialisation, local training and seeds, and FedAvg.

No Flower import here: the ServerApp and ClientApp modules translate between Flower's records and this.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from fedvit_utils import paths
from fedvit_utils.data import NUM_CLASSES, ImageData, check_same_classes, load_dataset
from fedvit_utils.devices import resolve_device
from fedvit_utils.evaluation import exact_predictor, verify_encryption
from fedvit_utils.federated.client import LocalTraining, model_and_trainer
from fedvit_utils.federated.server import metrics_on
from fedvit_utils.keys import SecretKey, generate_key, key_of_client
from fedvit_utils.models import input_size, patch_size
from fedvit_utils.partition import FederatedDataset, client_splits
from fedvit_utils.profiles import Profile, ProfileError, load_profile

# The run config's defaults, as in flower/pyproject.toml [tool.flwr.app.config] (Flower's Python simulation
# API hands the ServerApp an empty run config, so the server falls back on these).
DEFAULTS: dict[str, object] = {
    "profile": "smoke", "overrides": "", "dataset": "", "run-dir": "", "restart": False, "key-seed": -1,
    "torch-threads": 0, "round-timeout": 3600.0, "wait-nodes-timeout": 300.0, "poll-interval": 0.1,
}


@dataclass
class Settings:
    """The server's reading of the run config: the profile (with overrides) and how to run it."""

    profile: Profile
    dataset: str
    run_dir: Path
    restart: bool
    key_seed: int | None
    torch_threads: int
    round_timeout: float
    wait_nodes_timeout: float
    poll_interval: float

    @property
    def num_classes(self) -> int:
        """Classes of the dataset (the server builds the initial model without seeing any data)."""
        return NUM_CLASSES[self.dataset]


def parse_overrides(text: str) -> dict:
    """'num_clients=3 rounds=2' -> {'num_clients': 3, 'rounds': 2}; values are read as YAML scalars."""
    out = {}
    for item in shlex.split(text or ""):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ProfileError(f"override {item!r} is not name=value (e.g. overrides='num_clients=3 rounds=2').")
        out[name.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def read_settings(run_config: dict) -> Settings:
    """Settings from Flower's run config (missing keys take DEFAULTS); refuses what this app cannot run."""
    cfg = {**DEFAULTS, **dict(run_config)}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown run-config keys {sorted(unknown)}; the app knows {sorted(DEFAULTS)}.")
    profile = load_profile(str(cfg["profile"]), **parse_overrides(str(cfg["overrides"])))
    if profile.aggregation != "fedavg":
        raise ProfileError(f"profile {profile.name!r}: aggregation={profile.aggregation!r}; the Flower app runs "
                           f"FedAvg (the paper's integration). Run FedSGD with the in-process engine.")
    dataset = str(cfg["dataset"]) or profile.datasets[0]
    if dataset not in profile.datasets:
        raise ProfileError(f"dataset {dataset!r} is not one of profile {profile.name!r}'s {profile.datasets}.")
    key_seed = int(cfg["key-seed"])
    run_dir = paths.run_dir(f"flower-{profile.name}", str(cfg["run-dir"]) or None).resolve()
    return Settings(profile, dataset, run_dir, bool(cfg["restart"]), None if key_seed < 0 else key_seed,
                    int(cfg["torch-threads"]), float(cfg["round-timeout"]), float(cfg["wait-nodes-timeout"]),
                    float(cfg["poll-interval"]))


def pack(state: dict[str, torch.Tensor]) -> tuple[dict[str, np.ndarray], str]:
    """A state dict as one flat array per dtype plus its layout (JSON): values unchanged, bit for bit.

    Flower moves every array of a message as its own object, several HTTP requests per object and hop
    (server -> SuperLink -> SuperNode -> ClientApp and back), so a ViT's 80-150 tensors cost seconds per
    round in deployment; one array per dtype costs a handful.
    """
    groups: dict[str, list[np.ndarray]] = {}
    layout = []
    for name, tensor in state.items():
        array = tensor.detach().cpu().contiguous().numpy()
        groups.setdefault(array.dtype.str, []).append(array.reshape(-1))
        layout.append([name, array.dtype.str, list(array.shape)])
    return {dtype: np.concatenate(parts) for dtype, parts in groups.items()}, json.dumps(layout)


def unpack(arrays: dict[str, np.ndarray], layout: str) -> dict[str, torch.Tensor]:
    """The state dict `pack` flattened (each tensor a copy, in the original order)."""
    offsets = dict.fromkeys(arrays, 0)
    state = {}
    for name, dtype, shape in json.loads(layout):
        size = int(np.prod(shape, dtype=np.int64))
        flat = arrays[dtype][offsets[dtype] : offsets[dtype] + size]
        offsets[dtype] += size
        state[name] = torch.from_numpy(flat.reshape(shape).copy())
    if any(offsets[d] != len(a) for d, a in arrays.items()):
        raise ValueError("packed arrays and their layout disagree: the sender's model differs from this one.")
    return state


def profile_json(profile: Profile) -> str:
    """The whole profile as JSON: the server sends it, so every node trains with exactly its settings."""
    return json.dumps(profile.to_dict(), sort_keys=True)


def profile_from_json(text: str) -> Profile:
    """The profile a server sent; pretrained weights are not loaded on a node (the server sends the weights)."""
    doc = json.loads(text)
    return dataclasses.replace(Profile(**doc), pretrained=False, checkpoint_path=None, download=False)


# -- a node ----------------------------------------------------------------------------------------------
_DATA: dict[tuple, FederatedDataset] = {}  # per process: decoded once, whatever partition the process serves
_NODES: dict[tuple, Node] = {}
_MODELS: dict[tuple, tuple[torch.nn.Module, LocalTraining]] = {}


def node_data(profile: Profile, dataset: str, data_root: str | None) -> FederatedDataset:
    """The dataset and the profile's client splits, decoded once per process (partition.client_splits)."""
    key = (dataset, str(data_root), profile.max_per_class, json.dumps(dataclasses.asdict(profile), sort_keys=True))
    if key not in _DATA:
        train = load_dataset(dataset, "train", data_root, profile.max_per_class, profile.download)
        test = load_dataset(dataset, "test", data_root, profile.max_per_class, profile.download)
        check_same_classes(train, test)
        splits = client_splits(profile, train.labels.numpy(), test.labels.numpy(), len(train.classes), train.source)
        _DATA.clear()  # one dataset per process at a time
        _DATA[key] = FederatedDataset(dataset, train, test, splits)
    return _DATA[key]


@dataclass
class Node:
    """One client on its node: its partition of the data, the model object and how it trains."""

    profile: Profile
    dataset: str
    client: int  # partition id
    train: ImageData
    test: ImageData
    model: torch.nn.Module
    trainer: LocalTraining
    setup_seconds: float


def node(profile_text: str, dataset: str, client: int, data_root: str | None, torch_threads: int = 0) -> Node:
    """This process's state for partition `client` (built on first use, then reused every round)."""
    key = (profile_text, dataset, client, str(data_root))
    if key in _NODES:
        return _NODES[key]
    tic = time.perf_counter()
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    profile = profile_from_json(profile_text)
    if not 0 <= client < profile.num_clients:
        raise ValueError(f"partition-id {client} is outside 0..{profile.num_clients - 1} (profile {profile.name!r} "
                         f"has num_clients={profile.num_clients}): give each SuperNode its own id in that range.")
    data = node_data(profile, dataset, data_root)
    test_idx = torch.as_tensor(data.splits.test[client], dtype=torch.long)
    for old in [k for k in _NODES if k[:2] != key[:2]]:  # another run's partitions: let their model go
        del _NODES[old]
    model, trainer = node_model(profile, profile_text, dataset, data.num_classes)
    state = Node(profile, dataset, client, data.client_train(client), data.test.subset(test_idx), model, trainer, 0.0)
    state.setup_seconds = time.perf_counter() - tic
    _NODES[key] = state
    return state


def node_model(profile: Profile, profile_text: str, dataset: str, num_classes: int
               ) -> tuple[torch.nn.Module, LocalTraining]:
    """One model object and trainer per process, shared by every partition it serves (a simulation actor
    serves many): each step loads the weights it starts from (train_round, encryption_step) before use."""
    key = (profile_text, dataset)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = model_and_trainer(profile, num_classes, resolve_device(profile.device))
    return _MODELS[key]


def train_round(state: Node, global_state: dict, round_index: int, train: bool, evaluate: bool
                ) -> tuple[dict | None, dict]:
    """One round on a client: score the incoming integrated model, then train from it (FedAvg ClientUpdate).

    Returns the new weights (None if the client only evaluates) and flat metrics for the server's records.
    Seeds and optimizer are LocalTraining.fit's, so the update equals the in-process engine's bit for bit.
    """
    p, out, start = state.profile, {"client": state.client, "round": round_index}, time.perf_counter()
    if evaluate:  # the model after round `round_index` - 1, on this client's own test split
        tic = time.perf_counter()
        state.model.load_state_dict(global_state)
        m = metrics_on(state.trainer, state.model, state.test.images, state.test.labels, p.eval_batch_size)
        out.update({f"integrated-{k}": v for k, v in m.items()}, **{"evaluate-seconds": time.perf_counter() - tic})
    if not train:
        out["work-seconds"] = time.perf_counter() - start
        return None, out
    tic = time.perf_counter()
    update = state.trainer.fit(state.model, global_state, state.train, round_index, state.client)
    out.update({"train-seconds": time.perf_counter() - tic, "num-examples": update.num_examples,
                "train-loss": update.metrics["loss"], "train-accuracy": update.metrics["accuracy"]})
    if p.eval_local:  # the model object still holds this client's trained weights
        m = metrics_on(state.trainer, state.model, state.test.images, state.test.labels, p.eval_batch_size)
        out.update({f"local-{k}": v for k, v in m.items()})
    out["work-seconds"] = time.perf_counter() - start
    return update.state, out


# -- the paper's step 3, on the client -------------------------------------------------------------------
def client_key(state: Node, key_seed: int | None, keys_dir: str | None) -> tuple[SecretKey, bool]:
    """This client's key: loaded from its keys folder if one is there, else drawn (OS entropy unless a demo seed).

    A drawn key is saved owner-only into `keys_dir` when one is given (never over an existing file), so
    the client can decrypt or encrypt later; without a folder it lives only in this process's memory.
    """
    p = state.profile
    size, block = input_size(state.model), patch_size(state.model)
    path = Path(keys_dir) / state.dataset / f"client_{state.client:02d}.key" if keys_dir else None
    if path is not None and path.exists():
        key = SecretKey.load(path)
        if (key.kind, key.image_size, key.patch_size) != (p.key_kind, size, block):
            raise ValueError(f"{path} holds a {key.kind} key for {key.image_size} images with block {key.patch_size}, "
                             f"not the {(p.key_kind, size, block)} this run needs; key files are never replaced: "
                             f"give the node another keys-dir.")
        return key, True
    if key_seed is None:
        key = generate_key(size, block, 3, p.key_kind, seed=None)
    else:  # the study's demo keys: client i gets the i-th child seed, as in notebook 03
        key = key_of_client(state.client, p.num_clients, size, block, 3, p.key_kind, seed=key_seed)
    if path is not None:
        paths.private_dir(path.parent)
        key.save(path)
        return key, True
    return key, False


def encryption_step(state: Node, global_state: dict, key_seed: int | None, keys_dir: str | None) -> dict:
    """Encrypt the integrated model and this client's test images with its own key and check Eq. 14.

    Returns only what may leave the client: plain and encrypted accuracy, how many predictions are
    identical, the number of images and the key's public fingerprint. Key and encrypted model stay here.
    """
    tic = time.perf_counter()
    state.model.load_state_dict(global_state)
    key, kept = client_key(state, key_seed, keys_dir)
    predictor = exact_predictor(state.trainer.preprocess, state.profile.eval_batch_size, state.trainer.device)
    row = verify_encryption(state.model, state.test.images, state.test.labels,
                            [torch.arange(len(state.test))], [key], predictor).iloc[0]
    plain = metrics_on(state.trainer, state.model, state.test.images, state.test.labels, state.profile.eval_batch_size)
    n = int(row["n_test"])
    return {"client": state.client, "n": n, "plain-accuracy": float(row["acc_plain"]), "plain-loss": plain["loss"],
            "encrypted-accuracy": float(row["acc_encrypted"]),
            "identical": int(round(float(row["identical_predictions"]) * n)),
            "key-kept": int(kept), "fingerprint": key.fingerprint, "key-kind": key.kind,
            "seconds": time.perf_counter() - tic}


def node_setting(node_config: dict, name: str, env: str | None = None) -> str | None:
    """A SuperNode's own setting (--node-config "name='value'"), else an environment variable, else None."""
    value = node_config.get(name)
    if value not in (None, ""):
        return str(value)
    return os.environ.get(env) if env else None
