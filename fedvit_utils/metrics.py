"""What block-wise encryption hides, measured (Nagamori & Kiya, Sec. 3.2-3.3, Eq. 2-14).

The paper shows one encrypted picture (Fig. 2) and states that the scheme protects the visual
information of test images; it gives no measurement. This module measures three things:

* visual security: PSNR and SSIM of encrypted (Eq. 9-13) against plain images, per key kind and per
  part of the key (block permutation E_b of Eq. 9 alone, block transform E_a of Eq. 12 alone, both);
* key space: the number of keys of each kind (N! block permutations, L! pixel permutations,
  continuous E_a), and why that number does not measure security;
* wrong keys: accuracy of an encrypted model (Eq. 3, 8) on images encrypted with another client's
  key, of the plain model on encrypted images, and of an encrypted model on plain images.

Also here: inputs for these measurements (an ImageFolder sample, 224x224 photographs), small error
measures shared with `attacks`, and saving tables (CSV + Markdown) and figures to a folder.
Images are float tensors (B, C, H, W) with pixel values in [0, 1] unless said otherwise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from .encryption import encrypt_images, encrypt_model
from .keys import KEY_KINDS, IllConditionedKeyError, SecretKey, generate_key

__all__ = [
    "KEY_SPACE_NOTE",
    "accuracy",
    "block_accuracy",
    "encryption_figure",
    "image_quality",
    "key_error",
    "key_space",
    "n_known_pairs_needed",
    "photographs",
    "sample_imagefolder",
    "save_report",
    "summarize_wrong_keys",
    "to_markdown",
    "visual_security",
    "wrong_key_accuracy",
]

KEY_SPACE_NOTE = (
    "Key space alone does not measure security: the scheme is linear and the same key encrypts every "
    "block of every image, so an attacker never enumerates keys. E_a is solved by least squares from "
    "known (plain, encrypted) blocks once they span L dimensions, or read off the encrypted model's "
    "patch embedding next to the plain one; the block permutation is matched position by position, "
    "or assembled as a jigsaw puzzle, not searched among N! orderings."
)


# -- inputs -----------------------------------------------------------------------------------------
def _as_float_images(images: torch.Tensor | np.ndarray, name: str = "images") -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.dim() != 4:
        raise ValueError(f"{name} must be a batch (B, C, H, W), got shape {tuple(x.shape)}; "
                         f"add a batch dimension.")
    if not x.is_floating_point():
        raise TypeError(f"{name} have dtype {x.dtype}; pass floats in [0, 1] (e.g. uint8 / 255).")
    return x


def sample_imagefolder(
    root: str | os.PathLike, n: int, split: str = "test", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` random images of an ImageFolder split as floats in [0, 1] (n, 3, H, W), and their labels."""
    from PIL import Image

    folder = Path(root) / split
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    if not classes:
        raise FileNotFoundError(f"no class folders under {folder}; expected {{split}}/{{class}}/*.jpg.")
    files = [(f, c) for c, name in enumerate(classes)
             for f in sorted((folder / name).iterdir()) if f.is_file()]
    if n > len(files):
        raise ValueError(f"asked for {n} images but {folder} holds {len(files)}.")
    pick = np.random.default_rng(seed).choice(len(files), size=n, replace=False)
    arrays = [np.asarray(Image.open(files[i][0]).convert("RGB")) for i in pick]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.tensor([files[i][1] for i in pick], dtype=torch.long)
    return images, labels


def photographs(size: int = 224, names: Sequence[str] = ("astronaut", "chelsea", "coffee")) -> torch.Tensor:
    """scikit-image photographs, centre-cropped square and resized: floats in [0, 1] (n, 3, size, size)."""
    from skimage import data
    from skimage.transform import resize

    out = []
    for name in names:
        img = getattr(data, name)()[..., :3]
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        crop = img[top : top + s, left : left + s]
        out.append(resize(crop, (size, size), anti_aliasing=True, preserve_range=True) / 255.0)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().clamp(0, 1)


# -- small measures ---------------------------------------------------------------------------------
def image_quality(
    reference: torch.Tensor, test: torch.Tensor, data_range: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image PSNR (dB) and SSIM of `test` against `reference`, both (B, C, H, W)."""
    ref, tst = _as_float_images(reference, "reference"), _as_float_images(test, "test")
    if ref.shape != tst.shape:
        raise ValueError(f"reference {tuple(ref.shape)} and test {tuple(tst.shape)} differ in shape.")
    ref_np = ref.detach().cpu().double().numpy()
    tst_np = tst.detach().cpu().double().numpy()
    psnr, ssim = [], []
    for a, b in zip(ref_np, tst_np, strict=True):
        # Encrypted values of dense keys leave [0, 1]; they are scored as they are, not clipped,
        # and the fixed data_range keeps the scale the plain images' one.
        with np.errstate(divide="ignore"):
            psnr.append(peak_signal_noise_ratio(a, b, data_range=data_range))
        ssim.append(structural_similarity(a, b, data_range=data_range, channel_axis=0))
    return np.asarray(psnr), np.asarray(ssim)


def key_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Relative Frobenius error ||estimate - truth|| / ||truth|| of a recovered matrix."""
    estimate, truth = np.asarray(estimate, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate {estimate.shape} and truth {truth.shape} differ in shape.")
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def block_accuracy(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of positions where a recovered permutation agrees with the true one."""
    estimate, truth = np.asarray(estimate), np.asarray(truth)
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate {estimate.shape} and truth {truth.shape} differ in shape.")
    return float(np.mean(estimate == truth))


def _draw_key(image_size: tuple[int, int], patch_size: int, channels: int, kind: str, seed: int) -> SecretKey:
    """generate_key, redrawing (seed + 1, + 2, ...) when a gaussian E_a is refused as ill-conditioned."""
    for attempt in range(100):
        try:
            return generate_key(image_size, patch_size, channels, kind, seed + attempt)
        except IllConditionedKeyError:
            continue
    raise IllConditionedKeyError(f"no well-conditioned {kind} key in 100 draws from seed {seed}.")


def _size(images: torch.Tensor) -> str:
    return f"{images.shape[-2]}x{images.shape[-1]}"


# -- 1. visual security -----------------------------------------------------------------------------
def _part_key(key: SecretKey, part: str) -> SecretKey:
    """The key with one of its two parts replaced by the identity (to measure each part alone)."""
    if part == "E_b + E_a":
        return key
    if part == "E_b only":
        length = key.block_length
        return SecretKey("permutation", key.image_size, key.patch_size, key.channels,
                         key.block_permutation, np.eye(length), np.arange(length))
    return SecretKey(key.kind, key.image_size, key.patch_size, key.channels,
                     np.arange(key.num_blocks), key.matrix, key.pixel_permutation)


def visual_security(
    images: torch.Tensor,
    patch_size: int,
    data: str,
    kinds: Sequence[str] = KEY_KINDS,
    seed: int = 0,
) -> pd.DataFrame:
    """PSNR/SSIM of encrypted vs plain images per key kind and key part; one row per (kind, part)."""
    x = _as_float_images(images).double()
    rows = []

    def row(kind: str, part: str, other: torch.Tensor) -> None:
        psnr, ssim = image_quality(x, other)
        # Dense keys push values far outside [0, 1], which alone drives raw PSNR down; scored again
        # after stretching each encrypted image to [0, 1], as it would be shown or saved as a picture.
        psnr_s, ssim_s = image_quality(x, _stretch(other))
        rows.append(dict(data=data, image_size=_size(x), patch_size=patch_size, kind=kind, part=part,
                         n_images=len(x), psnr_mean=psnr.mean(), psnr_std=psnr.std(),
                         ssim_mean=ssim.mean(), ssim_std=ssim.std(),
                         psnr_stretched_mean=psnr_s.mean(), ssim_stretched_mean=ssim_s.mean()))

    for kind in kinds:
        key = _draw_key(tuple(x.shape[-2:]), patch_size, x.shape[1], kind, seed)
        for part in ("E_b + E_a", "E_b only", "E_a only"):
            row(kind, part, encrypt_images(x, _part_key(key, part)))
    # What "nothing in common" scores: each image against another, unrelated plain image.
    if len(x) > 1:
        row("none", "unrelated plain image (reference)", x.roll(1, dims=0))
    return pd.DataFrame(rows)


def _stretch(images: torch.Tensor) -> torch.Tensor:
    """Each image mapped linearly onto [0, 1] by its own min and max."""
    flat = images.detach().double().flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view(images.shape)


def _show(img: torch.Tensor) -> np.ndarray:
    # Dense keys give values outside [0, 1]; stretch each image to its own range for display only.
    return _stretch(img[None])[0].cpu().permute(1, 2, 0).numpy()


def encryption_figure(
    images: torch.Tensor, patch_size: int, kinds: Sequence[str] = KEY_KINDS, seed: int = 0
) -> Figure:
    """Figure: each image (rows) plain and encrypted with each key kind (columns)."""
    x = _as_float_images(images).double()
    cols = ["plain", *kinds]
    fig = Figure(figsize=(2.2 * len(cols), 2.2 * len(x)), layout="constrained")
    axes = fig.subplots(len(x), len(cols), squeeze=False)
    encrypted = {k: encrypt_images(x, _draw_key(tuple(x.shape[-2:]), patch_size, x.shape[1], k, seed))
                 for k in kinds}
    for r in range(len(x)):
        for c, name in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(_show(x[r] if name == "plain" else encrypted[name][r]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name if name == "plain" else f"{name} key", fontsize=9)
    fig.suptitle(f"{_size(x)} images, block size {patch_size} (dense keys shown stretched to [0, 1])",
                 fontsize=9)
    return fig


# -- 2. key space -----------------------------------------------------------------------------------
def _log10_factorial(n: int) -> float:
    return math.lgamma(n + 1) / math.log(10)


def key_space(image_size: int | tuple[int, int], patch_size: int, channels: int = 3) -> pd.DataFrame:
    """Size of each key kind's key space (log10), its parts, and what an attacker needs instead."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not divisible by the block size {patch_size}.")
    n = (h // patch_size) * (w // patch_size)
    length = patch_size * patch_size * channels
    rows = []
    for kind in KEY_KINDS:
        log_b = _log10_factorial(n)
        if kind == "permutation":
            log_a, dof, space = _log10_factorial(length), 0, "L! pixel permutations"
            known_pairs = 1  # value multisets match blocks; one image usually pins the pixel permutation
        else:
            # A continuum: counting float64 matrices would give a meaningless huge number.
            log_a = math.inf
            dof = length * (length - 1) // 2 if kind == "orthogonal" else length * length
            space = "continuous: orthogonal group O(L)" if kind == "orthogonal" else "continuous: GL(L)"
            known_pairs = n_known_pairs_needed(n, length)
        rows.append(dict(
            image_size=f"{h}x{w}", patch_size=patch_size, kind=kind, N=n, L=length,
            log10_block_permutations=log_b, E_a_space=space, log10_E_a_keys=log_a, E_a_real_parameters=dof,
            log10_total=log_b + log_a,
            known_pairs_for_exact_recovery=known_pairs,
            extraction_from_weights_exact=("always (columns of W are permuted)" if kind == "permutation"
                                           else "when rank W = L, i.e. generically when D >= L"),
        ))
    return pd.DataFrame(rows)


def n_known_pairs_needed(num_blocks: int, block_length: int) -> int:
    """Smallest k with k*N > L: known blocks then over-determine E_a and pin down the block order."""
    return block_length // num_blocks + 1


# -- 3. wrong keys ----------------------------------------------------------------------------------
@torch.no_grad()
def _default_predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(x)


def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    predict: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy of `predict(model, batch)` logits (default: model in eval mode) on the images."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    predict = predict or _default_predict
    correct = 0
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            logits = predict(model, images[s : s + batch_size])
            correct += int((logits.argmax(-1).cpu() == labels[s : s + batch_size].cpu()).sum())
    return correct / max(len(images), 1)


def wrong_key_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    keys: Sequence[SecretKey],
    data: str,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    predict: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    wrong_keys_per_client: int = 1,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Accuracy with right, wrong and missing keys; one row per (case, model key, image key)."""
    if len(keys) < 2:
        raise ValueError("wrong-key accuracy needs at least two client keys (one to use, one to be wrong).")
    x = preprocess(images) if preprocess is not None else images  # encryption follows normalization
    kinds = {k.kind for k in keys}
    base = dict(data=data, image_size=_size(x), patch_size=keys[0].patch_size, kind="/".join(sorted(kinds)),
                n_images=len(x), chance=1.0 / max(int(labels.max()) + 1, 2))
    rows = [dict(base, case="plain model, plain images", model_key="-", image_key="-",
                 accuracy=accuracy(model, x, labels, predict, batch_size))]
    n = len(keys)
    for a, key in enumerate(keys):
        enc_model = encrypt_model(model, key)  # one encrypted copy at a time keeps memory flat
        own = encrypt_images(x, key)
        fp = key.fingerprint
        rows.append(dict(base, case="encrypted model, same key", model_key=fp, image_key=fp,
                         accuracy=accuracy(enc_model, own, labels, predict, batch_size)))
        for step in range(1, min(wrong_keys_per_client, n - 1) + 1):
            other = keys[(a + step) % n]
            acc = accuracy(enc_model, encrypt_images(x, other), labels, predict, batch_size)
            rows.append(dict(base, case="encrypted model, another client's key", model_key=fp,
                             image_key=other.fingerprint, accuracy=acc))
        rows.append(dict(base, case="encrypted model, plain images", model_key=fp, image_key="-",
                         accuracy=accuracy(enc_model, x, labels, predict, batch_size)))
        rows.append(dict(base, case="plain model, encrypted images", model_key="-", image_key=fp,
                         accuracy=accuracy(model, own, labels, predict, batch_size)))
        del enc_model
    return pd.DataFrame(rows)


def summarize_wrong_keys(detail: pd.DataFrame) -> pd.DataFrame:
    """Mean/min/max accuracy per case of a `wrong_key_accuracy` table."""
    keys = ["data", "image_size", "patch_size", "kind", "case"]
    out = detail.groupby(keys, sort=False)["accuracy"].agg(["mean", "min", "max", "count"]).reset_index()
    out = out.rename(columns={"mean": "accuracy_mean", "min": "accuracy_min", "max": "accuracy_max",
                              "count": "pairs"})
    return out.merge(detail.groupby(keys, sort=False)[["n_images", "chance"]].first().reset_index(), on=keys)


# -- saving -----------------------------------------------------------------------------------------
def to_markdown(table: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    """A GitHub Markdown table of `table` (no extra dependency)."""

    def cell(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return float_format.format(v)
        return str(v).replace("|", "\\|")

    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_report(
    folder: str | os.PathLike,
    tables: Mapping[str, pd.DataFrame] | None = None,
    figures: Mapping[str, Figure] | None = None,
    dpi: int = 150,
) -> list[Path]:
    """Write each table as NAME.csv and NAME.md and each figure as NAME.png into `folder`; return paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in (tables or {}).items():
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"table {name!r} is a {type(table).__name__}; pass a pandas DataFrame.")
        table.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.md").write_text(to_markdown(table))
        written += [out / f"{name}.csv", out / f"{name}.md"]
    for name, fig in (figures or {}).items():
        if not isinstance(fig, Figure):
            raise TypeError(f"figure {name!r} is a {type(fig).__name__}; pass a matplotlib Figure.")
        fig.savefig(out / f"{name}.png", dpi=dpi)
        written.append(out / f"{name}.png")
    return written
