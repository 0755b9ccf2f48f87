"""The FL server as a Flower ServerApp (Message API): rounds, example-weighted FedAvg, records, step 3.

Nagamori & Kiya, Sec. 4.1: FedAvg after every local epoch for the profile's rounds, then (Fig. 1, step 3)
every client encrypts the integrated model and its test images with its own key. The server drives the
rounds itself with `grid.push_messages` / `grid.pull_messages` (no Flower Strategy): Flower 1.42's
FedAvg accumulates in float32 and returns integer buffers unrounded, ours (`fedvit_utils.federated.
aggregation.FedAvg`) is float64 and example-weighted, folded in partition-id order as the in-process
engine does, so both engines end with the same weights. A node that fails, times out or sends a
non-finite update is left out of that round and named in the record. The run folder is the in-process
engine's (`checkpoints.TrainingRun`: checkpoint, history.csv, metrics.json, model.pt; notebook 02 plots
it); a killed server resumes from its last round.

Clients score the model they receive before training, so the integrated model of round r is scored in
round r + 1 (the last one in step 3) at no extra message; its scope-"all" row covers the union of the
clients' own test splits (`checkpoints.union_row`).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pandas as pd
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedvit_flower import task
from fedvit_flower.client_app import weights_record
from fedvit_utils.federated.aggregation import FedAvg, NoClientUpdates, is_finite_state
from fedvit_utils.federated.checkpoints import TrainingRun, union_row
from fedvit_utils.federated.client import ClientUpdate
from fedvit_utils.federated.server import client_rows, run_settings, select_clients
from fedvit_utils.models import build_model
from fedvit_utils.study.run import StudyRun

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation described by the run config (flower/pyproject.toml, --run-config)."""
    run_server(grid, context.run_config)


def exchange(grid: Grid, messages: list[Message], timeout: float, poll: float, arrived: dict | None = None
             ) -> tuple[dict[int, Message], dict[int, str]]:
    """Push `messages`, pull until every node replied or `timeout`: (replies, failures) by node id, with reasons.

    `arrived`, if given, gets each reply's arrival time (wall clock) and "pushed" the time of the push.
    """
    if arrived is not None:
        arrived["pushed"] = time.time()
    dst = [m.metadata.dst_node_id for m in messages]
    ids = list(grid.push_messages(messages))
    pending = {mid: nid for mid, nid in zip(ids, dst, strict=True) if mid}
    failed = {nid: "push failed" for mid, nid in zip(ids, dst, strict=True) if not mid}
    replies: dict[int, Message] = {}
    deadline = time.monotonic() + timeout
    while pending:
        for reply in grid.pull_messages(list(pending)):
            nid = pending.pop(reply.metadata.reply_to_message_id, None)
            if nid is None:
                continue
            if reply.has_error():
                failed[nid] = f"error {reply.error.code}: {reply.error.reason}"
            else:
                replies[nid] = reply
                if arrived is not None:
                    arrived[nid] = time.time()
        if pending and time.monotonic() >= deadline:
            failed.update({nid: f"no reply within {timeout:g} s" for nid in pending.values()})
            break
        if pending:
            time.sleep(poll)
    return replies, failed


def connect(grid: Grid, s: task.Settings, common: dict) -> dict[int, int]:
    """Wait for the profile's clients and learn which node holds which partition: {partition id: node id}."""
    want, deadline = s.profile.num_clients, time.monotonic() + s.wait_nodes_timeout
    while len(nodes := sorted(grid.get_node_ids())) < want and time.monotonic() < deadline:
        time.sleep(0.5)
    replies, failed = exchange(grid, [Message(RecordDict({"config": ConfigRecord(common)}), nid, "query")
                                      for nid in nodes], s.round_timeout, s.poll_interval)
    clients: dict[int, int] = {}
    for nid, reply in replies.items():
        pid = int(reply.content["metrics"]["client"])
        if pid in clients:
            raise ValueError(f"SuperNodes {clients[pid]} and {nid} both hold partition-id {pid}: give each node its "
                             f"own --node-config \"partition-id=...\".")
        clients[pid] = nid
    for nid, reason in failed.items():
        print(f"[flower] node {nid} did not answer the first query ({reason}); left out", flush=True)
    if not clients:
        raise RuntimeError(f"no client answered within {s.wait_nodes_timeout:g} s + {s.round_timeout:g} s: start the "
                           f"SuperNodes (README, 'Flower: beyond one process') and check their logs.")
    absent = sorted(set(range(want)) - set(clients))
    print(f"[flower] {len(clients)}/{want} clients connected" + (f"; missing partitions {absent}" if absent else ""),
          flush=True)
    return dict(sorted(clients.items()))


def _messages(clients: dict[int, int], live: set[int], content: RecordDict, kind: str, ttl: float, group: str
              ) -> list[Message]:
    return [Message(content, nid, kind, ttl=ttl, group_id=group) for nid in clients.values() if nid in live]


def run_server(grid: Grid, run_config: dict) -> Path:
    """Train and integrate for the profile's rounds, then let every client check Eq. 14; returns the run folder."""
    s = task.read_settings(run_config)
    p, study = s.profile, StudyRun.open(s.profile, s.run_dir)
    out = study.dataset_dir(s.dataset) / "federated"
    common = {"profile": task.profile_json(p), "dataset": s.dataset, "torch-threads": s.torch_threads}
    clients = connect(grid, s, common)
    node_client = {nid: pid for pid, nid in clients.items()}
    with TrainingRun(out, run_settings(p, s.dataset), p.rounds, resume=not s.restart) as run:
        state = run.model_state or dict(build_model(p, s.num_classes).state_dict())
        summary = run.summary or {"engine": "flower (fedvit_flower)", "partition_seed": p.partition_seed,
                                  "training_seed": p.training_seed,
                                  "scope_all": "union of the clients' own test splits, each scored by its client"}
        for name in ("missing", "round_seconds", "slowest_client_seconds", "transport_seconds"):
            summary.setdefault(name, {})
        summary["clients"] = {str(pid): str(nid) for pid, nid in clients.items()}
        for rnd in range(run.done, p.rounds):
            tic = time.perf_counter()
            selected = set(select_clients(p.num_clients, p.clients_per_round, p.training_seed, rnd))
            live = set(grid.get_node_ids())
            arrays, layout = weights_record(state)
            msgs = [Message(RecordDict({"arrays": arrays, "config": ConfigRecord(
                        {**common, "layout": layout, "round": rnd, "train": pid in selected, "evaluate": rnd > 0})}),
                        nid, "train", ttl=s.round_timeout, group_id=str(rnd + 1))
                    for pid, nid in clients.items() if nid in live]
            arrived: dict = {}
            replies, failed = exchange(grid, msgs, s.round_timeout, s.poll_interval, arrived)
            missing = {pid: "not connected" for pid in selected if clients.get(pid) not in live}
            missing.update({node_client[nid]: reason for nid, reason in failed.items() if node_client[nid] in selected})
            mean, rows, integrated, trained, work, to_client, back = FedAvg(), [], [], 0, 0.0, 0.0, 0.0
            for pid in sorted(node_client[nid] for nid in replies):  # partition order: the in-process float64 sums
                content = replies[clients[pid]].content
                m = dict(content["metrics"])
                work = max(work, float(m.get("work-seconds", 0.0)))
                to_client = max(to_client, float(m["t-start"]) - arrived["pushed"])
                back = max(back, arrived[clients[pid]] - float(m["t-end"]))
                if "integrated-accuracy" in m:
                    integrated.append(_row(rnd, pid, m, "integrated-"))
                if "arrays" not in content:
                    continue
                try:
                    weights = task.unpack({k: a.numpy() for k, a in content["arrays"].items()}, layout)
                except (ValueError, KeyError) as exc:
                    missing[pid] = f"malformed update ({exc})"
                    continue
                update = ClientUpdate(weights, int(m["num-examples"]),
                                      {"loss": m["train-loss"], "accuracy": m["train-accuracy"]})
                if not is_finite_state(update.state):
                    missing[pid] = "non-finite update"
                    continue
                mean.add(update.state, update.num_examples)
                trained += update.num_examples * p.local_epochs
                local = {"accuracy": m["local-accuracy"], "loss": m["local-loss"], "n": int(m["local-n"])} \
                    if "local-accuracy" in m else None
                rows += client_rows(update, rnd + 1, pid, local)
            try:
                state = mean.result()
            except NoClientUpdates:
                warnings.warn(f"round {rnd + 1}: every client failed; the global model is unchanged.", stacklevel=2)
            seconds = time.perf_counter() - tic
            if integrated:
                rows = [union_row(integrated, round=rnd, model="integrated"), *integrated, *rows]
            if rnd + 1 == p.rounds:  # the paper's step 3, and the last integrated model's scores
                rows += _encryption_step(grid, s, study, clients, common, state, node_client)
            summary["missing"][str(rnd + 1)] = {str(k): v for k, v in sorted(missing.items())}
            summary["round_seconds"][str(rnd + 1)] = seconds
            summary["slowest_client_seconds"][str(rnd + 1)] = work
            summary["transport_seconds"][str(rnd + 1)] = {"push_to_handler": to_client, "handler_to_server": back}
            summary["rounds_done"] = rnd + 1
            run.save(state, rows, seconds, trained, mean.count, summary=summary)
            print(f"[flower] round {rnd + 1}/{p.rounds}: {mean.count}/{len(selected)} updates in {seconds:.2f} s "
                  f"(slowest client {work:.2f} s)" + (f"; missing {missing}" if missing else ""), flush=True)
        run.finish(state)
    print(f"[flower] done: {out}", flush=True)
    return out


def _row(round_label: int, client: int, metrics: dict, prefix: str) -> dict:
    return {"round": round_label, "model": "integrated" if prefix == "integrated-" else "local", "data": "test",
            "scope": "client", "client": client, "accuracy": metrics[f"{prefix}accuracy"],
            "loss": metrics[f"{prefix}loss"], "n": int(metrics[f"{prefix}n"])}


def _encryption_step(grid: Grid, s: task.Settings, study: StudyRun, clients: dict[int, int], common: dict,
                     state: dict, node_client: dict[int, int]) -> list[dict]:
    """Step 3 on every client; records encryption_check.json and returns the final integrated model's rows."""
    arrays, layout = weights_record(state)
    config = ConfigRecord({**common, "layout": layout, "key-seed": -1 if s.key_seed is None else s.key_seed})
    msgs = _messages(clients, set(grid.get_node_ids()), RecordDict({"arrays": arrays, "config": config}),
                     "evaluate", s.round_timeout, "encrypt")
    replies, failed = exchange(grid, msgs, s.round_timeout, s.poll_interval)
    checks, rows = [], []
    for pid in sorted(node_client[nid] for nid in replies):
        reply = replies[clients[pid]]
        m, info = dict(reply.content["metrics"]), dict(reply.content["info"])
        n = int(m["n"])
        checks.append({"client": pid, "n_test": n, "acc_encrypted": m["encrypted-accuracy"],
                       "acc_plain": m["plain-accuracy"], "identical_predictions": int(m["identical"]) / n if n else 0.0,
                       "identical_count": int(m["identical"]), "key_kind": info["key-kind"],
                       "key_fingerprint": info["fingerprint"], "key_kept_on_node": bool(m["key-kept"]),
                       "key_source": "OS entropy" if s.key_seed is None else f"demo seed {s.key_seed}"})
        rows.append({"round": s.profile.rounds, "model": "integrated", "data": "test", "scope": "client",
                     "client": pid, "accuracy": m["plain-accuracy"], "loss": m["plain-loss"], "n": n})
    for nid, reason in failed.items():
        print(f"[flower] step 3: client {node_client[nid]} did not report ({reason})", flush=True)
    study.write_encryption_check(s.dataset, pd.DataFrame(checks), "OS entropy" if s.key_seed is None else s.key_seed)
    same = sum(c["identical_count"] for c in checks)
    total = sum(c["n_test"] for c in checks)
    print(f"[flower] Eq. 14 on {len(checks)} clients: identical predictions on {same}/{total} encrypted test images",
          flush=True)
    return [union_row(rows, round=s.profile.rounds, model="integrated"), *rows] if rows else []

