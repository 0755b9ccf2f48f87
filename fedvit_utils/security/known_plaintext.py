"""Known-plaintext attack on block-wise encryption (Sec. 3.3, Eq. 9-13).

The scheme is linear and one key serves every block of every image of a client: encrypted block
``j`` is ``y_j = x_{l_e(j)} E_a^-1`` (Eq. 9, 12). From k known (plain, encrypted) pairs the attack
(1) matches encrypted block positions to plain ones, then (2) fits E_a to the matched blocks.

Matching (`match_positions`):

``multiset``   permutation keys: a pixel permutation keeps each block's multiset of values.
``gram``       orthogonal (and permutation) keys: <x E_a^-1, x' E_a^-1> = <x, x'> when E_a is
               orthogonal, so the k x k Gram matrix of the known blocks at one position is the same
               before and after encryption. Informative from k = 1 (block norms).
``projector``  any invertible E_a: the projector onto the column space of the stacked known blocks
               does not change under X -> X E_a^-1; its diagonal k x k blocks (one per position)
               match positions once the k*N known blocks exceed their rank. Refined by residuals.

Fitting (`fit_block_transform`): ``lstsq`` (least squares, its singular-value cutoff chosen on held-out
known rows; leaves unseen directions at zero), ``procrustes`` (the nearest orthogonal matrix, U V^T
from the SVD of A^T B), ``pixels`` (permutation keys: pixels matched by their value columns).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..keys import key_kind
from .measures import RecoveredKey, as_float_images, assign, blocks_of, pair_cost

Match = Literal["auto", "multiset", "gram", "projector"]
Fit = Literal["auto", "lstsq", "procrustes", "pixels"]


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


def _features(blocks: np.ndarray) -> np.ndarray:
    """(k, N, F) per-image features of each position -> (1, N, k*F) for `pair_cost`."""
    k, n, f = blocks.shape
    return blocks.transpose(1, 0, 2).reshape(1, n, k * f)


def match_positions(plain: np.ndarray, encrypted: np.ndarray, method: Match, rtol: float = 1e-6,
                    refine_steps: int = 5) -> np.ndarray:
    """perm with encrypted[:, j] the encryption of plain[:, perm[j]]; both (k, N, L) blocks."""
    a, b = plain, encrypted
    k, n, length = a.shape
    if method == "multiset":
        return assign(pair_cost(_features(np.sort(b, axis=2)), _features(np.sort(a, axis=2))))
    if method == "gram":
        gram_a = np.einsum("tjl,sjl->jts", a, a).reshape(1, n, k * k)
        gram_b = np.einsum("tjl,sjl->jts", b, b).reshape(1, n, k * k)
        return assign(pair_cost(gram_b, gram_a))
    if method != "projector":
        raise ValueError(f"unknown matching {method!r}; choose 'multiset', 'gram' or 'projector'.")
    # rtol: singular values below rtol * the largest count as rounding noise. float32 ciphertexts
    # carry ~1e-7 relative error; fitting those directions would amplify the noise into the key.
    rank = _numerical_rank(a.reshape(-1, length), rtol)
    if k * n <= rank:
        return np.arange(n)  # the known blocks are independent: every matching fits some E_a exactly
    perm = assign(pair_cost(_position_signatures(b, rank).reshape(1, n, k * k),
                            _position_signatures(a, rank).reshape(1, n, k * k)))
    for _ in range(refine_steps):
        # Least-squares E_a^-1 from the current matching, then re-match positions by residual.
        inv = np.linalg.lstsq(a[:, perm].reshape(-1, length), b.reshape(-1, length), rcond=rtol)[0]
        new = assign(pair_cost(b, a @ inv))
        if np.array_equal(new, perm):
            break
        perm = new
    return perm


RCONDS = (None, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5)  # None: numpy's default, machine epsilon * max(M, L)


def _truncated_solutions(src: np.ndarray, dst: np.ndarray) -> list[np.ndarray]:
    """Minimum-norm least-squares X (src @ X ~ dst) for each cutoff in RCONDS, from one SVD of src."""
    u, s, vt = np.linalg.svd(src, full_matrices=False)
    proj = u.T @ dst
    out = []
    for rcond in RCONDS:
        cutoff = (np.finfo(float).eps * max(src.shape) if rcond is None else rcond) * (s[0] if s.size else 0.0)
        keep = s > cutoff
        out.append(vt[keep].T @ (proj[keep] / s[keep, None]))
    return out


def _lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares X with src @ X ~ dst, its singular-value cutoff chosen on held-out known rows."""
    # How many weak directions are signal and how many are rounding noise depends on the images and on
    # the conditioning of E_a; an attacker can test that on the pairs they know (every 5th row held out).
    held = np.arange(len(src)) % 5 == 0
    best = 0
    if held.sum() and (~held).sum() >= 2:
        errors = [np.linalg.norm(src[held] @ x - dst[held]) for x in _truncated_solutions(src[~held], dst[~held])]
        best = int(np.argmin(errors))
    return _truncated_solutions(src, dst)[best]


def fit_block_transform(plain_rows: np.ndarray, enc_rows: np.ndarray, method: Fit) -> tuple[np.ndarray, np.ndarray]:
    """(E_a, E_a^-1) estimates from matched (M, L) rows with enc_rows ~ plain_rows @ E_a^-1."""
    a, b = plain_rows, enc_rows
    if method == "lstsq":
        return _lstsq(b, a), _lstsq(a, b)  # both fitted: E_a^-1 may be rank-deficient here
    if method == "procrustes":
        # argmin over orthogonal Q of ||A Q - B||: Q = U V^T with A^T B = U S V^T.
        u, _, vt = np.linalg.svd(a.T @ b)
        inv = u @ vt
        return inv.T.copy(), inv
    if method == "pixels":
        length = a.shape[1]
        pix = assign(pair_cost(b.T[None], a.T[None]))  # encrypted pixel l is plain pixel pix[l]
        inv = np.zeros((length, length))
        inv[pix, np.arange(length)] = 1.0
        return inv.T.copy(), inv
    raise ValueError(f"unknown fit {method!r}; choose 'lstsq', 'procrustes' or 'pixels'.")


def default_methods(kind: str, known_blocks: int, block_length: int) -> tuple[str, str]:
    """The attack's (matching, fit) for a key kind: the strongest measured for it."""
    how = key_kind(kind)
    if how.moves_pixels_only:
        return "multiset", "pixels"
    if how.orthogonal:
        # Below L known blocks, least squares leaves unseen directions at zero, which beats the
        # arbitrary rotation Procrustes puts there; from L on, Procrustes uses the orthogonality.
        return "gram", "procrustes" if known_blocks >= block_length else "lstsq"
    return "projector", "lstsq"


def known_plaintext_attack(plain: torch.Tensor, encrypted: torch.Tensor, patch_size: int, kind: str,
                           match: Match = "auto", fit: Fit = "auto") -> RecoveredKey:
    """Recover E_a, E_a^-1 and the block permutation from k known (plain, encrypted) image pairs."""
    key_kind(kind)  # an unknown kind raises here, before any work (the kind is public)
    x, y = as_float_images(plain, "plain"), as_float_images(encrypted, "encrypted")
    if x.shape != y.shape:
        raise ValueError(f"plain {tuple(x.shape)} and encrypted {tuple(y.shape)} images differ in shape; "
                         f"pass the pairs in the same order.")
    return attack_blocks(blocks_of(x, patch_size), blocks_of(y, patch_size), patch_size, kind, match, fit)


def attack_blocks(a: np.ndarray, b: np.ndarray, patch_size: int, kind: str, match: Match = "auto",
                  fit: Fit = "auto") -> RecoveredKey:
    """The attack on blocks: `a`, `b` (k, N, L) known plain and encrypted blocks (`blocks_of`) -> the key."""
    k, n, length = a.shape
    if k == 0:
        # Nothing known: the best an attacker can do is guess; identity guesses score at chance.
        eye = np.eye(length)
        return RecoveredKey(np.arange(n), eye, eye.copy(), patch_size, "guess (k = 0)")
    auto_match, auto_fit = default_methods(kind, k * n, length)
    match, fit = auto_match if match == "auto" else match, auto_fit if fit == "auto" else fit
    perm = match_positions(a, b, match)
    mat, inv = fit_block_transform(a[:, perm].reshape(-1, length), b.reshape(-1, length), fit)
    return RecoveredKey(perm, mat, inv, patch_size, f"{match} + {fit}")
