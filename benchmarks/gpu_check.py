"""`make gpu-check`: a slice of the `paper` profile on a CUDA GPU, exercising every CUDA path once.

ViT-B/16 at 224 (random weights: the cost does not depend on them), CIFAR-sized uint8 images resized
32 -> 224 on the GPU by the model's own preprocessing, the paper's batch 8 and SGD, bf16 autocast,
channels_last, pinned non-blocking copies; `--clients` clients x `--images` images, one FedAvg round
through the package's own client and aggregation code. Reports images/s, peak GPU memory and the
round's wall time, then checks Eq. (14) on the GPU in float32 with TF32 off (must hold to 1e-4 with
identical predictions) and under bf16 autocast (reported, not promised). From images/s it estimates
the wall time of the full `paper` profile. Writes figures/gpu-check/<gpu>.json.

On a machine without CUDA it says so in one line and exits 0. `--allow-cpu --tiny` runs the same
code on the CPU with a tiny ViT, which is how the test suite keeps this script working.

    python benchmarks/gpu_check.py [--clients 2] [--images 256] [--out figures/gpu-check]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

from fedvit_utils import paths
from fedvit_utils.data import ImageData, Preprocess, load_dataset
from fedvit_utils.devices import hardware, prepare_model
from fedvit_utils.encryption import EncryptImages
from fedvit_utils.evaluation import predict
from fedvit_utils.federated.aggregation import FedAvg
from fedvit_utils.federated.client import LocalTraining
from fedvit_utils.files import write_json
from fedvit_utils.keys import generate_key
from fedvit_utils.model_encryption import encrypt_model
from fedvit_utils.models import create_vit, input_size, patch_size
from fedvit_utils.profiles import PROFILES

TINY = dict(img_size=224, patch_size=16, embed_dim=48, depth=1, num_heads=2)


def cifar_images(n: int) -> tuple[ImageData, str]:
    """`n` CIFAR-10 training images from the data setting, or seeded random uint8 images if there are none."""
    try:
        data = load_dataset("cifar10", "train", max_per_class=-(-n // 10))
        return data.subset(torch.arange(n)), data.source
    except (FileNotFoundError, ValueError):
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (n,), generator=g)
        return ImageData(images, labels, [str(i) for i in range(10)], "random uint8 32x32"), "random uint8 32x32"


def one_round(model: torch.nn.Module, trainer: LocalTraining, clients: list[ImageData]) -> tuple[float, int]:
    """One FedAvg round over `clients` with the package's own client and aggregation; (seconds, images)."""
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    mean = FedAvg()
    for c, data in enumerate(clients):
        update = trainer.fit(model, global_state, data, 0, c)
        mean.add(update.state, update.num_examples)
    model.load_state_dict(mean.result())
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, sum(len(d) for d in clients)


def eq14(model: torch.nn.Module, images: torch.Tensor, preprocess: Preprocess, device: torch.device, kind: str,
         bf16: bool) -> dict:
    """Encrypted model on encrypted images against the plain path, on `device`."""
    key = generate_key(input_size(model), patch_size(model), 3, kind, seed=0)
    enc_model = encrypt_model(model, key)
    # predict's exact mode is float32 with TF32 off; otherwise it runs under autocast (bf16 on CUDA), where the
    # images are still encrypted in float32 (encryption's compute dtype) and only the models run in bf16.
    plain = predict(model, images, preprocess, 16, device, exact=not bf16)
    enc = predict(enc_model, images, preprocess, 16, device, transform=EncryptImages(key), exact=not bf16)
    precision = "float32, TF32 off"
    if bf16:
        precision = "bf16 autocast" if device.type == "cuda" else "autocast (a no-op on the CPU)"
    return {"key_kind": kind, "precision": precision,
            "max_abs_logit_diff": (plain - enc).abs().max().item(),
            "identical_predictions": (plain.argmax(1) == enc.argmax(1)).float().mean().item(), "n": len(images)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--images", type=int, default=256, help="training images per client")
    ap.add_argument("--check-images", type=int, default=64, help="test images for the Eq. 14 check")
    ap.add_argument("--out", default=str(paths.FIGURES_DIR / "gpu-check"))
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no CUDA (tests)")
    ap.add_argument("--tiny", action="store_true", help="a depth-1 ViT at 224 instead of ViT-B/16 (tests)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print(f"gpu-check: no CUDA device on this machine ({hardware()}); nothing to measure.")
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    paper = PROFILES["paper"]
    torch.manual_seed(0)
    model = create_vit("vit_tiny_patch16_224" if args.tiny else paper.model, 10, **(TINY if args.tiny else {}))
    model = prepare_model(model, device)
    preprocess = Preprocess.for_model(model).to(device)  # resizes 32 -> 224 on the device
    trainer = LocalTraining.from_profile(paper, preprocess, device)
    data, source = cifar_images(args.clients * args.images + args.check_images)
    clients = [data.subset(torch.arange(c * args.images, (c + 1) * args.images)) for c in range(args.clients)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warm = clients[0].subset(torch.arange(min(2 * paper.batch_size, args.images)))
    one_round(model, trainer, [warm])  # warm-up: cuDNN autotuning, the allocator
    seconds, trained = one_round(model, trainer, clients)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    images_per_s = trained / seconds
    per_dataset = paper.num_clients * paper.train_per_client * paper.rounds * 2  # federated + baseline epochs
    check = data.images[args.clients * args.images:]
    model.eval()
    report = {
        "hardware": hardware(), "torch": torch.__version__, "model": "tiny ViT (test)" if args.tiny else paper.model,
        "data": source, "batch_size": paper.batch_size, "clients": args.clients, "images_per_client": args.images,
        "autocast": "bf16" if device.type == "cuda" else "none (CPU)", "channels_last": device.type == "cuda",
        "round_seconds": seconds, "train_images_per_s": images_per_s, "peak_gpu_memory_gib": peak,
        "paper_profile_estimate_hours": {
            "training": len(paper.datasets) * per_dataset / images_per_s / 3600,
            "assumes": f"{len(paper.datasets)} datasets x (10 clients x 5,000 images x 10 rounds, federated + "
                       f"baseline) at this images/s; evaluation and notebooks not included"},
        "eq14": [eq14(model, check, preprocess, device, kind, bf16) for kind in ("orthogonal", "permutation")
                 for bf16 in (False, True)],
    }
    strict = [r for r in report["eq14"] if r["precision"].startswith("float32")]
    report["eq14_holds_in_float32"] = all(r["max_abs_logit_diff"] <= 1e-4 and r["identical_predictions"] == 1.0
                                          for r in strict)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9]+", "-", hardware().split(",")[0]).strip("-").lower()
    path = out / f"{name}{'-tiny' if args.tiny else ''}.json"
    write_json(path, report)
    print(f"gpu-check: {images_per_s:.1f} training images/s, round {seconds:.1f} s, peak memory "
          f"{'n/a' if peak is None else f'{peak:.1f} GiB'}; Eq. 14 in float32: "
          f"{'holds' if report['eq14_holds_in_float32'] else 'FAILS'}; full paper profile ~"
          f"{report['paper_profile_estimate_hours']['training']:.1f} h of training -> {path}")
    return 0 if report["eq14_holds_in_float32"] else 1


if __name__ == "__main__":
    sys.exit(main())
