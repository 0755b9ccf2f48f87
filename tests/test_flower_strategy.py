"""The Flower app's server strategy and launcher without Flower processes: fast tier.

`PaperFedAvg.aggregate_train` gets hand-built client replies (Flower's public Message and Metadata), so
the example weighting of FedAvg [5] is checked where clients hold unequal numbers of images; the
launcher's --fast-nodes falls back to Flower's public path, saying why, on a Flower it was not written for.
"""

from __future__ import annotations

import json

import torch

from fedvit_utils.federated.checkpoints import TrainingRun
from fedvit_utils.federated.server import run_settings

try:
    from fedvit_flower import launch, task
    from fedvit_flower.config import read_settings
    from fedvit_flower.server_app import PaperFedAvg
    from flwr.app import Message, Metadata, MetricRecord, RecordDict
except ImportError as exc:  # the test command installs it: a missing install must fail, not skip
    raise ImportError(f"{exc}: run `make test` (it installs requirements-flower.txt and the flower/ app)") from exc

NODE_OF = {0: 101, 1: 102, 2: 103}  # partition id -> Flower node id


def _reply(client: int, state: dict, num_examples: int) -> Message:
    metrics = {"num-examples": num_examples, "train-loss": 1.0, "train-accuracy": 0.5, "work-seconds": 0.1}
    metadata = Metadata(run_id=1, message_id="", src_node_id=NODE_OF[client], dst_node_id=0,
                        reply_to_message_id=f"m{client}", group_id="", created_at=0.0, ttl=60.0, message_type="train")
    return Message(RecordDict({"metrics": MetricRecord(metrics), "arrays": task.pack(state)[0]}), metadata=metadata)


def test_aggregation_weights_each_client_by_its_num_examples(tmp_path):
    s = read_settings({"profile": "smoke", "overrides": "num_clients=3 rounds=2", "run-dir": str(tmp_path)})
    gen = torch.Generator().manual_seed(0)
    start = {"w": torch.zeros(4, 3), "b": torch.zeros(3)}
    states = [{k: torch.randn(v.shape, generator=gen) for k, v in start.items()} for _ in range(3)]
    counts = [5, 40, 200]  # unequal: an unweighted mean is far from the weighted one
    out = tmp_path / "cifar10" / "federated"
    with TrainingRun(out, run_settings(s.profile, s.dataset), s.profile.rounds, resume=False) as run:
        strategy = PaperFedAvg(s, run, NODE_OF, start)
        arrays, _ = strategy.aggregate_train(1, [_reply(c, states[c], counts[c]) for c in (2, 0, 1)])
    result = task.unpack(arrays, strategy.layout)

    total = float(sum(counts))
    for k in start:
        expected = sum(n * st[k].double() for n, st in zip(counts, states, strict=True)) / total
        assert result[k].dtype == torch.float32
        torch.testing.assert_close(result[k], expected.float(), rtol=1e-6, atol=1e-7)
        unweighted = sum(st[k].double() for st in states) / 3
        assert (result[k].double() - unweighted).abs().max() > 1e-2  # the check can tell the two apart
    # The round is recorded as the in-process engine records it: images trained, updates, no one missing.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_done"] == 1 and metrics["client_updates"] == 3 and metrics["missing"] == {"1": {}}
    train_rows = [r for r in metrics["history"] if r["data"] == "train"]
    assert [(r["client"], r["n"]) for r in train_rows] == [(0, 5), (1, 40), (2, 200)]


def test_fast_nodes_fall_back_to_the_public_path_on_another_flower(tmp_path, monkeypatch, capsys):
    assert launch.use_fast_nodes(False) is False
    assert launch.use_fast_nodes(True) is launch.flower_version().startswith(launch.FAST_NODES_FLOWER)
    capsys.readouterr()
    monkeypatch.setattr(launch, "flower_version", lambda: "1.43.0")
    cluster = launch.Cluster(tmp_path, fast_nodes=True)  # starts nothing until its `with` block
    assert cluster.fast_nodes is False and "FEDVIT_FLOWER_IDLE_POLL" not in cluster.env
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "1.43.0" in lines[0] and "flower-supernode" in lines[0]
