"""`make serve-demo`: Fig. 1 end to end on loopback, with the model server as the cloud.

The integrated model of a finished run (or of a smoke run trained here) is encrypted by each client with a key of
its own (drawn from OS entropy, kept in memory only), uploaded, and queried with the client's test images, encrypted
locally. The demo counts the served predictions identical to the plain model's on plain images (Eq. 14) and fails
on any mismatch. It stops the server it started.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from fedvit_utils.data import Preprocess
from fedvit_utils.evaluation import predict
from fedvit_utils.federated.checkpoints import MODEL
from fedvit_utils.keys import client_keys
from fedvit_utils.models import input_size, patch_size
from fedvit_utils.study.run import StudyRun

from .client import KeyHolder, ServerClient
from .server import LocalService
from .wire import Architecture


def finished_run(profile: str, run_dir: str | None, data: str | None) -> tuple[StudyRun, str]:
    """The profile's run if its integrated model exists, else a smoke run trained now (seconds)."""
    run = StudyRun.open(profile, run_dir, data)
    dataset = run.profile.datasets[0]
    if (run.dataset_dir(dataset) / "federated" / MODEL).exists():
        print(f"[demo] reusing the integrated model of {run.folder}", flush=True)
        return run, dataset
    if run.profile.name != "smoke":
        print(f"[demo] {run.folder} has no finished run of {run.profile.name!r}; training the smoke profile instead",
              flush=True)
        run = StudyRun.open("smoke", None, data)
    from fedvit_utils.federated.server import run_federated

    data_set = run.write_partition(dataset)
    if not (run.dataset_dir(dataset) / "federated" / MODEL).exists():
        print(f"[demo] training a {run.profile.name} run into {run.folder}", flush=True)
        run_federated(run.profile, data_set, run.dataset_dir(dataset) / "federated", run.device, progress=False)
    return run, dataset


def run_demo(profile: str = "smoke", run_dir: str | None = None, data: str | None = None, clients: int = 2,
             images: int = 64) -> bool:
    """Encrypt, upload and query for `clients` clients; True when every served prediction equals the plain one."""
    if clients < 2:
        raise ValueError(f"clients={clients}: the demo needs at least 2 clients, each with its own key.")
    t0 = time.monotonic()
    run, dataset = finished_run(profile, run_dir, data)
    model = run.trained_model(dataset).cpu()
    fed = run.load_data(dataset)
    architecture = Architecture.of_profile(run.profile, fed.num_classes)
    clients = min(clients, fed.num_clients)
    keys = client_keys(clients, input_size(model), patch_size(model), 3, run.profile.key_kind)  # OS entropy
    plain_path = Preprocess.for_model(model)
    with tempfile.TemporaryDirectory(prefix="fvs-demo-") as folder:
        service = LocalService(Path(folder) / "store", log=Path(folder) / "serve.log")
        url = service.start()
        print(f"[demo] model server on {url} (started in {time.monotonic() - t0:.0f} s since the demo began)",
              flush=True)
        identical = total = 0
        try:
            server = ServerClient(url)
            for c, (key, idx) in enumerate(zip(keys, fed.client_test_indices(), strict=False)):
                holder = KeyHolder(f"client-{c:02d}", key, server)
                holder.upload(model, architecture)
                x = fed.test.images[idx[:images]]
                served = holder.predict(x)
                plain = predict(model, x, plain_path, exact=True).argmax(1)
                same = int((served == plain).sum())
                identical, total = identical + same, total + len(x)
                print(f"[demo] {holder.client_id} ({key.kind} key): {same}/{len(x)} served predictions on encrypted "
                      f"images identical to the plain model's on plain images", flush=True)
        finally:
            service.stop()
    ok = identical == total and total > 0
    print(f"[demo] {'OK' if ok else 'MISMATCH'}: {identical}/{total} identical over {clients} clients; server "
          f"stopped; {time.monotonic() - t0:.0f} s in all", flush=True)
    return ok

