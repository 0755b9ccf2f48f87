"""The same FedAvg work on three engines: in-process, Flower simulation, Flower deployment on loopback.

10 clients x 500 CIFAR-10 images (the `quick` profile's small ViT: patch 8 on native 32x32, 2.7 M
parameters), 3 rounds, one torch thread per client everywhere (two threads per process spin-wait on
this shared 2-core machine, and one thread makes every engine's weights bit-identical). Each engine
runs as its own command; reported: wall time of the command, time per round (the server's round:
sending the model to every client's reply integrated, clients' scoring included), overhead per
round (round time minus the slowest client's own work), peak memory summed over every process the
command started (RSS sampled every 0.5 s), final accuracy, and whether the final weights equal the
in-process engine's bit for bit. Ratios are within this one run.

    python benchmarks/bench_flower.py            (make bench-flower)
"""

from __future__ import annotations

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

OVERRIDES = "num_clients=10 train_per_client=500 test_per_client=100 max_per_class=500 rounds=3"
OUT = paths.runs_dir() / "bench-flower"
MARK = "FEDVIT_BENCH_MARK"

IN_PROCESS = """
import json, sys, time, torch
torch.set_num_threads(1)
from fedvit_flower.task import parse_overrides
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


def main() -> None:
    """Run the three engines one after another and print the table."""
    OUT.mkdir(parents=True, exist_ok=True)
    py, flower = sys.executable, [sys.executable, "-m", "fedvit_flower"]
    common = ["--profile", "quick", "--overrides", OVERRIDES, "--torch-threads", "1", "--restart"]
    engines = {
        "in-process": [py, "-c", IN_PROCESS, str(OUT / "in-process"), OVERRIDES],
        "simulation, 1 client at a time": [*flower, "simulate", *common, "--cpus-per-client", "2",
                                           "--run-dir", str(OUT / "sim-1")],
        "simulation, 2 at a time": [*flower, "simulate", *common, "--cpus-per-client", "1",
                                    "--run-dir", str(OUT / "sim-2")],
        "deployment, 10 SuperNodes": [*flower, "deploy", *common, "--run-dir", str(OUT / "deploy")],
    }
    folders = dict(zip(engines, ["in-process", "sim-1", "sim-2", "deploy"], strict=True))
    results, load = {}, os.getloadavg()
    for name, argv in engines.items():
        print(f"[bench] {name} ...", flush=True)
        results[name] = measure(folders[name], argv)
    base = results["in-process"]
    reference = checkpoints.load_model_state(OUT / "in-process" / "cifar10" / "federated")
    lines = ["| engine | wall | vs in-process | per round (steady: rounds 2-3) | overhead per round | peak memory, "
             "all processes | final accuracy | weights = in-process |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        metrics, acc = records(OUT / folders[name])
        if name == "in-process":
            rounds = json.loads(r["stdout"].split("ROUNDS ")[1].splitlines()[0])
            overhead = "-"
        else:
            rounds = [float(v) for v in metrics["round_seconds"].values()]
            work = [float(v) for v in metrics["slowest_client_seconds"].values()]
            overhead = " / ".join(f"{a - b:.1f}" for a, b in zip(rounds, work, strict=True)) + " s"
        state = checkpoints.load_model_state(OUT / folders[name] / "cifar10" / "federated")
        same = all(torch.equal(state[k], reference[k]) for k in reference)
        r.update(rounds=rounds, accuracy=acc, identical=same)
        steady = sum(rounds[1:]) / len(rounds[1:])
        lines.append(f"| {name} | {r['wall']:.0f} s | {r['wall'] / base['wall']:.2f}x | "
                     f"{' / '.join(f'{x:.1f}' for x in rounds)} s ({steady:.1f} s) | {overhead} | "
                     f"{r['peak_gb']:.2f} GB ({r['peak_gb'] / base['peak_gb']:.1f}x) | {acc:.3f} | "
                     f"{'bit-identical' if same else 'differ'} |")
    table = "\n".join(lines)
    note = (f"10 clients x 500 CIFAR-10 images (JPEG copy), small ViT patch 8 at 32x32, 3 rounds, 1 torch thread "
            f"per client; {os.cpu_count()} cores, load average at start {load[0]:.1f}")
    print(table + "\n" + note)
    (OUT / "results.json").write_text(json.dumps({"note": note, "table": table, "results": {
        k: {kk: vv for kk, vv in v.items() if kk != "stdout"} for k, v in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
