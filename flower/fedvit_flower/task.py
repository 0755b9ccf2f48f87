"""What a client does, and the weights' wire format: its data and model, a round, the paper's step 3.

Nagamori & Kiya, Sec. 2.1 and 4.1: every client trains the global ViT on its own split (SGD lr 1e-3,
momentum 0.9, batch 8, one local epoch per round) and the server integrates the updates with FedAvg;
after the last round each client encrypts the integrated model (Eq. 3, 8) and its own test images
(Eq. 9-13) with its own key and checks Eq. 14. Everything substantial is fedvit_utils' own code, so a
profile name means the same run here as in the in-process engine (`fedvit_utils.federated.server`):
the same partition (by partition id), model initialisation, local training and seeds.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedvit_flower.config import profile_from_json
from fedvit_utils import paths
from fedvit_utils.data import ImageData, check_same_classes, load_dataset
from fedvit_utils.devices import resolve_device
from fedvit_utils.evaluation import exact_predictor, metrics_from_logits, verify_encryption
from fedvit_utils.federated.client import LocalTraining, model_and_trainer
from fedvit_utils.federated.server import metrics_on
from fedvit_utils.keys import SecretKey, generate_key, key_of_client
from fedvit_utils.models import input_size, patch_size
from fedvit_utils.partition import FederatedDataset, client_splits
from fedvit_utils.profiles import Profile


def pack(state: dict[str, torch.Tensor]) -> tuple[ArrayRecord, str]:
    """A state dict as an ArrayRecord of one flat array per dtype, plus its layout (JSON): bit for bit.

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
    return ArrayRecord({dtype: Array(np.concatenate(parts)) for dtype, parts in groups.items()}), json.dumps(layout)


def unpack(record: ArrayRecord, layout: str) -> dict[str, torch.Tensor]:
    """The state dict `pack` flattened (each tensor a copy, in the original order)."""
    arrays = {dtype: array.numpy() for dtype, array in record.items()}
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


# -- a client in this process --------------------------------------------------------------------------
_DATA: dict[tuple, FederatedDataset] = {}  # per process: decoded once, whatever partition the process serves
_MODELS: dict[tuple, tuple[torch.nn.Module, LocalTraining]] = {}  # one model object, whatever partition


@dataclass
class ClientState:
    """One client in this process: its partition of the data, the model object and how it trains."""

    profile: Profile
    dataset: str
    client: int  # partition id
    train: ImageData
    test: ImageData
    model: torch.nn.Module
    trainer: LocalTraining


def client_state(profile_text: str, dataset: str, client: int, data_root: str | None, torch_threads: int = 0
                 ) -> ClientState:
    """Partition `client` of the profile the server sent; data and model are built once per process and
    shared by every partition it serves (a simulation actor serves many), each step loading its weights."""
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    profile = profile_from_json(profile_text)
    if not 0 <= client < profile.num_clients:
        raise ValueError(f"partition-id {client} is outside 0..{profile.num_clients - 1} (profile {profile.name!r} "
                         f"has num_clients={profile.num_clients}): give each SuperNode its own id in that range.")
    key = (profile_text, dataset, str(data_root))
    if key not in _DATA:
        train = load_dataset(dataset, "train", data_root, profile.max_per_class, profile.download)
        test = load_dataset(dataset, "test", data_root, profile.max_per_class, profile.download)
        check_same_classes(train, test)
        splits = client_splits(profile, train.labels.numpy(), test.labels.numpy(), len(train.classes), train.source)
        _DATA.clear()  # one run's data per process at a time
        _DATA[key] = FederatedDataset(dataset, train, test, splits)
    data = _DATA[key]
    if key[:2] not in _MODELS:
        _MODELS.clear()
        _MODELS[key[:2]] = model_and_trainer(profile, data.num_classes, resolve_device(profile.device))
    test_idx = torch.as_tensor(data.splits.test[client], dtype=torch.long)
    return ClientState(profile, dataset, client, data.client_train(client), data.test.subset(test_idx),
                       *_MODELS[key[:2]])


def train_round(state: ClientState, global_state: dict, round_index: int, train: bool, evaluate: bool
                ) -> tuple[dict | None, dict]:
    """One round on a client: score the incoming integrated model, then train from it (FedAvg ClientUpdate).

    Returns the new weights (None if the client only evaluates) and flat metrics for the server's records.
    Seeds and optimizer are LocalTraining.fit's, so the update equals the in-process engine's bit for bit.
    """
    p, out, start = state.profile, {}, time.perf_counter()
    if evaluate:  # the model after round `round_index` - 1, on this client's own test split
        state.model.load_state_dict(global_state)
        m = metrics_on(state.trainer, state.model, state.test.images, state.test.labels, p.eval_batch_size)
        out.update({f"integrated-{k}": v for k, v in m.items()})
    update = None
    if train:
        update = state.trainer.fit(state.model, global_state, state.train, round_index, state.client)
        out.update({"num-examples": update.num_examples, "train-loss": update.metrics["loss"],
                    "train-accuracy": update.metrics["accuracy"]})
        if p.eval_local:  # the model object still holds this client's trained weights
            m = metrics_on(state.trainer, state.model, state.test.images, state.test.labels, p.eval_batch_size)
            out.update({f"local-{k}": v for k, v in m.items()})
    out["work-seconds"] = time.perf_counter() - start
    return (update.state if update else None), out


# -- the paper's step 3, on the client -------------------------------------------------------------------
def client_key(state: ClientState, key_seed: int | None, keys_dir: str | None) -> tuple[SecretKey, bool]:
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
                             f"give the SuperNode another keys-dir.")
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


def encryption_step(state: ClientState, global_state: dict, key_seed: int | None, keys_dir: str | None) -> dict:
    """Encrypt the integrated model and this client's test images with its own key and check Eq. 14.

    Returns only what may leave the client: plain and encrypted accuracy, the plain loss, how many
    predictions are identical, the number of images and the key's public fingerprint. Key and encrypted
    model stay here.
    """
    state.model.load_state_dict(global_state)
    key, kept = client_key(state, key_seed, keys_dir)
    exact, plain = exact_predictor(state.trainer.preprocess, state.profile.eval_batch_size, state.trainer.device), []

    def predict(model: torch.nn.Module, images: torch.Tensor, transform: object = None) -> torch.Tensor:
        logits = exact(model, images, transform)
        if transform is None:  # the check's plain pass: its logits also give the record's loss, no second pass
            plain.append(logits)
        return logits

    row = verify_encryption(state.model, state.test.images, state.test.labels, [torch.arange(len(state.test))],
                           [key], predict).iloc[0]
    n = int(row["n_test"])
    return {"n": n, "plain-accuracy": float(row["acc_plain"]),
            "plain-loss": metrics_from_logits(plain[0], state.test.labels)["loss"],
            "encrypted-accuracy": float(row["acc_encrypted"]),
            "identical": int(round(float(row["identical_predictions"]) * n)),
            "key-kept": int(kept), "fingerprint": key.fingerprint, "key-kind": key.kind}


def supernode_setting(node_config: dict, name: str, env: str | None = None) -> str | None:
    """A SuperNode's own setting (--node-config "name='value'"), else an environment variable, else None."""
    value = node_config.get(name)
    if value not in (None, ""):
        return str(value)
    return os.environ.get(env) if env else None
