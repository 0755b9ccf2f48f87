"""Visual security and key space of block-wise encryption (Sec. 3.3, Eq. 2-13).

* visual security: PSNR and SSIM of encrypted (Eq. 9-13) against plain images, per key kind and per
  part of the key (block permutation E_b of Eq. 9 alone, block transform E_a of Eq. 12 alone, both);
* key space: the number of keys of each kind (N! block permutations, L! pixel permutations,
  continuous E_a), and why that number does not measure security.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch

from ..encryption import encrypt_images
from ..keys import KEY_KINDS, key_kind
from .measures import as_float_images, draw_key, image_quality, part_key, size_label, stretch

KEY_SPACE_NOTE = (
    "Key space alone does not measure security: the scheme is linear and the same key encrypts every "
    "block of every image, so an attacker never enumerates keys. E_a is fitted to known (plain, encrypted) "
    "blocks, or read off the encrypted model's patch embedding next to the plain one; the block permutation "
    "is matched position by position, read off the position embedding, or assembled as a jigsaw puzzle, "
    "not searched among N! orderings. How often each succeeds is measured in the tables below."
)


def visual_security(
    images: torch.Tensor,
    patch_size: int,
    data_label: str,
    kinds: Sequence[str] = KEY_KINDS,
    seed: int = 0,
) -> pd.DataFrame:
    """PSNR/SSIM of encrypted vs plain images per key kind and key part; one row per (kind, part)."""
    x = as_float_images(images).double()
    rows = []

    def row(kind: str, part: str, other: torch.Tensor) -> None:
        psnr, ssim = image_quality(x, other)
        # Dense keys push values far outside [0, 1], which alone drives raw PSNR down; scored again
        # after stretching each encrypted image to [0, 1], as it would be shown or saved as a picture.
        psnr_s, ssim_s = image_quality(x, stretch(other))
        rows.append(dict(data=data_label, image_size=size_label(x), patch_size=patch_size, kind=kind, part=part,
                         n_images=len(x), psnr_mean=psnr.mean(), psnr_std=psnr.std(),
                         ssim_mean=ssim.mean(), ssim_std=ssim.std(),
                         psnr_stretched_mean=psnr_s.mean(), ssim_stretched_mean=ssim_s.mean()))

    for kind in kinds:
        key = draw_key(tuple(x.shape[-2:]), patch_size, x.shape[1], kind, seed)
        for part in ("E_b + E_a", "E_b only", "E_a only"):
            row(kind, part, encrypt_images(x, part_key(key, part)))
    # What "nothing in common" scores: each image against another, unrelated plain image.
    if len(x) > 1:
        row("none", "unrelated plain image (reference)", x.roll(1, dims=0))
    return pd.DataFrame(rows)


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
        how = key_kind(kind)
        log_b = _log10_factorial(n)
        log_a, dof, space = how.space(length)
        # Pixel-moving keys: value multisets match blocks; one image pins the pixels if its values tell them apart.
        known_pairs = 1 if how.moves_pixels_only else n_known_pairs_needed(n, length)
        rows.append(dict(
            image_size=f"{h}x{w}", patch_size=patch_size, kind=kind, N=n, L=length,
            log10_block_permutations=log_b, E_a_space=space, log10_E_a_keys=log_a, E_a_real_parameters=dof,
            log10_total=log_b + log_a,
            known_pairs_kN_over_L=known_pairs,
            E_a_from_weights_needs=("pairwise distinct columns of W" if how.moves_pixels_only
                                    else "rank W = L (D >= L); with D < L only its action on W's rows"),
            E_b_from_weights_needs="pairwise distinct patch rows of the position embedding",
        ))
    return pd.DataFrame(rows)


def n_known_pairs_needed(num_blocks: int, block_length: int) -> int:
    """Smallest k with k*N > L: the rank threshold of a dense E_a (whether k images reach it depends on them)."""
    return block_length // num_blocks + 1
