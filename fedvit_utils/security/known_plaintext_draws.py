"""The known-plaintext attack measured over random draws, so thresholds come with their odds (Eq. 9-13).

One attack on one set of k known images says little: whether k images suffice depends on which images
they are (JPEG chroma subsampling, flat or greyscale images make the known blocks rank-deficient) and
on the key. Each draw here takes a fresh key and k fresh known images, and scores the recovered key
on the same unseen images. Within a draw the known sets are nested over k and shared by the key
kinds, so curves over k and kinds are paired.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..encryption import encrypt_images
from ..keys import KEY_KINDS, key_kind
from ..seeds import derive_seed
from .known_plaintext import attack_blocks
from .measures import (
    PIXELS,
    Normalization,
    as_float_images,
    blocks_of,
    draw_key,
    evaluate_recovery,
    size_label,
    summarize_draws,
)


def methods(kind: str) -> list[tuple[str, str]]:
    """(matching, fit) pairs measured for a key kind: the attack's defaults, both fits for orthogonal E_a."""
    how = key_kind(kind)
    if how.moves_pixels_only:
        return [("multiset", "pixels")]
    if how.orthogonal:
        return [("gram", "lstsq"), ("gram", "procrustes")]
    return [("projector", "lstsq")]


def _known_block_stats(blocks: np.ndarray) -> dict:
    """Stacked known blocks: rank at 1e-3 of the largest singular value (JPEG blocks have ~100 of 192), condition."""
    s = np.linalg.svd(blocks.reshape(-1, blocks.shape[2]), compute_uv=False)
    full = len(s) == blocks.shape[2] and s[-1] > 0
    return dict(known_rank_1e3=int((s > 1e-3 * s[0]).sum()),
                known_cond=float(s[0] / s[-1]) if full else float("inf"))


def known_plaintext_trials(
    images: torch.Tensor,
    patch_size: int,
    data_label: str,
    ks: Sequence[int],
    draws: int,
    n_unseen: int,
    kinds: Sequence[str] = KEY_KINDS,
    norm: Normalization = PIXELS,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (kind, method, k, draw): recover a fresh key from k random known pairs, decrypt unseen images.

    `images` are [0, 1]; the last `n_unseen` are the unseen images, the others the pool known pairs are
    drawn from. Clients encrypt `norm.apply(x)` (float32 ciphertexts); the attacker knows the plain
    images and the public normalization.
    """
    x = as_float_images(images).double()
    if not ks:
        return pd.DataFrame()
    if n_unseen < 1 or max(ks) + n_unseen > len(x):
        raise ValueError(f"need max(ks) + n_unseen = {max(ks) + n_unseen} images (n_unseen >= 1), got {len(x)}.")
    pool, unseen = x[: len(x) - n_unseen], x[len(x) - n_unseen :]
    size = tuple(x.shape[-2:])
    rows = []
    for d in range(draws):
        order = np.random.default_rng(derive_seed(seed, "known images", d)).permutation(len(pool))
        known = norm.apply(pool[torch.as_tensor(order[: max(ks)])])
        a_all = blocks_of(known, patch_size)
        stats = {k: _known_block_stats(a_all[:k]) for k in ks if k > 0}
        for kind in kinds:
            key = draw_key(size, patch_size, x.shape[1], kind, derive_seed(seed, "known plaintext", kind, d))
            b_all = blocks_of(encrypt_images(known.float(), key), patch_size)  # float32, as stored or sent
            enc_unseen = encrypt_images(norm.apply(unseen).float(), key)
            n, length = key.num_blocks, key.block_length
            for k in ks:
                a, b = a_all[:k], b_all[:k]
                for match, fit in methods(kind):
                    t0 = time.perf_counter()
                    rec = attack_blocks(a, b, patch_size, kind, match, fit)
                    seconds = time.perf_counter() - t0
                    rows.append(dict(data=data_label, image_size=size_label(x), patch_size=patch_size, kind=kind,
                                     k=k, draw=d, known_blocks=k * n, L=length, N=n,
                                     **stats.get(k, dict(known_rank_1e3=0, known_cond=float("inf"))),
                                     key_fingerprint=key.fingerprint, attack_seconds=seconds,
                                     **evaluate_recovery(rec, key, unseen, enc_unseen, norm)))
    return pd.DataFrame(rows)


def summarize_known_plaintext(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, method, k): exact draws of all, blocks placed, PSNR mean and worst image, known-block rank."""
    by = ["data", "image_size", "patch_size", "kind", "method", "k"]
    out = summarize_draws(trials, by)
    g = trials.groupby(by, sort=False, dropna=False)
    extra = g.agg(known_blocks=("known_blocks", "first"), L=("L", "first"),
                  known_rank_1e3_median=("known_rank_1e3", "median"),
                  known_cond_median=("known_cond", "median"), known_cond_max=("known_cond", "max"),
                  attack_ms_mean=("attack_seconds", lambda s: 1e3 * s.mean())).reset_index()
    return out.merge(extra, on=by)
