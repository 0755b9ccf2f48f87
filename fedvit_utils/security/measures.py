"""Small measures shared by the security modules, and an attacker's recovered key.

Images are float tensors (B, C, H, W) with pixel values in [0, 1] unless said otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..encryption import merge_blocks, split_blocks
from ..keys import IllConditionedKeyError, SecretKey, generate_key

# A recovery counts as exact when every block is placed and decrypted unseen images are within half
# an 8-bit level everywhere, i.e. identical once quantised. E_a itself is then off only by float32
# rounding of the ciphertexts, amplified by the conditioning of the known blocks (see key_error).
EXACT_TOL = 0.5 / 255


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


def evaluate_recovery(rec: RecoveredKey, key: SecretKey, unseen_plain: torch.Tensor, unseen_enc: torch.Tensor,
                      pixel_range: tuple[float, float]) -> dict:
    """How well a recovered key does: blocks placed, E_a error, PSNR/SSIM of decrypted unseen images, exactness."""
    err = key_error(rec.matrix, key.matrix)
    acc = block_accuracy(rec.block_permutation, key.block_permutation)
    # The attacker knows the pixel range and clips to it, as any decoder of an image would.
    decrypted = decrypt_recovered(unseen_enc, rec, clip=pixel_range)
    span = pixel_range[1] - pixel_range[0]
    psnr, ssim = image_quality(unseen_plain, decrypted, data_range=span)
    max_err = float((decrypted - unseen_plain.double()).abs().max())
    return dict(block_accuracy=acc, key_error=err, decrypt_psnr=float(np.mean(psnr)),
                decrypt_ssim=float(np.mean(ssim)), decrypt_max_abs_error=max_err,
                exact=bool(acc == 1.0 and max_err < EXACT_TOL * span), method=rec.method)
