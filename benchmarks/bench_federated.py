"""Federated training costs, as ratios measured side by side in one run (this machine is noisy).

1. One FedAvg round (10 clients x 1 local epoch, clients in turn on one model, updates folded into
   the average as they arrive) against one centralized epoch over the same images: target <= 1.05.
2. Peak memory `fedavg` adds beyond its inputs, for 10 and for 2 ViT-B/16-sized states, in float32
   model copies: target <= 3, and the same for 10 as for 2 (updates are streamed, not stacked).
3. Training images/s of the `cpu` profile's model at batch 8 (the paper's) and 32.

    python benchmarks/bench_federated.py [--images-per-client 104] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import timm
import torch

from fedvit_utils.data import ImageData, Preprocess
from fedvit_utils.federated.aggregation import fedavg
from fedvit_utils.federated.client import LocalTraining
from fedvit_utils.profiles import PROFILES


def _vmhwm_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # "5" resets the peak RSS (VmHWM) to the current RSS
        fh.write("5")


def fedavg_peak_copies(num_states: int) -> float:
    """Extra peak RSS during fedavg over `num_states` ViT-B/16 states, in float32 model copies.

    Measured in a fresh process with a fixed malloc mmap threshold: by default glibc raises its
    threshold after the first large free, and memory freed earlier (a template state, a previous
    measurement) then stays resident and is reused by fedavg without raising the RSS, which
    under-counts what fedavg allocates.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    cmd = [sys.executable, __file__, "--peak-child", str(num_states)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _peak_child(num_states: int) -> float:
    """In the child process: build the states, then measure fedavg's extra peak RSS."""
    template = timm.create_model("vit_base_patch16_224", pretrained=False).state_dict()
    model_bytes = sum(v.numel() * v.element_size() for v in template.values())
    states = [{k: v.clone().add_(i) if v.is_floating_point() else v.clone() for k, v in template.items()}
              for i in range(num_states)]
    del template
    _reset_peak()
    base = _vmhwm_bytes()
    out = fedavg(((s, 1000 + i) for i, s in enumerate(states)))
    peak = _vmhwm_bytes() - base
    del out, states
    return peak / model_bytes


def round_vs_epoch(per_client: int, repeats: int) -> tuple[float, float, float]:
    """Median seconds of one FedAvg round and one centralized epoch over the same images; and their ratio."""
    profile = PROFILES["cpu"]
    model = timm.create_model(profile.model, pretrained=False, num_classes=10, **profile.model_kwargs)
    pre = Preprocess.for_model(model)
    g = torch.Generator().manual_seed(0)
    n = 10 * per_client
    data = ImageData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)], "synthetic")
    splits = np.array_split(np.arange(n), 10)
    trainer = LocalTraining.from_profile(profile, pre, torch.device("cpu"))
    global_state = {k: v.clone() for k, v in model.state_dict().items()}

    def fed_round() -> None:
        def updates():
            for c, idx in enumerate(splits):
                update = trainer.fit(model, global_state, data.subset(idx), 0, c)
                yield update.state, update.num_examples

        model.load_state_dict(fedavg(updates()))

    def central_epoch() -> None:
        model.load_state_dict(global_state)
        trainer.epoch(model, trainer.optimizer(model), data, 0)

    fed, central = [], []
    central_epoch()  # warm-up
    for _ in range(repeats):  # interleaved, so both see the same machine load
        t = time.perf_counter()
        fed_round()
        fed.append(time.perf_counter() - t)
        t = time.perf_counter()
        central_epoch()
        central.append(time.perf_counter() - t)
    f, c = statistics.median(fed), statistics.median(central)
    return f, c, f / c


def train_throughput(batch: int, images: int = 960) -> float:
    """Training images/s of the cpu profile's model at `batch`."""
    profile = PROFILES["cpu"]
    model = timm.create_model(profile.model, pretrained=False, num_classes=10, **profile.model_kwargs)
    pre = Preprocess.for_model(model)
    data = ImageData(torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8),
                     torch.randint(0, 10, (images,)), [str(i) for i in range(10)], "synthetic")
    trainer = LocalTraining.from_profile(profile, pre, torch.device("cpu"))
    trainer.batch_size = batch
    opt = trainer.optimizer(model)
    trainer.epoch(model, opt, data.subset(np.arange(64)), 0)  # warm-up
    t = time.perf_counter()
    trainer.epoch(model, opt, data, 1)
    return images / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # A multiple of the batch size (8): otherwise every client ends on a short batch and the round takes
    # more optimizer steps than the epoch (100 per client: 130 steps vs 125, +4% for that reason alone).
    ap.add_argument("--images-per-client", type=int, default=104)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default torch's); use 1 when another torch job shares a 2-core machine")
    ap.add_argument("--peak-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_child:
        print(_peak_child(args.peak_child))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    f, c, ratio = round_vs_epoch(args.images_per_client, args.repeats)
    batch = PROFILES["cpu"].batch_size
    steps = 10 * -(-args.images_per_client // batch), -(-10 * args.images_per_client // batch)
    print(f"  {10 * args.images_per_client} images, batch {batch}: {steps[0]} steps per round, {steps[1]} per epoch; "
          f"median of {args.repeats} interleaved")
    print(f"  FedAvg round {f:.2f} s vs centralized epoch {c:.2f} s: ratio {ratio:.3f} (target <= 1.05)")
    for k in (2, 10):
        print(f"  fedavg peak extra memory, {k:2d} ViT-B/16 states: {fedavg_peak_copies(k):.2f} float32 model copies "
              f"(target <= 3)")
    for b in (8, 32):
        print(f"  cpu-profile model training at batch {b:2d}: {train_throughput(b):.0f} images/s")


if __name__ == "__main__":
    main()
