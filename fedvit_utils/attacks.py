"""Attacks on block-wise image and ViT model encryption (Nagamori & Kiya, Sec. 3.2-3.3, Eq. 2-14).

The scheme is linear and one key serves every block of every image of a client: encrypted block
``j`` is ``y_j = x_{l_e(j)} E_a^-1`` (Eq. 9, 12) and the encrypted model holds ``W E_a^T`` and
``E_b E_pos`` (Eq. 3, 8). Three attacks follow from that, plus a ciphertext-only baseline:

* known plaintext (`known_plaintext_attack`): from k (plain, encrypted) pairs, match encrypted block
  positions to plain ones, then solve E_a by least squares. Dense keys: the projector onto the
  column space of the stacked blocks does not change under ``X -> X E_a^-1``, so its diagonal blocks
  (one per position) match positions once the k*N known blocks exceed L (exact from then on).
  Permutation keys: a pixel permutation keeps each block's multiset of values, so blocks match by
  their sorted values and pixels by their value columns, from a single image.
* key extraction from weights (`extract_key_from_model`): every FedAvg participant holds the plain
  integrated model; with one client's encrypted model, E_a^T = pinv(W) W_hat (exact when rank W = L)
  and the block permutation is where each encrypted position-embedding row sits in the plain one.
* ciphertext only (`solve_jigsaw`): a greedy jigsaw solver reassembles block-permuted images from
  boundary dissimilarity, for the block permutation (E_b) alone.

All attacks return a `RecoveredKey` that `decrypt_recovered` applies. Its repr hides the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment
from torch import nn

from .encryption import _vit_parts, encrypt_images, encrypt_model
from .keys import KEY_KINDS
from .metrics import _as_float_images, _draw_key, _size, block_accuracy, image_quality, key_error

__all__ = [
    "RecoveredKey",
    "decrypt_recovered",
    "extract_key_from_model",
    "jigsaw_report",
    "key_extraction_report",
    "known_plaintext_attack",
    "known_plaintext_curve",
    "known_plaintext_figure",
    "solve_jigsaw",
]

# A recovery counts as exact when every block is placed and decrypted unseen images are within half
# an 8-bit level everywhere, i.e. identical once quantised. E_a itself is then off only by float32
# rounding of the ciphertexts, amplified by the conditioning of the known blocks (see key_error).
EXACT_TOL = 0.5 / 255


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


# -- blocks -----------------------------------------------------------------------------------------
def _to_blocks(images: torch.Tensor, p: int) -> np.ndarray:
    """(B, C, H, W) -> (B, N, L) float64, blocks row-major and flattened (C, p, p) like the encryption."""
    b, c, h, w = images.shape
    if h % p or w % p:
        raise ValueError(f"images are {h}x{w}, not divisible by the block size {p}.")
    x = images.detach().cpu().double().reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p).numpy()


def _from_blocks(blocks: np.ndarray, shape: torch.Size | tuple[int, ...], p: int) -> torch.Tensor:
    b, c, h, w = shape
    x = torch.from_numpy(np.ascontiguousarray(blocks)).reshape(b, h // p, w // p, c, p, p)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def decrypt_recovered(encrypted: torch.Tensor, key: RecoveredKey, clip: tuple[float, float] | None = (0, 1)
                      ) -> torch.Tensor:
    """Decrypt images with an attacker's `RecoveredKey` (float64), clipped to the pixel range."""
    y = _as_float_images(encrypted, "encrypted")
    blocks = _to_blocks(y, key.patch_size) @ key.matrix
    plain = np.empty_like(blocks)
    plain[:, key.block_permutation] = blocks  # undo Eq. (9)
    x = _from_blocks(plain, y.shape, key.patch_size)
    return x.clamp(*clip) if clip is not None else x


def _assign(cost: np.ndarray) -> np.ndarray:
    """perm[j] = i minimising sum cost[j, perm[j]] over permutations (Hungarian algorithm)."""
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm


def _pair_cost(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """cost[j, i] = sum_t ||b[t, j] - a[t, i]||^2 for (k, N, L) arrays, without a (k, N, N, L) temporary."""
    return (np.einsum("tjl,tjl->j", b, b)[:, None] + np.einsum("til,til->i", a, a)[None, :]
            - 2 * np.einsum("tjl,til->ji", b, a))


# -- 4. known-plaintext attack ----------------------------------------------------------------------
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
    x, y = _as_float_images(plain, "plain"), _as_float_images(encrypted, "encrypted")
    if x.shape != y.shape:
        raise ValueError(f"plain {tuple(x.shape)} and encrypted {tuple(y.shape)} images differ in shape; "
                         f"pass the pairs in the same order.")
    a, b = _to_blocks(x, patch_size), _to_blocks(y, patch_size)
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
        perm = _assign(_pair_cost(sig_b, sig_a))
    else:
        # The known blocks are linearly independent: every matching fits some E_a exactly.
        perm = np.arange(n)
    for _ in range(refine_steps):
        # Least-squares E_a^-1 from the current matching, then re-match positions by residual.
        inv = np.linalg.lstsq(a[:, perm].reshape(-1, length), b.reshape(-1, length), rcond=rtol)[0]
        new = _assign(_pair_cost(b, a @ inv))
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
    perm = _assign(_pair_cost(np.sort(b, axis=2), np.sort(a, axis=2)))
    am, bm = a[:, perm].reshape(-1, length), b.reshape(-1, length)
    # Encrypted pixel l is plain pixel pix[l] of the same block (Eq. 12 with a permutation E_a).
    pix = _assign(_pair_cost(bm.T[None], am.T[None]))
    inv = np.zeros((length, length))
    inv[pix, np.arange(length)] = 1.0
    return RecoveredKey(perm, inv.T.copy(), inv, patch_size, "value multisets + pixel columns")


def _evaluate(rec: RecoveredKey, key, unseen_plain: torch.Tensor, unseen_enc: torch.Tensor,
              pixel_range: tuple[float, float]) -> dict:
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
    x = _as_float_images(images).float()
    if max(ks) + n_unseen > len(x):
        raise ValueError(f"need max(ks) + n_unseen = {max(ks) + n_unseen} images, got {len(x)}.")
    known, unseen = x[: max(ks)], x[len(x) - n_unseen :]
    rows = []
    for kind in kinds:
        key = _draw_key(tuple(x.shape[-2:]), patch_size, x.shape[1], kind, seed)
        # float32 ciphertexts, as a client would store or send them.
        enc_known, enc_unseen = encrypt_images(known, key), encrypt_images(unseen, key)
        n, length = key.num_blocks, key.block_length
        for k in ks:
            rec = known_plaintext_attack(known[:k], enc_known[:k], patch_size, kind)
            rows.append(dict(data=data, image_size=_size(x), patch_size=patch_size, kind=kind, k=k,
                             known_blocks=k * n, L=length, N=n, chance=1.0 / n, n_unseen=n_unseen,
                             **_evaluate(rec, key, unseen, enc_unseen, pixel_range)))
    return pd.DataFrame(rows)


def known_plaintext_figure(curve: pd.DataFrame) -> Figure:
    """Figure: block accuracy, E_a error and decryption PSNR against k, one line per (kind, setting)."""
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    for (_, size, p, kind), g in curve.groupby(["data", "image_size", "patch_size", "kind"], sort=False):
        label = f"{kind}, {size} p={p}"
        axes[0].plot(g["k"], g["block_accuracy"], marker="o", label=label)
        axes[1].semilogy(g["k"], g["key_error"].clip(lower=1e-16), marker="o", label=label)
        axes[2].plot(g["k"], g["decrypt_psnr"].clip(upper=100), marker="o", label=label)
    for ax, title in zip(axes, ["blocks placed correctly", "relative error of E_a",
                                "PSNR of decrypted unseen images (dB, capped 100)"], strict=True):
        ax.set_xlabel("known (plain, encrypted) pairs k")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Known-plaintext attack: " + ", ".join(sorted(set(curve["data"]))), fontsize=9)
    return fig


# -- 5. key extraction from weights -----------------------------------------------------------------
@torch.no_grad()
def extract_key_from_model(plain_model: nn.Module, encrypted_model: nn.Module, kind: str) -> RecoveredKey:
    """Recover E_a from W_hat = W E_a^T and the block permutation from the position embeddings."""
    proj, pos, prefix, grid = _vit_parts(plain_model)
    proj_hat, pos_hat, _, grid_hat = _vit_parts(encrypted_model)
    if proj.weight.shape != proj_hat.weight.shape or grid != grid_hat:
        raise ValueError(f"the models differ in patch embedding {tuple(proj.weight.shape)} vs "
                         f"{tuple(proj_hat.weight.shape)}: pass the plain model the encrypted one came from.")
    if pos is None or pos_hat is None:
        raise ValueError("the models have no learned position embedding; the block order cannot be read off.")
    d = proj.weight.shape[0]
    w = proj.weight.detach().cpu().double().reshape(d, -1).numpy()
    w_hat = proj_hat.weight.detach().cpu().double().reshape(d, -1).numpy()
    length = w.shape[1]
    if kind == "permutation":
        # Column l of W E_a^T is column pix[l] of W: a matching, exact even when D < L.
        pix = _assign(_pair_cost(w_hat.T[None], w.T[None]))
        mat = np.zeros((length, length))
        mat[np.arange(length), pix] = 1.0
        inv, method = mat.T.copy(), "column matching of W"
    else:
        # Least squares; with rank W < L only E_a's action on the row space of W is determined.
        mat = np.linalg.lstsq(w, w_hat, rcond=None)[0].T
        inv = np.linalg.pinv(mat)
        method = "least squares pinv(W) W_hat"
    rows = pos[0, prefix:].detach().cpu().double().numpy()
    rows_hat = pos_hat[0, prefix:].detach().cpu().double().numpy()
    perm = _assign(_pair_cost(rows_hat[None], rows[None]))  # pos_hat[i] = pos[perm[i]] (Eq. 8)
    return RecoveredKey(perm, mat, inv, proj.kernel_size[0], method)


def key_extraction_report(
    plain_model: nn.Module, images: torch.Tensor, data: str, model_name: str,
    kinds: Sequence[str] = KEY_KINDS, seed: int = 0, pixel_range: tuple[float, float] = (0.0, 1.0),
) -> pd.DataFrame:
    """Per key kind: encrypt `plain_model`, extract the key from it, decrypt `images`; one row per kind."""
    proj, _, _, grid = _vit_parts(plain_model)
    x = _as_float_images(images).float()
    p = proj.kernel_size[0]
    size = (grid[0] * p, grid[1] * p)
    if tuple(x.shape[-2:]) != size:
        raise ValueError(f"images are {_size(x)} but the model takes {size[0]}x{size[1]}; resize them first.")
    d = proj.weight.shape[0]
    w = proj.weight.detach().cpu().double().reshape(d, -1).numpy()
    rank = int(np.linalg.matrix_rank(w))
    rows = []
    for kind in kinds:
        key = _draw_key(size, p, x.shape[1], kind, seed)
        rec = extract_key_from_model(plain_model, encrypt_model(plain_model, key), kind)
        rows.append(dict(data=data, image_size=_size(x), patch_size=p, kind=kind, model=model_name, D=d,
                         L=key.block_length, rank_W=rank, cond_W=float(np.linalg.cond(w)),
                         **_evaluate(rec, key, x, encrypt_images(x, key), pixel_range)))
    return pd.DataFrame(rows)


# -- 6. ciphertext-only baseline: jigsaw ------------------------------------------------------------
def _edge_dissimilarity(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lr[a, b]: cost of b right of a; tb[a, b]: cost of b below a (prediction-based, Gallagher 2012)."""

    def cost(a_last: np.ndarray, a_prev: np.ndarray, b_first: np.ndarray, b_next: np.ndarray) -> np.ndarray:
        # Extrapolate each side's gradient across the seam, both ways: smooth images continue linearly.
        n = len(a_last)
        from_a = (2 * a_last - a_prev).reshape(n, -1)  # a's guess of the column/row just past its edge
        from_b = (2 * b_first - b_next).reshape(n, -1)
        first, last = b_first.reshape(n, -1), a_last.reshape(n, -1)
        sq = lambda u, v: (u * u).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2 * u @ v.T  # noqa: E731
        return np.maximum(sq(from_a, first) + sq(last, from_b), 0)

    lr = cost(tiles[:, :, :, -1], tiles[:, :, :, -2], tiles[:, :, :, 0], tiles[:, :, :, 1])
    tb = cost(tiles[:, :, -1, :], tiles[:, :, -2, :], tiles[:, :, 0, :], tiles[:, :, 1, :])
    return lr, tb


# Neighbour offset, cost matrix, and whether the candidate is on the matrix's row (False) or column
# side: a tile left of the slot uses lr[left, candidate], one right of it lr[candidate, right].
_SIDES = ((0, -1, "lr", False), (0, 1, "lr", True), (-1, 0, "tb", False), (1, 0, "tb", True))


def solve_jigsaw(scrambled: torch.Tensor, patch_size: int) -> np.ndarray:
    """Greedy jigsaw solution of a block-permuted (C, H, W) image: perm with scrambled[j] = plain[perm[j]]."""
    if scrambled.dim() != 3:
        raise ValueError(f"pass one image (C, H, W), got shape {tuple(scrambled.shape)}.")
    c, h, w = scrambled.shape
    p = patch_size
    if h % p or w % p or p < 2:
        raise ValueError(f"image {h}x{w} is not divisible into blocks of {p} (need p >= 2 for edges).")
    gh, gw = h // p, w // p
    n = gh * gw
    tiles = _to_blocks(scrambled[None], p)[0].reshape(n, c, p, p)
    lr, tb = _edge_dissimilarity(tiles)
    # Normalise each cost by the tile's best alternative so confident matches are placed first.
    lr = lr / (np.sort(lr + np.eye(n) * 1e300, axis=1)[:, [1]] + 1e-12)
    tb = tb / (np.sort(tb + np.eye(n) * 1e300, axis=1)[:, [1]] + 1e-12)
    big = 1e300
    # Canvas twice the grid so the solution can grow in any direction; the bounding box caps it.
    canvas = -np.ones((2 * gh + 1, 2 * gw + 1), dtype=np.int64)
    first = int(np.argmin(np.minimum(lr + np.eye(n) * big, tb + np.eye(n) * big).min(axis=1)))
    canvas[gh, gw] = first
    used = np.zeros(n, dtype=bool)
    used[first] = True
    rmin = rmax = gh
    cmin = cmax = gw
    frontier = {(gh + dr, gw + dc) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))}
    for _ in range(n - 1):
        best = (np.inf, -1, -1, -1)
        for r, cc in frontier:
            if max(rmax, r) - min(rmin, r) >= gh or max(cmax, cc) - min(cmin, cc) >= gw:
                continue
            score, count = np.zeros(n), 0
            for dr, dc, m, transpose in _SIDES:
                rr, c2 = r + dr, cc + dc
                if 0 <= rr < canvas.shape[0] and 0 <= c2 < canvas.shape[1] and canvas[rr, c2] >= 0:
                    nb = canvas[rr, c2]
                    cost = lr if m == "lr" else tb
                    score += cost[:, nb] if transpose else cost[nb]
                    count += 1
            if count == 0:
                continue
            score = np.where(used, np.inf, score / count)
            j = int(np.argmin(score))
            # Prefer slots with more placed neighbours: more evidence behind the choice.
            value = score[j] / count
            if value < best[0]:
                best = (value, r, cc, j)
        _, r, cc, j = best
        canvas[r, cc] = j
        used[j] = True
        frontier.discard((r, cc))
        frontier |= {(r + dr, cc + dc) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))
                     if 0 <= r + dr < canvas.shape[0] and 0 <= cc + dc < canvas.shape[1]
                     and canvas[r + dr, cc + dc] < 0}
        rmin, rmax, cmin, cmax = min(rmin, r), max(rmax, r), min(cmin, cc), max(cmax, cc)
    # placed[i] = the scrambled tile put at position i
    placed = canvas[rmin : rmin + gh, cmin : cmin + gw].reshape(-1)
    perm = np.empty(n, dtype=np.int64)
    perm[placed] = np.arange(n)
    return perm


def _neighbour_accuracy(est: np.ndarray, truth: np.ndarray, grid: tuple[int, int]) -> float:
    """Fraction of true right/below neighbour pairs of tiles that the solution also places adjacent."""
    gh, gw = grid
    pos_est = {t: divmod(int(i), gw) for t, i in enumerate(est)}
    pos_true = {t: divmod(int(i), gw) for t, i in enumerate(truth)}
    at_true = {v: t for t, v in pos_true.items()}
    good = total = 0
    for (r, c), t in at_true.items():
        for dr, dc in ((0, 1), (1, 0)):
            if (r + dr, c + dc) in at_true:
                u = at_true[(r + dr, c + dc)]
                (r1, c1), (r2, c2) = pos_est[t], pos_est[u]
                good += (r2 - r1, c2 - c1) == (dr, dc)
                total += 1
    return good / total if total else float("nan")


def jigsaw_report(images: torch.Tensor, patch_size: int, data: str, seed: int = 0) -> pd.DataFrame:
    """Jigsaw solver on images scrambled by E_b only (E_a = identity); one row per image."""
    x = _as_float_images(images).float()
    rng = np.random.default_rng(seed)
    rows = []
    for i, img in enumerate(x):
        gh, gw = img.shape[-2] // patch_size, img.shape[-1] // patch_size
        perm = rng.permutation(gh * gw)
        blocks = _to_blocks(img[None], patch_size)
        scrambled = _from_blocks(blocks[:, perm], (1, *img.shape), patch_size)[0]
        est = solve_jigsaw(scrambled, patch_size)
        rows.append(dict(data=data, image_size=_size(x), patch_size=patch_size,
                         kind="E_b only (E_a = identity)", image=i, N=gh * gw,
                         direct_accuracy=block_accuracy(est, perm),
                         neighbour_accuracy=_neighbour_accuracy(est, perm, (gh, gw)), chance=1.0 / (gh * gw)))
    return pd.DataFrame(rows)
