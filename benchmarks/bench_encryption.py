"""Encryption speed, as ratios measured side by side in one run (this machine is noisy).

For a batch of 224x224 images with 16x16 blocks (L = 768, N = 196) it times:
  * encrypt_images for each key kind,
  * `encrypt_images_reference`, the per-block loop that is the package's definition (Sec. 3.3 read literally),
  * the bare matrix product of the same shape, (B*N x L) @ (L x L): the physical floor of a dense key,
  * one ViT-B/16 forward pass at 224 (random weights; the cost does not depend on them).
Targets: dense keys within 1.5x of the bare product; permutation keys >= 4x faster than dense;
the client's encryption <= 2% of a ViT-B/16 forward pass.

    python benchmarks/bench_encryption.py [--batch 32] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import timm
import torch

from fedvit_utils.encryption import encrypt_images, encrypt_images_reference
from fedvit_utils.keys import KEY_KINDS, generate_key


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--vit-batch", type=int, default=4)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()

    torch.manual_seed(0)
    b, size, p = args.batch, 224, 16
    x = torch.randn(b, 3, size, size)
    keys = {kind: generate_key(size, p, kind=kind, seed=0) for kind in KEY_KINDS}
    n, length = keys["orthogonal"].num_blocks, keys["orthogonal"].block_length
    rows = torch.randn(b * n, length)
    mat = torch.randn(length, length)

    seconds = {"bare matmul (B*N x L) @ (L x L)": timed(lambda: rows @ mat, args.repeats)}
    for kind, key in keys.items():
        seconds[f"encrypt_images[{kind}]"] = timed(lambda key=key: encrypt_images(x, key), args.repeats)
    seconds["per-block loop reference"] = timed(lambda: encrypt_images_reference(x, keys["orthogonal"]), args.repeats)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=10).eval()
    xv = torch.randn(args.vit_batch, 3, size, size)
    with torch.inference_mode():
        vit_s = timed(lambda: vit(xv), max(2, args.repeats // 2)) / args.vit_batch * b
    seconds["ViT-B/16 forward (same batch)"] = vit_s

    ips = {name: b / s for name, s in seconds.items()}
    dense = max(seconds["encrypt_images[orthogonal]"], seconds["encrypt_images[gaussian]"])
    ratios = {
        "dense / bare matmul (target <= 1.5)": dense / seconds["bare matmul (B*N x L) @ (L x L)"],
        "dense / permutation (target >= 4)": seconds["encrypt_images[orthogonal]"]
        / seconds["encrypt_images[permutation]"],
        "per-block loop / dense": seconds["per-block loop reference"] / dense,
        "dense encryption / ViT-B/16 forward (target <= 0.02)": dense / vit_s,
        "permutation encryption / ViT-B/16 forward": seconds["encrypt_images[permutation]"] / vit_s,
    }
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"batch {b} x 3 x {size} x {size}, blocks {p}x{p} (N={n}, L={length}); {machine}")
    for name in seconds:
        print(f"  {name:40s} {ips[name]:10.1f} images/s")
    for name, value in ratios.items():
        print(f"  {name:55s} {value:8.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "batch": b, "images_per_s": ips, "ratios": ratios}, fh, indent=2)


if __name__ == "__main__":
    main()
