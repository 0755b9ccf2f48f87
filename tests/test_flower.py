"""The Flower app (flower/): same training as the in-process engine, deployment, faults, no secret sent.

Each test runs real Flower processes on loopback through `fedvit_flower.launch.Cluster`, whose `with`
block stops every process it started by PID (SIGTERM, then SIGKILL, children included), even when the
test fails. SuperNodes are Flower's own (the default, public path). Smoke sizes; one torch thread per
client so runs are bit-for-bit repeatable.
"""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from relay import Relay

from fedvit_utils.federated import checkpoints
from fedvit_utils.federated.server import run_federated
from fedvit_utils.keys import SecretKey
from fedvit_utils.model_encryption import encrypt_model
from fedvit_utils.models import build_model
from fedvit_utils.profiles import load_profile
from fedvit_utils.study.figures import accuracy_curves
from fedvit_utils.study.run import StudyRun

try:
    from fedvit_flower import config, launch, task
    from flwr.app import Array, ArrayRecord
except ImportError as exc:  # the test command installs it: a missing install must fail, not skip
    raise ImportError(f"{exc}: run `make test` (it installs requirements-flower.txt and the flower/ app)") from exc

KEY = ["round", "model", "data", "scope", "client"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _records(run_dir: Path) -> tuple[pd.DataFrame, dict, list[dict]]:
    out = run_dir / "cifar10"
    history = checkpoints.load_history(out / "federated")
    metrics = json.loads((out / "federated" / "metrics.json").read_text())
    check = json.loads((out / "encryption_check.json").read_text())
    sources = {c["key_source"] for c in check["clients"]}  # the record's key seed says what the clients used
    assert sources == {"OS entropy" if check["key_seed"] == "OS entropy" else f"demo seed {check['key_seed']}"}
    return history, metrics, check["clients"]


def _client_rows(h: pd.DataFrame) -> pd.DataFrame:
    return h[h["scope"] == "client"].sort_values(KEY).reset_index(drop=True)[[*KEY, "accuracy", "loss", "n"]]


def test_simulation_ends_bit_identical_to_the_in_process_engine(tmp_path, cifar_root):
    cfg = {"profile": "smoke", "overrides": "num_clients=3", "torch-threads": 1, "restart": True,
           "run-dir": str(tmp_path / "flower")}
    with launch.Cluster(tmp_path / "sim") as cluster:
        cluster.superlink(simulation=True)
        record = cluster.run(cfg, "num-supernodes=3 client-resources-num-cpus=1", timeout=600, echo=False)
    assert record["status"] == "finished:completed"
    assert not cluster.marked_pids()

    study = StudyRun.open(load_profile("smoke", num_clients=3), tmp_path / "inproc", cifar_root)
    data = study.write_partition("cifar10")
    inproc = run_federated(study.profile, data, tmp_path / "inproc" / "fed", study.device, progress=False)

    a, b = checkpoints.load_model_state(inproc), checkpoints.load_model_state(tmp_path / "flower/cifar10/federated")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "not bit-identical"
    h_in, (h_fl, metrics, check) = checkpoints.load_history(inproc), _records(tmp_path / "flower")
    pd.testing.assert_frame_equal(_client_rows(h_in), _client_rows(h_fl), check_exact=True)
    # The Flower scope-"all" row is the union of the clients' own test splits, scored by the clients.
    for rnd, rows in _client_rows(h_in).query("model == 'integrated'").groupby("round"):
        union = h_fl.query(f"model == 'integrated' and scope == 'all' and round == {rnd}").iloc[0]
        assert union["n"] == rows["n"].sum() == 30
        assert union["accuracy"] == pytest.approx((rows["accuracy"] * rows["n"]).sum() / 30, abs=1e-12)
    assert metrics["steps_done"] == 2 and metrics["training_seed"] == 0 and metrics["partition_seed"] == 0
    assert metrics["missing"] == {"1": {}, "2": {}}
    curves = accuracy_curves(h_fl, None).axes[0]  # notebook 02's figure reads the Flower run folder as it is
    assert [len(line.get_xdata()) for line in curves.lines] == [2, 2]
    assert [c["client"] for c in check] == [0, 1, 2]
    assert all(c["identical_count"] == c["n_test"] == 10 for c in check)
    assert len({c["key_fingerprint"] for c in check}) == 3 and not any(c["key_kept_on_node"] for c in check)


def _windows(t: torch.Tensor | object, size: int = 64) -> list[bytes]:
    raw = t.numpy().tobytes() if isinstance(t, torch.Tensor) else bytes(t)
    return [raw[i : i + size] for i in (0, len(raw) // 2, max(0, len(raw) - size))]


def _secrets(key: SecretKey, model: torch.nn.Module) -> dict[str, list[bytes]]:
    """Byte windows of a key (E_a, E_a^-1, block permutation, in the dtypes code would send) and of the
    encrypted model's two encrypted embeddings (Eq. 3, 8)."""
    enc = encrypt_model(model, key)
    out = {}
    for name, arr in (("E_a", key.matrix), ("E_a^-1", key.inverse_matrix)):
        out[f"{name} float64"] = _windows(torch.tensor(arr, dtype=torch.float64))
        out[f"{name} float32"] = _windows(torch.tensor(arr, dtype=torch.float32))
    perm = torch.tensor(key.block_permutation)  # a copy: the key keeps its arrays read-only
    out["block permutation"] = [perm.to(torch.int64).numpy().tobytes(), perm.to(torch.int32).numpy().tobytes()]
    out["encrypted patch embedding"] = _windows(enc.patch_embed.proj.weight.detach().contiguous())
    # Its rows are the plain rows (which the server has) reordered: only the whole block in that order is secret.
    out["encrypted position embedding"] = [enc.pos_embed.detach()[0, 1:].contiguous().numpy().tobytes()]
    return out


def test_deployment_two_supernodes_keep_their_keys_and_encrypted_models(tmp_path, cifar_root):
    cfg = {"profile": "smoke", "overrides": "num_clients=2", "torch-threads": 1, "restart": True,
           "run-dir": str(tmp_path / "server")}
    keys = [tmp_path / f"node{i}" / "keys" for i in range(2)]
    with launch.Cluster(tmp_path / "deploy") as cluster:
        cluster.superlink()
        relay = Relay(cluster.link_port)
        try:
            for i in range(2):
                cluster.supernode(i, str(cifar_root), str(keys[i]), superlink=f"127.0.0.1:{relay.port}")
            record = cluster.run(cfg, timeout=600, echo=False)
            with pytest.raises(launch.RunFailed, match="finished:failed"):  # a failing run is reported as failed
                cluster.run({**cfg, "profile": "no-such-profile"}, timeout=300, echo=False)
        finally:
            relay.close()
        pids = [p.pid for p in cluster.procs.values()]
    assert record["status"] == "finished:completed"
    assert not cluster.marked_pids() and not any(Path(f"/proc/{pid}").exists() for pid in pids)

    history, metrics, check = _records(tmp_path / "server")
    assert metrics["steps_done"] == 2 and metrics["client_updates"] == 4 and metrics["missing"] == {"1": {}, "2": {}}
    assert set(history.query("model == 'integrated' and scope == 'client'")["round"]) == {1, 2}
    assert [c["client"] for c in check] == [0, 1] and all(c["identical_count"] == c["n_test"] for c in check)

    # The keys stayed on their nodes, owner-only, and the record has only their fingerprints.
    files = [k / "cifar10" / f"client_{i:02d}.key" for i, k in enumerate(keys)]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    node_keys = [SecretKey.load(f) for f in files]
    assert [c["key_fingerprint"] for c in check] == [k.fingerprint for k in node_keys]

    # Nothing the SuperLink received contains a key or an encrypted model ...
    profile = load_profile("smoke", num_clients=2)
    model = build_model(profile, 10)
    model.load_state_dict(checkpoints.load_model_state(tmp_path / "server/cifar10/federated"))
    sent = bytes(relay.up)
    for i, key in enumerate(node_keys):
        for what, windows in _secrets(key, model).items():
            assert not any(w in sent for w in windows), f"node {i}'s {what} reached the server"
    # ... while the same search does find what the nodes did send: client 0's round-1 update, recomputed here.
    state = task.client_state(config.profile_json(profile), "cifar10", 0, str(cifar_root), 1)
    update = state.trainer.fit(state.model, dict(build_model(profile, 10).state_dict()), state.train, 0, 0)
    assert all(w in sent for w in _windows(update.state["patch_embed.proj.weight"].contiguous()))


# Every Python process of one SuperNode (the SuperNode, Flower's SuperExec and each ClientApp process it
# starts) imports this from its PYTHONPATH: that client's training raises, as on a machine whose disk is full.
FAULTY_CLIENT = """
from fedvit_utils.federated.client import LocalTraining

def broken_fit(*args, **kwargs):
    raise RuntimeError("disk full (injected by test_flower)")

LocalTraining.fit = broken_fit
"""


def test_a_killed_node_and_a_failing_client_are_left_out(tmp_path, cifar_root):
    cfg = {"profile": "smoke", "overrides": "num_clients=3", "torch-threads": 1, "restart": True,
           "run-dir": str(tmp_path / "server"), "round-timeout": 150.0}
    with launch.Cluster(tmp_path / "faults") as cluster:
        cluster.superlink()
        (tmp_path / "faulty").mkdir()
        (tmp_path / "faulty" / "sitecustomize.py").write_text(FAULTY_CLIENT)
        cluster.supernode(0, str(cifar_root))
        cluster.supernode(1, str(cifar_root), env={"PYTHONPATH": f"{tmp_path / 'faulty'}:{cluster.env['PYTHONPATH']}"})
        cluster.supernode(2, str(cifar_root))
        results: list = []
        runner = threading.Thread(target=lambda: results.append(cluster.run(cfg, timeout=900, echo=False)))
        runner.start()
        log = cluster.logs / "supernode2.log"
        deadline = time.monotonic() + 300
        while b"Receiving: train message" not in (log.read_bytes() if log.exists() else b""):
            assert time.monotonic() < deadline and runner.is_alive(), "node 2 never got its round-1 message"
            time.sleep(0.2)
        cluster.kill("supernode2")  # SIGKILL to the node's process group: a crashed machine, mid-round 1
        runner.join(900)
    assert results and results[0]["status"] == "finished:completed"
    assert not cluster.marked_pids()

    history, metrics, check = _records(tmp_path / "server")
    missing = metrics["missing"]
    assert set(missing["1"]) == {"1", "2"} and set(missing["2"]) == {"1", "2"}
    assert "disk full" in missing["1"]["1"] and "disk full" in missing["2"]["1"]
    assert metrics["client_updates"] == 2  # client 0 in both rounds
    trained = history.query("model == 'local' and data == 'train'")
    assert sorted(trained["client"].astype(int).unique()) == [0]
    assert (tmp_path / "server/cifar10/federated/model.pt").exists()
    assert [c["client"] for c in check] == [0, 1]  # the failing client still encrypts; the dead one cannot
    assert b"disk full" in (cluster.logs / "supernode1.log").read_bytes()  # the failing client logged why


def test_packed_weights_are_bit_exact_and_checked_against_the_layout():
    state = {"w": torch.randn(3, 4), "steps": torch.tensor(7), "h": torch.randn(5, dtype=torch.float64),
             "b": torch.randn(2)}
    arrays, layout = task.pack(state)
    assert sorted(arrays) == sorted({"<f4", "<i8", "<f8"})  # one array per dtype, whatever the tensor count
    back = task.unpack(arrays, layout)
    assert list(back) == list(state)
    assert all(back[k].dtype == state[k].dtype and torch.equal(back[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="differs"):
        task.unpack(ArrayRecord({**arrays, "<f4": Array(torch.zeros(15).numpy())}), layout)


def test_run_config_selects_the_profile_and_refuses_what_the_app_cannot_run():
    s = config.read_settings({"profile": "smoke", "overrides": "num_clients=3 rounds=4"})
    assert (s.profile.num_clients, s.profile.rounds, s.key_seed, s.dataset) == (3, 4, None, "cifar10")
    assert config.profile_from_json(config.profile_json(s.profile)).training_settings() == s.profile.training_settings()
    assert config.read_settings({"key-seed": 5}).key_seed == 5
    with pytest.raises(ValueError, match="FedAvg"):
        config.read_settings({"overrides": "aggregation=fedsgd"})
    with pytest.raises(ValueError, match="unknown run-config"):
        config.read_settings({"rounds": 3})


def test_fast_nodes_find_the_idle_poll_of_the_pinned_flower():
    import flwr.supernode.start_client_internal as loop
    from fedvit_flower import fast_nodes

    original = loop.time
    try:
        assert fast_nodes.patch_idle_poll(0.2) and loop.time.idle == 0.2 and loop.time.monotonic is original.monotonic
    finally:
        loop.time = original
