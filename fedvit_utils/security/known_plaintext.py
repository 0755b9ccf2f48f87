"""Known-plaintext attack on block-wise encryption (Sec. 3.3, Eq. 9-13).

The scheme is linear and one key serves every block of every image of a client: encrypted block
``j`` is ``y_j = x_{l_e(j)} E_a^-1`` (Eq. 9, 12). From k (plain, encrypted) pairs, match encrypted
block positions to plain ones, then solve E_a by least squares. Dense keys: the projector onto the
column space of the stacked blocks does not change under ``X -> X E_a^-1``, so its diagonal blocks
(one per position) match positions once the k*N known blocks exceed L. Permutation keys: a pixel
permutation keeps each block's multiset of values, so blocks match by their sorted values and pixels
by their value columns, from a single image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..encryption import encrypt_images
from ..keys import KEY_KINDS
from .measures import (
    RecoveredKey,
    as_float_images,
    assign,
    blocks_of,
    draw_key,
    evaluate_recovery,
    pair_cost,
    size_label,
)


def _position_signatures(blocks: np.ndarray, rank: int) -> np.ndarray:
    """(N, k, k) diagonal blocks of the projector onto the column space of the stacked (N*k, L) blocks.

    The column space of X (rows = blocks) equals that of X E_a^-1 for any invertible E_a, so these
    blocks are the same for a plain position and the encrypted position that holds it.
    """
    k, n, length = blocks.shape
    stacked = blocks.transpose(1, 0, 2).reshape(n * k, length)  # rows grouped by position
    u = np.linalg.svd(stacked, full_matrices=False)[0][:, :rank].reshape(n, k, rank)
    return np.einsum("jtr,jsr->jts", u, u)


def _numerical_rank(a: np.ndarray, rtol: float) -> int:
    s = np.linalg.svd(a, compute_uv=False)
    return int((s > rtol * s[0]).sum()) if s.size and s[0] > 0 else 0


def _fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares X with src @ X ~ dst, its singular-value cutoff chosen on held-out known rows."""
    # How many weak directions are signal and how many are rounding noise depends on the images and on
    # the conditioning of E_a; an attacker can test that on the pairs they know (every 5th row held out).
    held = np.arange(len(src)) % 5 == 0
    best, best_err = None, np.inf
    if held.sum() and (~held).sum() >= 2:
        for rcond in (None, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5):
            x = np.linalg.lstsq(src[~held], dst[~held], rcond=rcond)[0]
            err = float(np.linalg.norm(src[held] @ x - dst[held]))
            if err < best_err:
                best, best_err = rcond, err
    return np.linalg.lstsq(src, dst, rcond=best)[0]


def known_plaintext_attack(
    plain: torch.Tensor,
    encrypted: torch.Tensor,
    patch_size: int,
    kind: str,
    refine_steps: int = 5,
    rtol: float = 1e-6,
) -> RecoveredKey:
    """Recover E_a, E_a^-1 and the block permutation from k known (plain, encrypted) image pairs."""
    # rtol: singular values below rtol * the largest count as rounding noise. float32 ciphertexts
    # carry ~1e-7 relative error; fitting those directions (e.g. the empty high frequencies of upsampled
    # images) would amplify the noise into the key instead of leaving them at zero (min-norm).
    if kind not in KEY_KINDS:
        raise ValueError(f"unknown key kind {kind!r}; choose one of {KEY_KINDS} (the kind is public).")
    x, y = as_float_images(plain, "plain"), as_float_images(encrypted, "encrypted")
    if x.shape != y.shape:
        raise ValueError(f"plain {tuple(x.shape)} and encrypted {tuple(y.shape)} images differ in shape; "
                         f"pass the pairs in the same order.")
    a, b = blocks_of(x, patch_size), blocks_of(y, patch_size)
    k, n, length = a.shape
    if k == 0:
        # Nothing known: the best an attacker can do is guess; identity guesses score at chance.
        eye = np.eye(length)
        return RecoveredKey(np.arange(n), eye, eye.copy(), patch_size, "guess (k = 0)")
    if kind == "permutation":
        return _multiset_attack(a, b, patch_size)
    rank = _numerical_rank(a.reshape(-1, length), rtol)
    if k * n > rank:
        sig_b = _position_signatures(b, rank).reshape(1, n, k * k)
        sig_a = _position_signatures(a, rank).reshape(1, n, k * k)
        perm = assign(pair_cost(sig_b, sig_a))
    else:
        # The known blocks are linearly independent: every matching fits some E_a exactly.
        perm = np.arange(n)
    for _ in range(refine_steps):
        # Least-squares E_a^-1 from the current matching, then re-match positions by residual.
        inv = np.linalg.lstsq(a[:, perm].reshape(-1, length), b.reshape(-1, length), rcond=rtol)[0]
        new = assign(pair_cost(b, a @ inv))
        if np.array_equal(new, perm):
            break
        perm = new
    am, bm = a[:, perm].reshape(-1, length), b.reshape(-1, length)
    inv = _fit(am, bm)
    mat = _fit(bm, am)  # fitted directly: E_a^-1 may be rank-deficient here
    return RecoveredKey(perm, mat, inv, patch_size, "column-space signatures + least squares")


def _multiset_attack(a: np.ndarray, b: np.ndarray, patch_size: int) -> RecoveredKey:
    """Permutation keys: match blocks by sorted values, then pixels by their value columns."""
    length = a.shape[2]
    perm = assign(pair_cost(np.sort(b, axis=2), np.sort(a, axis=2)))
    am, bm = a[:, perm].reshape(-1, length), b.reshape(-1, length)
    # Encrypted pixel l is plain pixel pix[l] of the same block (Eq. 12 with a permutation E_a).
    pix = assign(pair_cost(bm.T[None], am.T[None]))
    inv = np.zeros((length, length))
    inv[pix, np.arange(length)] = 1.0
    return RecoveredKey(perm, inv.T.copy(), inv, patch_size, "value multisets + pixel columns")


def known_plaintext_curve(
    images: torch.Tensor,
    patch_size: int,
    data: str,
    ks: Sequence[int],
    kinds: Sequence[str] = KEY_KINDS,
    n_unseen: int = 16,
    seed: int = 0,
    pixel_range: tuple[float, float] = (0.0, 1.0),
) -> pd.DataFrame:
    """Known-plaintext attack as k grows: block accuracy, E_a error, PSNR of decrypting unseen images."""
    x = as_float_images(images).float()
    if max(ks) + n_unseen > len(x):
        raise ValueError(f"need max(ks) + n_unseen = {max(ks) + n_unseen} images, got {len(x)}.")
    known, unseen = x[: max(ks)], x[len(x) - n_unseen :]
    rows = []
    for kind in kinds:
        key = draw_key(tuple(x.shape[-2:]), patch_size, x.shape[1], kind, seed)
        # float32 ciphertexts, as a client would store or send them.
        enc_known, enc_unseen = encrypt_images(known, key), encrypt_images(unseen, key)
        n, length = key.num_blocks, key.block_length
        for k in ks:
            rec = known_plaintext_attack(known[:k], enc_known[:k], patch_size, kind)
            rows.append(dict(data=data, image_size=size_label(x), patch_size=patch_size, kind=kind, k=k,
                             known_blocks=k * n, L=length, N=n, chance=1.0 / n, n_unseen=n_unseen,
                             **evaluate_recovery(rec, key, unseen, enc_unseen, pixel_range)))
    return pd.DataFrame(rows)
