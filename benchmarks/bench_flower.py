"""The same FedAvg work on three engines: in-process, Flower simulation, Flower deployment on loopback.

10 clients (--clients) x 500 CIFAR-10 images (the `quick` profile's small ViT: patch 8 on native 32x32, 2.7 M
parameters), 3 rounds, one torch thread per client everywhere (two threads per process spin-wait on
this shared 2-core machine, and one thread makes every engine's weights bit-identical). Each engine
runs as its own command; reported: wall time of the command, time per round (the server's round:
sending the model to every client's reply integrated, clients' scoring included), overhead per
round (round time minus the slowest client's own work), peak memory summed over every process the
command started (RSS sampled every 0.5 s), final accuracy, and whether the final weights equal the
in-process engine's bit for bit. Ratios are within this one run. The deployment runs twice: with
Flower's own SuperNodes (the default) and with --fast-nodes (warm executor, short idle poll).

    python benchmarks/bench_flower.py                      (make bench-flower)
    python benchmarks/bench_flower.py --clients 5          (less memory: 5 clients on every engine)
    python benchmarks/bench_flower.py --report             (the table again, from the last run)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import torch

from fedvit_utils import paths
from fedvit_utils.federated import checkpoints

OVERRIDES = "train_per_client=500 test_per_client=100 max_per_class=500 rounds=3"  # and num_clients (--clients)
OUT = paths.runs_dir() / "bench-flower"
MARK = "FEDVIT_BENCH_MARK"

IN_PROCESS = """
import json, sys, time, torch
torch.set_num_threads(1)
from fedvit_flower.config import parse_overrides
from fedvit_utils.federated.checkpoints import TrainingRun
from fedvit_utils.federated.server import run_federated
from fedvit_utils.profiles import load_profile
from fedvit_utils.study.run import StudyRun
marks, save = [], TrainingRun.save
def timed(self, *args, **kwargs):
    marks.append(time.perf_counter())
    return save(self, *args, **kwargs)
TrainingRun.save = timed
run = StudyRun.open(load_profile("quick", **parse_overrides(sys.argv[2])), sys.argv[1])
data = run.write_partition("cifar10", restart=True)
marks.append(time.perf_counter())
run_federated(run.profile, data, run.dataset_dir("cifar10") / "federated", run.device, progress=False, resume=False)
rounds = [b - a for a, b in zip(marks[:-1], marks[1:])]
print("ROUNDS " + json.dumps(rounds))
"""


def sample_memory(mark: str, stop: threading.Event, peak: list[float]) -> None:
    """Peak of the summed RSS (GB) of every live process carrying `mark` in its environment."""
    needle = f"{MARK}={mark}".encode()
    while not stop.wait(0.5):
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        peak[0] = max(peak[0], total / 1e9)


def measure(name: str, argv: list[str]) -> dict:
    """Run one engine's command; wall time, peak summed memory and its output."""
    mark, stop, peak = uuid.uuid4().hex, threading.Event(), [0.0]
    env = {**os.environ, MARK: mark}
    sampler = threading.Thread(target=sample_memory, args=(mark, stop, peak), daemon=True)
    sampler.start()
    tic = time.perf_counter()
    res = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    stop.set()
    sampler.join()
    (OUT / f"{name}.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"{name} failed ({res.returncode}); see {OUT / (name + '.log')}:\n{res.stderr[-2000:]}")
    return {"wall": wall, "peak_gb": peak[0], "stdout": res.stdout}


def records(run_dir: Path) -> tuple[dict, float]:
    """(metrics.json, accuracy of the final integrated model on the union of the clients' test splits)."""
    fed = run_dir / "cifar10" / "federated"
    metrics = json.loads((fed / "metrics.json").read_text())
    rows = [r for r in metrics["history"] if r["model"] == "integrated" and r["scope"] == "client"
            and r["round"] == metrics["steps"]]
    return metrics, sum(r["accuracy"] * r["n"] for r in rows) / sum(r["n"] for r in rows)


def engines(clients: int) -> dict[str, str]:
    """Row label -> run folder of each engine."""
    return {"in-process": "in-process", "simulation, 1 client at a time": "sim-1", "simulation, 2 at a time": "sim-2",
            f"deployment, {clients} SuperNodes (Flower's own)": "deploy",
            f"deployment, {clients} SuperNodes, --fast-nodes": "deploy-fast"}


def run_all(clients: int) -> None:
    """Run the engines one after another; wall time and peak memory go to results.json."""
    OUT.mkdir(parents=True, exist_ok=True)
    py, flower = sys.executable, [sys.executable, "-m", "fedvit_flower"]
    overrides = f"num_clients={clients} {OVERRIDES}"
    common = ["--profile", "quick", "--overrides", overrides, "--torch-threads", "1", "--restart"]
    deploy = [*flower, "deploy", *common]
    argv = {
        "in-process": [py, "-c", IN_PROCESS, str(OUT / "in-process"), overrides],
        "sim-1": [*flower, "simulate", *common, "--cpus-per-client", "2", "--run-dir", str(OUT / "sim-1")],
        "sim-2": [*flower, "simulate", *common, "--cpus-per-client", "1", "--run-dir", str(OUT / "sim-2")],
        "deploy": [*deploy, "--run-dir", str(OUT / "deploy")],
        "deploy-fast": [*deploy, "--fast-nodes", "--run-dir", str(OUT / "deploy-fast")],
    }
    results = {}
    for name, folder in engines(clients).items():
        print(f"[bench] {name} ...", flush=True)
        r = measure(folder, argv[folder])
        results[name] = {"wall": r["wall"], "peak_gb": r["peak_gb"]}
    (OUT / "results.json").write_text(json.dumps({"clients": clients, "results": results}, indent=1))


def report() -> str:
    """The table, from results.json, the engines' logs and their run folders."""
    doc = json.loads((OUT / "results.json").read_text())
    results, base, n_clients = doc["results"], doc["results"]["in-process"], doc["clients"]
    reference = checkpoints.load_model_state(OUT / "in-process" / "cifar10" / "federated")
    base_rounds = json.loads((OUT / "in-process.log").read_text().split("ROUNDS ")[1].splitlines()[0])
    base_steady = sum(base_rounds[1:]) / len(base_rounds[1:])
    lines = ["| engine | wall | vs in-process | per round (mean of rounds 2-3) | overhead per round | peak memory, "
             "all processes | final accuracy | weights vs in-process |", "|---|---|---|---|---|---|---|---|"]
    for name, folder in engines(n_clients).items():
        r = results[name]
        metrics, acc = records(OUT / folder)
        if folder == "in-process":
            rounds = base_rounds
        else:
            rounds = [float(v) for v in metrics["round_seconds"].values()]
        overhead = "-"
        if folder.startswith("deploy"):  # clients train in parallel there: round time minus the slowest client's work
            work = [float(v) for v in metrics["slowest_client_seconds"].values()]
            overhead = " / ".join(f"{a - b:.1f}" for a, b in zip(rounds, work, strict=True)) + " s"
        state = checkpoints.load_model_state(OUT / folder / "cifar10" / "federated")
        same = "bit-identical" if all(torch.equal(state[k], reference[k]) for k in reference) else "differ"
        steady = sum(rounds[1:]) / len(rounds[1:])
        lines.append(f"| {name} | {r['wall']:.0f} s | {r['wall'] / base['wall']:.2f}x | "
                     f"{' / '.join(f'{x:.1f}' for x in rounds)} s ({steady / base_steady:.2f}x) | "
                     f"{overhead} | {r['peak_gb']:.2f} GB ({r['peak_gb'] / base['peak_gb']:.1f}x) | {acc:.3f} | "
                     f"{same} |")
    note = (f"{n_clients} clients x 500 CIFAR-10 images (JPEG copy), small ViT patch 8 at "
            f"32x32, 3 rounds, 1 torch thread per client; {os.cpu_count()} cores shared with other work.")
    return "\n".join(lines) + "\n\n" + note


def main() -> None:
    """Run every engine (unless --report: only rebuild the table from the last run) and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", action="store_true", help="only rebuild the table from the last run")
    ap.add_argument("--clients", type=int, default=10, help="clients on every engine (SuperNodes of a deployment)")
    args = ap.parse_args()
    if not args.report:
        run_all(args.clients)
    table = report()
    (OUT / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
