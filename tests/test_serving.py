"""The model server (serving/, docs/serving.md): Eq. 14 through HTTP, bad input, no key on the wire, faults.

One Ray Serve service on loopback is shared by the tests of this module (`service`, started by PID through
`fedvit_serve.server.LocalService`, which stops it with SIGINT, then SIGKILL to its process group). Tests run in file
order; the last two kill a replica and restart the whole server. Smoke-sized ViTs with random weights: Eq. 14 holds
for any weights, and each client's model differs, so an answer from another client's model shows in the logits.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest
import requests
import torch
from relay import Relay

from fedvit_utils.data import Preprocess
from fedvit_utils.evaluation import predict
from fedvit_utils.files import DamagedFile
from fedvit_utils.keys import generate_key

try:
    from fedvit_serve import wire
    from fedvit_serve.client import KeyHolder, ServerClient, ServerError
    from fedvit_serve.server import LocalService
    from fedvit_serve.store import ModelStore
except ImportError as exc:  # the test command installs it: a missing install must fail, not skip
    raise ImportError(f"{exc}: run `make test` (it installs requirements-serve.txt and the serving/ app)") from exc

SMOKE = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)
ARCH = wire.Architecture("vit_tiny_patch16_224", 10, SMOKE)
MAX_QUERY = 1 << 20  # the test server's query limit, so an oversized body is cheap to send
KINDS = ("orthogonal", "permutation", "gaussian")


def plain_model(seed: int) -> torch.nn.Module:
    """A smoke ViT with random weights of its own (one per client)."""
    torch.manual_seed(seed)
    return ARCH.build("cpu")


def plain_logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The plain model on plain images, as the study computes it (Eq. 14's right-hand side)."""
    return predict(model, images, Preprocess.for_model(model), exact=True)


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One server for the module; the restart test swaps it for a new one on the same store."""
    folder = tmp_path_factory.mktemp("serve")
    svc = LocalService(folder / "store", log=folder / "serve.log", torch_threads=1, max_query_bytes=MAX_QUERY)
    svc.start()
    holder = {"svc": svc, "folder": folder}
    yield holder
    holder["svc"].stop()


@pytest.fixture(scope="module")
def clients(service):
    """Ten clients, each with its own key (three kinds) and its own plain model, uploaded once."""
    server = ServerClient(service["svc"].url, retries=0)
    out = []
    for i in range(10):
        key = generate_key(32, 8, 3, KINDS[i % 3], seed=100 + i)
        holder = KeyHolder(f"client-{i:02d}", key, server)
        model = plain_model(i)
        record = holder.upload(model, ARCH)
        out.append((holder, model, record))
    return out


def group_gone(group: int, within_s: float) -> bool:
    """True once no process is left in the process group (killed ones may take a moment to be reaped)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


def check_answer(answer: dict, model: torch.nn.Module, x: torch.Tensor, record: dict) -> None:
    """The answer came from this client's model and equals the plain model on plain images (Eq. 14)."""
    ref = plain_logits(model, x)
    assert answer["sha256"] == record["sha256"]
    assert answer["predictions"] == ref.argmax(1).tolist()
    assert torch.allclose(torch.tensor(answer["logits"]), ref, atol=1e-4)


# -- without a server ---------------------------------------------------------------------------------
def test_store_refuses_damaged_blob_and_keeps_ids(tmp_path):
    store = ModelStore(tmp_path / "store")
    body = wire.encode_model(plain_model(0), ARCH)
    record = store.put("a", body)
    assert store.ids() == ["a"] and store.load("a")[0] == ARCH
    with pytest.raises(wire.BadRequest, match="already stored"):
        store.put("a", body)
    blob = store.blobs / f"{record['sha256']}.safetensors"
    blob.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(DamagedFile, match="checksum"):
        store.load("a")
    with pytest.raises(wire.BadRequest, match="not allowed"):
        store.put("../escape", body)


def test_architecture_allowlist():
    with pytest.raises(wire.BadRequest, match="allowlist"):
        wire.Architecture("resnet50", 10, {})
    with pytest.raises(wire.BadRequest, match="depth"):
        wire.Architecture("vit_tiny_patch16_224", 10, {**SMOKE, "depth": 1000})
    with pytest.raises(wire.BadRequest, match="not allowed"):
        wire.Architecture("vit_tiny_patch16_224", 10, {**SMOKE, "act_layer": "os.system"})
    assert wire.Architecture.from_json(ARCH.to_json()) == ARCH


# -- through the server -------------------------------------------------------------------------------
def test_eq14_through_the_server(clients):
    """Every key kind: the encrypted model on encrypted images gives the plain model's answers (Eq. 14)."""
    for holder, model, record in clients[:3]:
        x = images(16, seed=1)
        check_answer(holder.query(x, logits=True), model, x, record)
        assert holder.encrypt(x).dtype == (torch.uint8 if holder.key.kind == "permutation" else torch.float32)


def test_unknown_model_is_404(clients):
    holder = clients[0][0]
    with pytest.raises(ServerError) as err:
        holder.query(images(2, 0), model_id="nobody")
    assert err.value.status == 404 and "nobody" in err.value.message


def test_bad_queries_are_refused_with_the_mismatch(clients):
    holder, model, record = clients[0]
    server = holder.server
    bad = {
        "16x16": wire.encode_images(torch.zeros(1, 3, 16, 16)),
        "channels": wire.encode_images(torch.zeros(1, 1, 32, 32)),
        "float64": wire.encode_images(torch.zeros(1, 3, 32, 32, dtype=torch.float64)),
        "NaN": wire.encode_images(torch.full((1, 3, 32, 32), float("nan"))),
        "infinite": wire.encode_images(torch.full((1, 3, 32, 32), float("inf"))),
        "empty": b"",
        "limit": wire.encode_images(torch.zeros(100, 3, 32, 32)),  # 1.2 MB > the test server's 1 MiB
        "not a safetensors": b"\x80\x04" + b"pickle" * 100,
        "shape": wire.encode_images(torch.zeros(3, 32, 32)),
        "'images'": wire.save_tensors({"pixels": torch.zeros(1, 3, 32, 32)}),
    }
    for mismatch, body in bad.items():
        with pytest.raises(ServerError) as err:
            server.predict(holder.client_id, body)
        assert 400 <= err.value.status < 500 and mismatch in err.value.message, (mismatch, err.value)
    x = images(4, 2)  # the server keeps serving
    check_answer(holder.query(x, logits=True), model, x, record)


def test_bad_uploads_are_refused_and_nothing_stored(clients, service, tmp_path):
    holder, model, record = clients[0]
    server = holder.server
    store = service["folder"] / "store"
    before = sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file())
    good = wire.encode_model(model, ARCH)
    marker = tmp_path / "pickle-ran"

    class Payload:  # unpickling this would create `marker`
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["head.weight"] = torch.zeros(7, 32)
    nan_state = {k: v.clone() for k, v in model.state_dict().items()}
    nan_state["blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    deeper = plain_model(0).state_dict() | {f"blocks.2.{k[9:]}": v for k, v in model.state_dict().items()
                                            if k.startswith("blocks.1.")}

    def upload(state: dict, **architecture) -> bytes:  # the description written by hand, unchecked
        doc = {"format": wire.FORMAT, "model": "vit_tiny_patch16_224", "num_classes": 10, "settings": SMOKE}
        return wire.save_tensors(state, metadata={"architecture": json.dumps(doc | architecture)})

    bad = {  # body -> what the refusal must name
        "truncated": (good[: len(good) // 2], "truncated"),
        "malformed": (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\x00" * 64, "not JSON"),
        "pickle": (pickle.dumps(Payload()), "not a safetensors file"),
        "torch.save": (_torch_save(model.state_dict()), "not a safetensors file"),
        "allowlist": (upload(model.state_dict(), model="resnet50"), "allowlist"),
        "setting": (upload(model.state_dict(), settings={**SMOKE, "act_layer": "os.system"}), "act_layer"),
        "extra tensors": (upload(deeper), "unexpected"),
        "shape": (upload(state), "head.weight"),
        "NaN": (upload(nan_state), "NaN"),
        "empty": (b"", "empty"),
    }
    for reason, (body, named) in bad.items():
        with pytest.raises(ServerError) as err:
            server.upload("intruder", body)
        assert 400 <= err.value.status < 500 and named in err.value.message, (reason, err.value)
    assert not marker.exists()
    assert sorted(p.relative_to(store) for p in store.rglob("*") if p.is_file()) == before
    assert "intruder" not in server.models()
    x = images(4, 3)
    check_answer(holder.query(x, logits=True), model, x, record)


def _torch_save(obj: object) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_upload_is_409_unless_replace(clients):
    holder, model, _ = clients[9]
    with pytest.raises(ServerError) as err:
        holder.upload(model, ARCH)
    assert err.value.status == 409
    other = plain_model(99)
    record = holder.upload(other, ARCH, replace=True)
    x = images(8, 4)
    check_answer(holder.query(x, logits=True), other, x, record)
    clients[9] = (holder, other, record)


def secrets_of(key, plain: torch.Tensor) -> dict[str, list[bytes]]:
    """Byte patterns that would betray the key or the plain images, in every encoding a client could leak them."""
    out: dict[str, list[bytes]] = {"matrix": [], "block order": [], "plain images": []}
    for m in (key.matrix, key.inverse_matrix):
        for row in m[:8]:  # a leaked matrix leaks its rows
            out["matrix"] += [row.astype(np.float64).tobytes(), row.astype(np.float32).tobytes()]
    order = key.block_permutation
    out["block order"] += [order.astype(np.int64).tobytes(), order.astype(np.int32).tobytes(),
                           str(order.tolist()).encode(), ",".join(map(str, order.tolist())).encode()]
    if key.pixel_permutation is not None:
        out["block order"].append(np.asarray(key.pixel_permutation[:64], dtype=np.int64).tobytes())
    for img in plain:
        out["plain images"] += [img.numpy().tobytes(), (img.float() * 1.0).numpy().tobytes(),
                                (img.float() / 255).numpy().tobytes()]
    return out


def test_key_and_plain_images_never_reach_the_server(service, tmp_path):
    """Every byte the server received (through a recording relay) and stored is searched for the secrets."""
    proxy = Relay(int(service["svc"].url.rsplit(":", 1)[1]))
    try:
        found = []
        for kind in ("orthogonal", "permutation"):
            key = generate_key(32, 8, 3, kind, seed=7)
            holder = KeyHolder(f"spy-{kind}", key, ServerClient(proxy.url, retries=0))
            model = plain_model(7)
            record = holder.upload(model, ARCH)
            x = images(16, 5)
            check_answer(holder.query(x, logits=True), model, x, record)
            stored = b"".join(p.read_bytes() for p in (service["folder"] / "store").rglob("*") if p.is_file())
            assert len(proxy.up) > 16 * 3 * 32 * 32
            for what, patterns in secrets_of(key, x).items():
                for pattern in patterns:
                    found += [(kind, what, where) for where, data in (("received", proxy.up),
                                                                      ("stored", stored)) if pattern in data]
        assert not found
    finally:
        proxy.close()


def test_ten_clients_at_once(clients):
    """Ten threads, one per client, bounded loops: every answer is the client's own model's, none lost."""
    errors, answers = [], []

    def loop(i: int) -> None:
        holder, model, record = clients[i]
        try:
            for r in range(3):
                x = images(4 + r, seed=1000 * i + r)
                check_answer(holder.query(x, logits=True), model, x, record)
                answers.append(i)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            errors.append((i, repr(exc)))

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    assert sorted(answers) == sorted(list(range(10)) * 3)


def test_replica_killed_under_load(clients, service):
    """SIGKILL to the replica mid-load: Serve replaces it; requests fail clearly or are retried, never misanswered."""
    url = service["svc"].url
    old = requests.get(f"{url}/healthz", timeout=30).json()
    outcomes, stop = [], threading.Event()

    def load(i: int) -> None:
        holder, model, record = clients[i]
        client = KeyHolder(holder.client_id, holder.key, ServerClient(url, timeout=60, retries=4, backoff_s=2.0))
        client.preprocess = holder.preprocess
        n = 0
        while not stop.is_set() and n < 40:
            x = images(4, seed=5000 * i + n)
            n += 1
            try:
                answer = client.query(x, logits=True)
            except ServerError as exc:
                outcomes.append(("error", exc.status, exc.message))
                continue
            try:
                check_answer(answer, model, x, record)
                outcomes.append(("ok",))
            except AssertionError as exc:
                outcomes.append(("wrong", repr(exc)))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    os.kill(old["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 180
    new = old
    while new.get("pid") == old["pid"] and time.monotonic() < deadline:
        time.sleep(1.0)
        try:
            new = requests.get(f"{url}/healthz", timeout=10).json()
        except (requests.RequestException, ValueError):
            pass
    stop.set()
    for t in threads:
        t.join(300)
    assert new["pid"] != old["pid"], "Serve did not replace the killed replica"
    assert not [o for o in outcomes if o[0] == "wrong"]
    assert all(o[2] for o in outcomes if o[0] == "error")  # failures carry the server's reason
    holder, model, record = clients[1]
    x = images(4, 6)
    check_answer(holder.query(x, logits=True), model, x, record)


def test_a_second_server_on_the_machine_is_a_server_of_its_own(clients, service, tmp_path):
    """Two servers on one machine: each runs its own Ray and serves its own store (Ray's default would join the
    newest running cluster, and the second server's app would replace the first one's)."""
    other = LocalService(tmp_path / "store", log=tmp_path / "serve.log", torch_threads=1, max_query_bytes=MAX_QUERY)
    other.start()
    try:
        key = generate_key(32, 8, 3, "orthogonal", seed=99)
        holder = KeyHolder("other-00", key, ServerClient(other.url, retries=0))
        model, x = plain_model(99), images(4, 9)
        record = holder.upload(model, ARCH)
        check_answer(holder.query(x, logits=True), model, x, record)
        first = ServerClient(service["svc"].url, retries=0)
        assert "other-00" not in first.models() and set(ServerClient(other.url, retries=0).models()) == {"other-00"}
        mine, own, own_record = clients[0]
        check_answer(mine.query(x, logits=True), own, x, own_record)
    finally:
        group = other.proc.pid
        other.stop()
    assert group_gone(group, within_s=30.0), "processes of the second server's group are still running"


def test_restart_serves_the_same_models(clients, service):
    """A full stop and start on the same store: checksums verify, same ids, same answers."""
    x = images(8, 7)
    before = {h.client_id: h.query(x, logits=True) for h, _, _ in clients}
    group = service["svc"].proc.pid
    service["svc"].stop()
    assert group_gone(group, within_s=30.0), "processes of the stopped server's group are still running"
    store = ModelStore(service["folder"] / "store")
    for model_id in store.ids():
        store.load(model_id)  # raises DamagedFile on a bad checksum
    svc = LocalService(store.root, log=service["folder"] / "serve2.log", torch_threads=1, max_query_bytes=MAX_QUERY)
    service["svc"] = svc
    svc.start()
    server = ServerClient(svc.url, retries=0)
    assert set(server.models()) >= set(before)
    for holder, model, record in clients:
        holder.server = server
        after = holder.query(x, logits=True)
        assert after == before[holder.client_id]
        check_answer(after, model, x, record)
