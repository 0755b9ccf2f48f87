"""The model server against an in-process forward, all ratios from one run (docs/serving.md, "Benchmark").

One Ray Serve service on loopback (one replica, the same torch thread count as the in-process side), models with
random weights (speed does not depend on training):

* served encrypted model vs served plain model of the same architecture (normalization folded into both):
  images/s at batch 32 from 4 concurrent clients, and p50/p99 of one-image requests;
* served throughput at batch 32 (1 and 4 concurrent clients) vs an in-process forward of the same model, in wall
  time and in CPU seconds per image (every process of the server against the in-process forward: on a shared,
  oversubscribed machine wall-time ratios also measure how many threads each side has competing for the cores);
* p50 overhead of a one-image request over an in-process one-image forward;
* client-side encryption (Eq. 9-13 plus the safetensors encoding) as a share of a request's latency, for the
  study's 32x32 model (block 8), and at 224x224 (block 16) for ViT-Tiny and the paper's ViT-B/16;
* ten clients' models multiplexed (requests round robin over them) vs one model; resident memory per loaded model.

    python benchmarks/bench_serve.py            (make bench-serve; writes figures/serving/bench_serve.json)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from fedvit_serve.client import KeyHolder, ServerClient
from fedvit_serve.server import LocalService
from fedvit_serve.wire import Architecture, encode_images, encode_model

from fedvit_utils import paths
from fedvit_utils.devices import full_float32, hardware
from fedvit_utils.keys import generate_key
from fedvit_utils.profiles import SMALL_VIT

QUICK = Architecture("vit_tiny_patch16_224", 10, dict(SMALL_VIT))  # the quick/cpu profiles' ViT, 32x32, block 8
TINY_224 = Architecture("vit_tiny_patch16_224", 10, {})  # 224x224, block 16
BASE_224 = Architecture("vit_base_patch16_224", 10, {})  # the paper's ViT-B/16
TARGETS = {"encrypted_vs_plain": 0.95, "served_vs_in_process": 0.9, "overhead_ms": 15.0, "encryption_share": 0.05,
           "ten_vs_one": 0.8}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def latencies(server: ServerClient, model_id: str, body: bytes, n: int) -> list[float]:
    """Seconds of `n` sequential requests with the same body."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        server.predict(model_id, body)
        out.append(time.perf_counter() - t)
    return out


def throughput(url: str, ids: list[str], body: bytes, images: int, clients: int, requests_each: int) -> float:
    """Images/s of `clients` concurrent clients sending `requests_each` requests, model ids taken round robin."""
    def work(c: int) -> None:
        server = ServerClient(url, retries=0)
        for r in range(requests_each):
            server.predict(ids[(c + r * clients) % len(ids)], body)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return clients * requests_each * images / (time.perf_counter() - t)


@torch.no_grad()
def in_process(model: torch.nn.Module, x: torch.Tensor, n: int) -> list[float]:
    """Seconds of `n` forwards of `x` (full float32, as the server runs them)."""
    out = []
    with full_float32():
        model(x)
        for _ in range(n):
            t = time.perf_counter()
            model(x)
            out.append(time.perf_counter() - t)
    return out


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by every live process of a process group (the server and Ray's)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> dict:
    """Run every measurement against one local service; print the table and write the JSON record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads, server replica and in-process alike")
    ap.add_argument("--requests", type=int, default=12, help="requests per client in throughput runs")
    ap.add_argument("--samples", type=int, default=60, help="one-image requests timed for p50/p99")
    ap.add_argument("--out", default=str(paths.FIGURES_DIR / "serving" / "bench_serve.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows: dict = {"threads": args.threads, "hardware": hardware()}
    with tempfile.TemporaryDirectory(prefix="fvs-bench-") as folder:
        service = LocalService(Path(folder) / "store", log=Path(folder) / "serve.log", torch_threads=args.threads,
                               max_batch=8)
        t0 = time.perf_counter()
        url = service.start()
        rows["server_start_s"] = round(time.perf_counter() - t0, 1)
        try:
            measure(url, args, rows, service.proc.pid)
        finally:
            service.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(json.dumps(rows, indent=1))
    print(f"[bench-serve] wrote {out}")
    return rows


def measure(url: str, args: argparse.Namespace, rows: dict, pgid: int) -> None:
    """The measurements of the module docstring, into `rows`."""
    server = ServerClient(url, retries=0)
    torch.manual_seed(0)
    plain = QUICK.build("cpu")
    owners = []
    for i in range(10):
        owner = KeyHolder(f"client-{i}", generate_key(32, 8, 3, "orthogonal", seed=i), server)
        owner.upload(plain, QUICK)
        owners.append(owner)
    folded = owners[0].encrypted_model(plain)  # Eq. 3/8 applied; `plain_served` below is the same without the key
    from fedvit_utils.model_encryption import fold_normalization

    pre = owners[0].preprocess
    plain_served = fold_normalization(plain, tuple(pre.mean.flatten().tolist()), tuple(pre.std.flatten().tolist()),
                                      scale=1 / 255)
    server.upload("plain", encode_model(plain_served, QUICK))
    x32 = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    enc32, plain32 = encode_images(owners[0].encrypt(x32)), encode_images(x32.float())
    enc1, plain1 = encode_images(owners[0].encrypt(x32[:1])), encode_images(x32[:1].float())
    for body in (enc32, plain32, enc1):  # warm: models loaded, connections open
        server.predict("client-0", body)
        server.predict("plain", body)

    # served encrypted vs served plain; the server's CPU seconds per image (all its processes) beside wall time,
    # less what its processes spend while idle (Ray's background work), measured just before
    cpu0, t0 = group_cpu_s(pgid), time.perf_counter()
    time.sleep(5.0)
    idle_per_s = (group_cpu_s(pgid) - cpu0) / (time.perf_counter() - t0)
    cpu0, t0 = group_cpu_s(pgid), time.perf_counter()
    enc_tp = throughput(url, ["client-0"], enc32, 32, 4, args.requests)
    busy = group_cpu_s(pgid) - cpu0
    served_cpu = busy / (4 * args.requests * 32)
    served_cpu_net = (busy - idle_per_s * (time.perf_counter() - t0)) / (4 * args.requests * 32)
    plain_tp = throughput(url, ["plain"], plain32, 32, 4, args.requests)
    enc_lat, plain_lat = latencies(server, "client-0", enc1, args.samples), latencies(server, "plain", plain1,
                                                                                       args.samples)
    rows["encrypted_vs_plain"] = {
        "images_per_s": [round(enc_tp, 1), round(plain_tp, 1)], "ratio": round(enc_tp / plain_tp, 3),
        "p50_ms": [round(1e3 * statistics.median(enc_lat), 2), round(1e3 * statistics.median(plain_lat), 2)],
        "p99_ms": [round(1e3 * percentile(enc_lat, 99), 2), round(1e3 * percentile(plain_lat, 99), 2)]}

    # served vs in process, batch 32; one-image overhead
    cpu0 = time.process_time()
    local32 = 32 / statistics.median(in_process(folded, owners[0].encrypt(x32).float(), 20))
    local_cpu = (time.process_time() - cpu0) / (21 * 32)
    seq_tp = throughput(url, ["client-0"], enc32, 32, 1, args.requests)
    local1 = in_process(folded, owners[0].encrypt(x32[:1]).float(), args.samples)
    rows["served_vs_in_process"] = {
        "in_process_images_per_s": round(local32, 1), "served_1_client": round(seq_tp, 1),
        "served_4_clients": round(enc_tp, 1), "ratio_1_client": round(seq_tp / local32, 3),
        "ratio_4_clients": round(enc_tp / local32, 3),
        "cpu_ms_per_image": [round(1e3 * served_cpu, 3), round(1e3 * local_cpu, 3)],
        "cpu_ratio": round(local_cpu / served_cpu, 3),
        "server_idle_cpu_per_s": round(idle_per_s, 3),
        "cpu_ms_per_image_less_idle": round(1e3 * served_cpu_net, 3),
        "cpu_ratio_less_idle": round(local_cpu / served_cpu_net, 3)}
    rows["one_image"] = {"served_p50_ms": round(1e3 * statistics.median(enc_lat), 2),
                         "in_process_p50_ms": round(1e3 * statistics.median(local1), 2),
                         "overhead_ms": round(1e3 * (statistics.median(enc_lat) - statistics.median(local1)), 2)}

    # client-side encryption share, 32x32/8 and 224x224/16
    rows["encryption_share"] = {"quick_32": encryption_share(owners[0], x32[:1], enc_lat, args.samples)}
    torch.manual_seed(1)
    tiny = TINY_224.build("cpu")
    big = KeyHolder("tiny224", generate_key(224, 16, 3, "orthogonal", seed=1), server)
    big.upload(tiny, TINY_224)
    x224 = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8)
    body224 = encode_images(big.encrypt(x224))
    server.predict("tiny224", body224)
    lat224 = latencies(server, "tiny224", body224, max(10, args.samples // 4))
    rows["encryption_share"]["tiny_224"] = encryption_share(big, x224, lat224, max(10, args.samples // 4))
    torch.manual_seed(2)
    base = BASE_224.build("cpu")
    paper = KeyHolder("base224", generate_key(224, 16, 3, "orthogonal", seed=2), server)
    paper.upload(base, BASE_224)
    body_base = encode_images(paper.encrypt(x224))
    server.predict("base224", body_base)
    lat_base = latencies(server, "base224", body_base, 8)
    rows["encryption_share"]["base_224"] = encryption_share(paper, x224, lat_base, 8)
    del base

    # ten models multiplexed vs one (all loaded: the LRU holds 16)
    ids = [o.client_id for o in owners]
    for i in ids:
        server.predict(i, enc32)  # each model is encrypted with its own key; speed does not depend on which body
    pid = server.health()["pid"]
    one_tp = throughput(url, ["client-0"], enc32, 32, 4, args.requests)
    ten_tp = throughput(url, ids, enc32, 32, 4, args.requests)
    rows["ten_vs_one"] = {"one_model": round(one_tp, 1), "ten_models": round(ten_tp, 1),
                          "ratio": round(ten_tp / one_tp, 3)}
    before = rss_mb(pid)
    extra = []
    for i in range(10):
        extra_owner = KeyHolder(f"extra-{i}", generate_key(32, 8, 3, "orthogonal", seed=50 + i), server)
        extra_owner.upload(plain, QUICK)
        extra_owner.query(x32[:1])
        extra.append(extra_owner)
    params_mb = sum(p.numel() * 4 for p in plain.parameters()) / 2**20
    rows["memory_per_model_mb"] = {"rss_delta_per_model": round((rss_mb(pid) - before) / 10, 2),
                                   "float32_parameters": round(params_mb, 2)}
    rows["targets"] = TARGETS


def encryption_share(owner: KeyHolder, x: torch.Tensor, request_s: list[float], n: int) -> dict:
    """Client-side encryption + encoding time over (that time + the request's p50)."""
    spent = []
    for _ in range(n):
        t = time.perf_counter()
        encode_images(owner.encrypt(x))
        spent.append(time.perf_counter() - t)
    enc = statistics.median(spent)
    return {"encrypt_ms": round(1e3 * enc, 3), "request_p50_ms": round(1e3 * statistics.median(request_s), 2),
            "share": round(enc / (enc + statistics.median(request_s)), 4)}


if __name__ == "__main__":
    main(sys.argv[1:])
