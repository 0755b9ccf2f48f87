"""The FL client as a Flower ClientApp (Message API): local training, and the paper's step 3 on the client.

Nagamori & Kiya, Fig. 1: (1) every client trains the global model on its own images, (2) the server
integrates, repeated for the rounds; (3) after the last round each client draws its own secret key,
encrypts its copy of the integrated model (Eq. 3, 8) and its test images (Eq. 9-13), and classifies them
(Eq. 14). Handlers, by message type:

    query     who am I: partition id (--node-config / simulation), number of train and test images
    train     score the incoming integrated model on the own test split, then one round of local training;
              replies the new weights ("arrays") and metrics (FedAvg weights them by num-examples)
    evaluate  step 3: key, encryption, Eq. 14 check; replies metrics and the key's fingerprint only

The server sends the whole profile with every message, so a node needs no settings of its own beyond its
partition id, its data folder (`data`, default: the data setting of fedvit_utils.paths) and, to keep its
key, a private folder (`keys-dir`; without it the key lives only in memory).
"""

from __future__ import annotations

import time

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedvit_flower import task

app = ClientApp()


def weights(msg: Message) -> dict:
    """The model state a message carries (packed: one array per dtype, layout in the config)."""
    arrays = {name: array.numpy() for name, array in msg.content["arrays"].items()}
    return task.unpack(arrays, str(msg.content["config"]["layout"]))


def weights_record(state: dict) -> tuple[ArrayRecord, str]:
    """An ArrayRecord of `state` packed into one array per dtype, and the layout to unpack it."""
    arrays, layout = task.pack(state)
    return ArrayRecord({name: Array(array) for name, array in arrays.items()}), layout


def _node(msg: Message, context: Context) -> task.Node:
    cfg = msg.content["config"]
    data_root = task.node_setting(context.node_config, "data", "FEDVIT_DATA")
    return task.node(str(cfg["profile"]), str(cfg["dataset"]), int(context.node_config["partition-id"]), data_root,
                     int(cfg["torch-threads"]))


@app.query()
def hello(msg: Message, context: Context) -> Message:
    """The node's partition id and data sizes (decoding its data once for the rounds to come)."""
    state = _node(msg, context)
    metrics = {"client": state.client, "num-examples": len(state.train), "num-test": len(state.test),
               "setup-seconds": state.setup_seconds}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round: evaluate the integrated model on the own test split, then train from it if selected."""
    start = time.time()  # wall clock: the server measures transport from it (one clock on loopback)
    cfg = msg.content["config"]
    state = _node(msg, context)
    global_state = weights(msg)
    new_state, metrics = task.train_round(state, global_state, int(cfg["round"]), bool(cfg["train"]),
                                          bool(cfg["evaluate"]))
    content = RecordDict({"metrics": MetricRecord({**metrics, "t-start": start})})
    if new_state is not None:
        content["arrays"], _ = weights_record(new_state)  # the server unpacks it with the layout it sent
    content["metrics"]["t-end"] = time.time()
    return Message(content, reply_to=msg)


@app.evaluate()
def encrypt_and_check(msg: Message, context: Context) -> Message:
    """Step 3 of the paper on this client; the key and the encrypted model never leave this function."""
    cfg = msg.content["config"]
    state = _node(msg, context)
    key_seed = int(cfg["key-seed"])
    keys_dir = task.node_setting(context.node_config, "keys-dir")
    result = task.encryption_step(state, weights(msg),
                                  None if key_seed < 0 else key_seed, keys_dir)
    info = ConfigRecord({"fingerprint": result.pop("fingerprint"), "key-kind": result.pop("key-kind")})
    return Message(RecordDict({"metrics": MetricRecord(result), "info": info}), reply_to=msg)
