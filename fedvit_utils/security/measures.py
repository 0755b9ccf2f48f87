"""Small measures shared by the security modules, and an attacker's recovered key.

Images are float tensors (B, C, H, W) with pixel values in [0, 1] unless said otherwise. Clients
encrypt images after the model's normalization (Eq. 12 acts on what the patch embedding sees), so
attacks encrypt ``Normalization.apply(x)`` and score decryptions after ``Normalization.undo``.
A decrypted image counts as identical when every pixel is within half an 8-bit level of the plain one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..encryption import merge_blocks, split_blocks
from ..keys import IllConditionedKeyError, SecretKey, generate_key
from ..seeds import derive_seed

# A recovery counts as exact when every block is placed and decrypted unseen images are within half
# an 8-bit level everywhere, i.e. identical once quantised. E_a itself is then off only by float32
# rounding of the ciphertexts, amplified by the conditioning of the known blocks (see key_error).
EXACT_TOL = 0.5 / 255
# PSNR counted for an image identical to the plain one (any other 32x32x3 uint8 image is <= 83 dB).
PSNR_CAP = 100.0


class Normalization(NamedTuple):
    """Per-channel normalization (x - mean) / std of the model's preprocessing; mean/std are public."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @classmethod
    def of(cls, preprocess: torch.nn.Module) -> Normalization:
        """The normalization of a `data.Preprocess` (its mean and std buffers)."""
        return cls(tuple(preprocess.mean.flatten().tolist()), tuple(preprocess.std.flatten().tolist()))

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> what the model (and the encryption) sees."""
        return (images - self._view(self.mean, images)) / self._view(self.std, images)

    def undo(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images -> [0, 1] pixel values (not clipped)."""
        return images * self._view(self.std, images) + self._view(self.mean, images)

    @staticmethod
    def _view(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


PIXELS = Normalization()  # no normalization: the images are encrypted as [0, 1] pixel values


def as_float_images(images: torch.Tensor | np.ndarray, name: str = "images") -> torch.Tensor:
    """`images` as a float batch (B, C, H, W), or a ValueError/TypeError saying what is wrong."""
    x = torch.as_tensor(images)
    if x.dim() != 4:
        raise ValueError(f"{name} must be a batch (B, C, H, W), got shape {tuple(x.shape)}; "
                         f"add a batch dimension.")
    if not x.is_floating_point():
        raise TypeError(f"{name} have dtype {x.dtype}; pass floats in [0, 1] (e.g. uint8 / 255).")
    return x


def size_label(images: torch.Tensor) -> str:
    """"HxW" of a batch, for table columns."""
    return f"{images.shape[-2]}x{images.shape[-1]}"


def resize_label(source: torch.Tensor, resized: torch.Tensor, interpolation: str = "bicubic") -> str:
    """How images were brought to the model's input size, for table labels."""
    if tuple(source.shape[-2:]) == tuple(resized.shape[-2:]):
        return f"native {size_label(source)}"
    return (f"{size_label(source)} resized to {size_label(resized)} ({interpolation}, as the model's preprocessing; "
            f"in [0, 1], normalized only where the model's pipeline normalizes)")


def blocks_of(images: torch.Tensor, patch_size: int) -> np.ndarray:
    """(B, C, H, W) -> (B, N, L) float64 numpy blocks, flattened (C, p, p) like the encryption."""
    return split_blocks(images.detach().cpu().double(), patch_size).numpy()


def images_of(blocks: np.ndarray, image_size: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(B, N, L) numpy blocks -> (B, C, H, W) float64 images (the inverse of `blocks_of`)."""
    return merge_blocks(torch.from_numpy(np.ascontiguousarray(blocks)), image_size, patch_size)


def stretch(images: torch.Tensor) -> torch.Tensor:
    """Each image (B, C, H, W) mapped linearly onto [0, 1] by its own min and max (for display)."""
    flat = images.detach().double().flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view(images.shape)


def draw_key(image_size: tuple[int, int], patch_size: int, channels: int, kind: str, seed: int) -> SecretKey:
    """generate_key, redrawing (seed + 1, + 2, ...) when a gaussian E_a is refused as ill-conditioned."""
    for attempt in range(100):
        try:
            return generate_key(image_size, patch_size, channels, kind, seed + attempt)
        except IllConditionedKeyError:
            continue
    raise IllConditionedKeyError(f"no well-conditioned {kind} key in 100 draws from seed {seed}.")


def draw_keys(kind: str, n: int, image_size: tuple[int, int], patch_size: int, seed: int, concern: str,
              channels: int = 3) -> list[SecretKey]:
    """`n` independent demo keys of one kind, key i from derive_seed(seed, concern, kind, i)."""
    return [draw_key(tuple(image_size), patch_size, channels, kind, derive_seed(seed, concern, kind, i))
            for i in range(n)]


def part_key(key: SecretKey, part: str) -> SecretKey:
    """The key with one of its two parts replaced by the identity (to measure each part alone)."""
    if part == "E_b + E_a":
        return key
    if part == "E_b only":
        length = key.block_length
        return SecretKey("permutation", key.image_size, key.patch_size, key.channels,
                         key.block_permutation, np.eye(length), np.arange(length))
    return SecretKey(key.kind, key.image_size, key.patch_size, key.channels,
                     np.arange(key.num_blocks), key.matrix, key.pixel_permutation)


def image_quality(
    reference: torch.Tensor, test: torch.Tensor, data_range: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image PSNR (dB) and SSIM of `test` against `reference`, both (B, C, H, W)."""
    ref, tst = as_float_images(reference, "reference"), as_float_images(test, "test")
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


def assign(cost: np.ndarray) -> np.ndarray:
    """perm[j] = i minimising sum cost[j, perm[j]] over permutations (Hungarian algorithm)."""
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm


def pair_cost(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """cost[j, i] = sum_t ||b[t, j] - a[t, i]||^2 for (k, N, L) arrays, without a (k, N, N, L) temporary."""
    return (np.einsum("tjl,tjl->j", b, b)[:, None] + np.einsum("til,til->i", a, a)[None, :]
            - 2 * np.einsum("tjl,til->ji", b, a))


@dataclass(frozen=True, repr=False, eq=False)
class RecoveredKey:
    """An attacker's estimate of a key: block permutation, E_a and E_a^-1 (row-vector convention)."""

    block_permutation: np.ndarray  # (N,) encrypted position j holds plain block block_permutation[j]
    matrix: np.ndarray  # (L, L) estimate of E_a: plain block = encrypted block @ matrix
    inverse_matrix: np.ndarray  # (L, L) estimate of E_a^-1: encrypted block = plain block @ inverse
    patch_size: int
    method: str

    def __repr__(self) -> str:
        return f"RecoveredKey(method={self.method!r}, N={len(self.block_permutation)}, L={len(self.matrix)})"


def decrypt_recovered(encrypted: torch.Tensor, key: RecoveredKey, clip: tuple[float, float] | None = (0, 1)
                      ) -> torch.Tensor:
    """Decrypt images with an attacker's `RecoveredKey` (float64), clipped to the pixel range."""
    y = as_float_images(encrypted, "encrypted")
    blocks = blocks_of(y, key.patch_size) @ key.matrix
    plain = np.empty_like(blocks)
    plain[:, key.block_permutation] = blocks  # undo Eq. (9)
    x = images_of(plain, tuple(y.shape[-2:]), key.patch_size)
    return x.clamp(*clip) if clip is not None else x


def score_decryption(plain: torch.Tensor, decrypted: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per image: PSNR in dB (capped at PSNR_CAP) and whether every pixel is within half an 8-bit level.

    Both are [0, 1] images. Where the plain images lie on the 8-bit grid (decoded files), the decrypted
    ones are rounded to it first, as an image writer would; resized images are compared as floats.
    """
    x = plain.detach().cpu().double().flatten(1)
    y = decrypted.detach().cpu().double().clamp(0, 1).flatten(1)
    if torch.allclose(x * 255, (x * 255).round(), atol=1e-4):
        y = (y * 255).round() / 255
    err = (y - x).abs()
    mse = (err * err).mean(1).numpy()
    with np.errstate(divide="ignore"):
        psnr = np.minimum(10 * np.log10(1.0 / mse), PSNR_CAP)
    return psnr, (err.max(1).values < EXACT_TOL).numpy()


def evaluate_recovery(rec: RecoveredKey, key: SecretKey, unseen: torch.Tensor, unseen_enc: torch.Tensor,
                      norm: Normalization = PIXELS) -> dict:
    """How well a recovered key does on unseen images: blocks placed, E_a error, PSNR, identical images, exact.

    `unseen` are [0, 1] images; `unseen_enc` their ciphertexts (of `norm.apply(unseen)`, as clients make them).
    """
    acc = block_accuracy(rec.block_permutation, key.block_permutation)
    # The attacker knows the normalization and the pixel range; score_decryption clips to that range, as any
    # image decoder would.
    decrypted = norm.undo(decrypt_recovered(unseen_enc, rec, clip=None))
    psnr, identical = score_decryption(unseen, decrypted)
    return dict(blocks_placed=acc, key_error=key_error(rec.matrix, key.matrix), psnr_mean=float(psnr.mean()),
                psnr_min=float(psnr.min()), n_unseen=len(psnr), n_identical=int(identical.sum()),
                exact=bool(acc == 1.0 and identical.all()), method=rec.method)


def summarize_draws(table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group of draws (keys, known sets): how many were exact, blocks placed, PSNR mean and worst image."""
    g = table.groupby(list(by), sort=False, dropna=False)
    out = g.agg(draws=("exact", "size"), exact_draws=("exact", "sum"),
                all_blocks_placed=("blocks_placed", lambda s: int((s == 1.0).sum())),
                blocks_placed_mean=("blocks_placed", "mean"), psnr_mean=("psnr_mean", "mean"),
                psnr_worst_draw=("psnr_mean", "min"), psnr_worst_image=("psnr_min", "min"),
                images_identical=("n_identical", "sum"), images=("n_unseen", "sum")).reset_index()
    out["exact_draws"] = out["exact_draws"].astype(int)
    out["exact"] = out["exact_draws"].astype(str) + "/" + out["draws"].astype(str)
    return out
