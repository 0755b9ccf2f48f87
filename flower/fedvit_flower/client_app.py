"""The FL client as a Flower ClientApp (Message API): local training, and the paper's step 3 on the client.

Nagamori & Kiya, Fig. 1: (1) every client trains the global model on its own images, (2) the server
integrates, repeated for the rounds; (3) after the last round each client draws its own secret key,
encrypts its copy of the integrated model (Eq. 3, 8) and its test images (Eq. 9-13), and classifies them
(Eq. 14). Handlers, by message type:

    query     which partition this SuperNode serves (its data is decoded now, once per process)
    train     score the incoming integrated model on the own test split, then, if the round selected this
              partition, one round of local training; replies the new weights and "num-examples"
    evaluate  step 3: key, encryption, Eq. 14 check; replies metrics and the key's fingerprint only

The server sends the whole profile with every message, so a SuperNode needs no settings of its own beyond
its partition id, its data folder (`data`, default: the data setting of fedvit_utils.paths) and, to keep
its key, a private folder (`keys-dir`; without it the key lives only in memory).
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedvit_flower import task

app = ClientApp()


def _client(msg: Message, context: Context) -> task.ClientState:
    cfg = msg.content["config"]
    data_root = task.supernode_setting(context.node_config, "data", "FEDVIT_DATA")
    return task.client_state(str(cfg["profile"]), str(cfg["dataset"]), int(context.node_config["partition-id"]),
                             data_root, int(cfg["torch-threads"]))


def _reply(msg: Message, metrics: dict, **records: object) -> Message:
    return Message(RecordDict({"metrics": MetricRecord(metrics), **records}), reply_to=msg)


@app.query()
def partition(msg: Message, context: Context) -> Message:
    """The partition id this SuperNode serves (decoding its data once for the rounds to come)."""
    return _reply(msg, {"client": _client(msg, context).client})


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round: evaluate the integrated model on the own test split, then train from it if selected."""
    cfg = msg.content["config"]
    state = _client(msg, context)
    new_state, metrics = task.train_round(state, task.unpack(msg.content["arrays"], str(cfg["layout"])),
                                          int(cfg["round"]), state.client in list(cfg["selected"]),
                                          bool(cfg["evaluate"]))
    if new_state is None:
        return _reply(msg, metrics)
    return _reply(msg, metrics, arrays=task.pack(new_state)[0])  # the server unpacks it with the layout it sent


@app.evaluate()
def encrypt_and_check(msg: Message, context: Context) -> Message:
    """Step 3 of the paper on this client; the key and the encrypted model never leave this function."""
    cfg = msg.content["config"]
    key_seed, keys_dir = int(cfg["key-seed"]), task.supernode_setting(context.node_config, "keys-dir")
    result = task.encryption_step(_client(msg, context), task.unpack(msg.content["arrays"], str(cfg["layout"])),
                                  None if key_seed < 0 else key_seed, keys_dir)
    info = ConfigRecord({"fingerprint": result.pop("fingerprint"), "key-kind": result.pop("key-kind")})
    return _reply(msg, result, info=info)
