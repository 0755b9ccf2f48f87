"""The FL server as a Flower ServerApp: Flower's FedAvg strategy with the paper's integration, records, step 3.

Nagamori & Kiya, Sec. 4.1: FedAvg after every local epoch for the profile's rounds, then (Fig. 1, step 3)
every client encrypts the integrated model and its test images with its own key. Flower's `FedAvg.start`
drives the rounds; `PaperFedAvg` overrides only what differs from Flower's FedAvg:
- integration: fedvit_utils' float64, example-weighted FedAvg, folded in partition-id order as in the
  in-process engine, so both end with the same weights (Flower's accumulates in float32);
- selection: by partition id (`select_clients`); every client gets the round's message and scores the
  model it receives, so the model of round r is scored in round r + 1 (the last one in step 3);
- records: the in-process engine's run folder (`TrainingRun`; notebook 02 plots it; a killed server
  resumes from it); a client that fails, times out or sends a non-finite update is left out and named;
- evaluation: only after the last round, and it is step 3 (encryption_check.json).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedvit_flower import task
from fedvit_flower.config import Settings, profile_json, read_settings
from fedvit_utils.federated.aggregation import FedAvg, NoClientUpdates, is_finite_state
from fedvit_utils.federated.checkpoints import TrainingRun, union_row
from fedvit_utils.federated.client import ClientUpdate
from fedvit_utils.federated.server import client_rows, run_settings, select_clients
from fedvit_utils.files import write_json
from fedvit_utils.models import build_model

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation described by the run config (flower/pyproject.toml, --run-config)."""
    run_server(grid, context.run_config)


def run_server(grid: Grid, run_config: dict) -> Path:
    """Train and integrate for the profile's rounds, then let every client check Eq. 14; returns the run folder."""
    s = read_settings(run_config)
    p, out, grid = s.profile, s.run_dir / s.dataset / "federated", PromptGrid(grid, s.poll_interval)
    clients = connect(grid, s)
    with TrainingRun(out, run_settings(p, s.dataset), p.rounds, resume=not s.restart) as run:
        strategy = PaperFedAvg(s, run, clients, run.model_state or dict(build_model(p, s.num_classes).state_dict()))
        strategy.start(grid, task.pack(strategy.state)[0], num_rounds=p.rounds - run.done, timeout=s.round_timeout)
        run.finish(strategy.state)
    print(f"[flower] done: {out}", flush=True)
    return out


class PaperFedAvg(FlowerFedAvg):
    """Flower's FedAvg with the paper's integration, selection, records and step 3 (module docstring)."""

    def __init__(self, settings: Settings, run: TrainingRun, clients: dict[int, int], state: dict) -> None:
        super().__init__(min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=1)  # connect() waited
        p = settings.profile
        self.settings, self.run, self.state, self.layout = settings, run, state, task.pack(state)[1]
        self.common = {"profile": profile_json(p), "dataset": settings.dataset, "torch-threads": settings.torch_threads,
                       "layout": self.layout}
        self.partition_of = {node_id: client for client, node_id in clients.items()}
        self.record = run.summary or {"engine": "flower (fedvit_flower)", "partition_seed": p.partition_seed,
                                      "training_seed": p.training_seed, "scope_all": "union of the clients' own test "
                                      "splits, each scored by its client"}
        for name in ("missing", "round_seconds", "slowest_client_seconds"):
            self.record.setdefault(name, {})
        self.record["clients"] = {str(client): str(node_id) for client, node_id in clients.items()}
        self.first_round, self.messages, self.started = run.done, [], time.perf_counter()
        self.last_round: dict = {}  # the last round's records, saved once step 3 has added its rows

    def round_index(self, server_round: int) -> int:
        """0-based round of the run (Flower counts from 1 in each `start`; a resumed run starts later)."""
        return self.first_round + server_round - 1

    def is_last(self, server_round: int) -> bool:
        """Whether this is the profile's last round (step 3 follows it)."""
        return self.round_index(server_round) + 1 == self.settings.profile.rounds

    def by_client(self, replies: Iterable[Message]) -> dict[int, Message]:
        """Replies by partition id, known by the message they answer (the SuperLink answers for a SuperNode it
        lost, as sender) or else by their sender."""
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in self.messages}
        by_node = {node_of.get(r.metadata.reply_to_message_id, r.metadata.src_node_id): r for r in replies}
        return {self.partition_of[n]: r for n, r in sorted(by_node.items()) if n in self.partition_of}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
                        ) -> Iterable[Message]:
        """Every connected client gets the model; those the seeded selection names also train."""
        p, rnd = self.settings.profile, self.round_index(server_round)
        selected = select_clients(p.num_clients, p.clients_per_round, p.training_seed, rnd)
        config = ConfigRecord({**self.common, "round": rnd, "selected": selected, "evaluate": rnd > 0})
        messages = [m for m in super().configure_train(server_round, arrays, config, grid)
                    if m.metadata.dst_node_id in self.partition_of]  # a SuperNode that joined late has no partition
        self.messages, self.started = messages, time.perf_counter()
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """fedvit_utils' FedAvg over the usable updates, weighted by their num-examples; records the round."""
        p, rnd = self.settings.profile, self.round_index(server_round)
        selected = select_clients(p.num_clients, p.clients_per_round, p.training_seed, rnd)
        by_client = self.by_client(replies)
        asked = {self.partition_of[m.metadata.dst_node_id] for m in self.messages}
        missing = {c: f"no reply within {self.settings.round_timeout:g} s" if c in asked else "not connected"
                   for c in selected if c not in by_client}
        mean, rows, integrated, trained, work = FedAvg(), [], [], 0, 0.0
        for client in sorted(by_client):  # partition order: the in-process engine's float64 sums
            reply = by_client[client]
            if reply.has_error():
                if client in selected:
                    missing[client] = f"error {reply.error.code}: {reply.error.reason}"
                continue
            m = dict(reply.content["metrics"])
            work = max(work, float(m["work-seconds"]))
            if "integrated-accuracy" in m:
                integrated.append({"round": rnd, "model": "integrated", "data": "test", "scope": "client",
                                   "client": client, **{k: m[f"integrated-{k}"] for k in ("accuracy", "loss", "n")}})
            if "arrays" not in reply.content:
                continue
            try:
                update = ClientUpdate(task.unpack(reply.content["arrays"], self.layout), int(m[self.weighted_by_key]),
                                      {"loss": m["train-loss"], "accuracy": m["train-accuracy"]})
            except (ValueError, KeyError) as exc:
                missing[client] = f"malformed update ({exc})"
                continue
            if not is_finite_state(update.state):
                missing[client] = "non-finite update"
                continue
            mean.add(update.state, update.num_examples)
            trained += update.num_examples * p.local_epochs
            local = {k: m[f"local-{k}"] for k in ("accuracy", "loss", "n")} if "local-accuracy" in m else None
            rows += client_rows(update, rnd + 1, client, local)
        try:
            self.state = mean.result()
        except NoClientUpdates:
            print(f"[flower] round {rnd + 1}: every client failed; the global model is unchanged.", flush=True)
        if integrated:
            rows = [union_row(integrated, round=rnd, model="integrated"), *integrated, *rows]
        self.last_round = {"rnd": rnd, "rows": rows, "seconds": time.perf_counter() - self.started,
                           "trained": trained, "updates": mean.count, "work": work, "missing": missing,
                           "selected": len(selected)}
        if not self.is_last(server_round):
            self._save()
        return task.pack(self.state)[0], None

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
                           ) -> Iterable[Message]:
        """Step 3 after the last round: every client draws its key, encrypts and checks Eq. 14."""
        if not self.is_last(server_round):
            return []
        seed = self.settings.key_seed
        config = ConfigRecord({**self.common, "key-seed": -1 if seed is None else seed})
        self.messages = [m for m in super().configure_evaluate(server_round, arrays, config, grid)
                         if m.metadata.dst_node_id in self.partition_of]
        return self.messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Record step 3 (encryption_check.json) and the final model's scores, then save the last round."""
        if not self.is_last(server_round):
            return None
        s, checks, rows = self.settings, [], []
        for client, reply in sorted(self.by_client(replies).items()):
            if reply.has_error():
                print(f"[flower] step 3: client {client} did not report ({reply.error.reason})", flush=True)
                continue
            m, info = dict(reply.content["metrics"]), dict(reply.content["info"])
            n = int(m["n"])
            checks.append({"client": client, "n_test": n, "acc_encrypted": m["encrypted-accuracy"],
                           "acc_plain": m["plain-accuracy"], "identical_predictions": int(m["identical"]) / n if n
                           else 0.0, "identical_count": int(m["identical"]), "key_kind": info["key-kind"],
                           "key_fingerprint": info["fingerprint"], "key_kept_on_node": bool(m["key-kept"]),
                           "key_source": s.key_source})
            rows.append({"round": s.profile.rounds, "model": "integrated", "data": "test", "scope": "client",
                         "client": client, "accuracy": m["plain-accuracy"], "loss": m["plain-loss"], "n": n})
        p = s.profile
        write_json(s.run_dir / s.dataset / "encryption_check.json", {
            "profile": p.name, "dataset": s.dataset, "partition_seed": p.partition_seed,
            "training_seed": p.training_seed, "key_kind": p.key_kind,
            "key_seed": "OS entropy" if s.key_seed is None else s.key_seed, "clients": checks})
        same, total = sum(c["identical_count"] for c in checks), sum(c["n_test"] for c in checks)
        plain, enc = (sum(c[k] * c["n_test"] for c in checks) / max(total, 1) for k in ("acc_plain", "acc_encrypted"))
        print(f"[flower] integrated model: accuracy {plain:.3f} on plain, {enc:.3f} on encrypted test images; "
              f"identical predictions {same}/{total} (Eq. 14) on {len(checks)} clients", flush=True)
        if rows:
            self.last_round["rows"] += [union_row(rows, round=p.rounds, model="integrated"), *rows]
        self._save()
        return MetricRecord({"identical": same, "n": total})

    def _save(self) -> None:
        r, rec = self.last_round, self.record
        label = str(r["rnd"] + 1)
        rec["missing"][label] = {str(k): v for k, v in sorted(r["missing"].items())}
        rec["round_seconds"][label], rec["slowest_client_seconds"][label] = r["seconds"], r["work"]
        rec["rounds_done"] = r["rnd"] + 1
        self.run.save(self.state, r["rows"], r["seconds"], r["trained"], r["updates"], summary=rec)
        print(f"[flower] round {label}/{self.settings.profile.rounds}: {r['updates']}/{r['selected']} updates in "
              f"{r['seconds']:.2f} s (slowest client {r['work']:.2f} s)"
              + (f"; missing {r['missing']}" if r["missing"] else ""), flush=True)


def connect(grid: Grid, s: Settings) -> dict[int, int]:
    """Wait for the profile's clients and learn which SuperNode serves which partition: {partition id: node id}."""
    want, deadline = s.profile.num_clients, time.monotonic() + s.wait_nodes_timeout
    while len(node_ids := sorted(grid.get_node_ids())) < want and time.monotonic() < deadline:
        time.sleep(0.5)
    config = ConfigRecord({"profile": profile_json(s.profile), "dataset": s.dataset, "torch-threads": s.torch_threads})
    replies = grid.send_and_receive([Message(RecordDict({"config": config}), node_id, MessageType.QUERY)
                                     for node_id in node_ids], timeout=s.round_timeout)
    clients: dict[int, int] = {}
    for reply in replies:
        node_id = reply.metadata.src_node_id
        if reply.has_error():
            print(f"[flower] SuperNode {node_id} failed the first query ({reply.error.reason}); left out", flush=True)
            continue
        client = int(reply.content["metrics"]["client"])
        if client in clients:
            raise ValueError(f"SuperNodes {clients[client]} and {node_id} both serve partition-id {client}: give each "
                             f"SuperNode its own --node-config \"partition-id=...\".")
        clients[client] = node_id
    if not clients:
        raise RuntimeError(f"no client answered within {s.wait_nodes_timeout:g} s + {s.round_timeout:g} s: start the "
                           f"SuperNodes (docs/flower.md) and check their logs.")
    absent = sorted(set(range(want)) - set(clients))
    print(f"[flower] {len(clients)}/{want} clients connected" + (f"; missing partitions {absent}" if absent else ""),
          flush=True)
    return dict(sorted(clients.items()))


class PromptGrid(Grid):
    """Flower's Grid whose `send_and_receive` pulls replies every `poll` seconds (a deployment's grid waits 3 s
    between pulls, up to 3 s more per round); every other method is the wrapped grid's."""

    def __init__(self, grid: Grid, poll: float) -> None:
        self.grid, self.poll = grid, poll

    def set_run(self, run: object) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> object:
        return self.grid.run

    def create_message(self, *args: object, **kwargs: object) -> Message:
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push, then pull until every reply is in or `timeout` (None: no limit) has passed: Grid's contract."""
        pending, replies = {i for i in self.push_messages(messages) if i}, []
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            got = list(self.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self.poll)
        return replies
