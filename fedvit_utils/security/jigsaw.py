"""Ciphertext only: a greedy jigsaw solver reassembles block-permuted images (E_b of Eq. 9 alone).

Costs between tile edges are prediction-based (Gallagher 2012): each side's gradient is extrapolated
across the seam. Tiles are placed greedily, most confident match first. One client's images all share
one E_b, so `solve_jigsaw_shared` sums the (normalised) costs of several of its images: every image
votes on every seam.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .measures import as_float_images, block_accuracy, blocks_of, images_of, size_label


def _edge_dissimilarity(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lr[a, b]: cost of b right of a; tb[a, b]: cost of b below a (prediction-based, Gallagher 2012)."""

    def cost(a_last: np.ndarray, a_prev: np.ndarray, b_first: np.ndarray, b_next: np.ndarray) -> np.ndarray:
        # Extrapolate each side's gradient across the seam, both ways: smooth images continue linearly.
        n = len(a_last)
        from_a = (2 * a_last - a_prev).reshape(n, -1)  # a's guess of the column/row just past its edge
        from_b = (2 * b_first - b_next).reshape(n, -1)
        first, last = b_first.reshape(n, -1), a_last.reshape(n, -1)

        def sq(u: np.ndarray, v: np.ndarray) -> np.ndarray:  # squared distances of every row of u to every row of v
            return (u * u).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2 * u @ v.T

        return np.maximum(sq(from_a, first) + sq(last, from_b), 0)

    lr = cost(tiles[:, :, :, -1], tiles[:, :, :, -2], tiles[:, :, :, 0], tiles[:, :, :, 1])
    tb = cost(tiles[:, :, -1, :], tiles[:, :, -2, :], tiles[:, :, 0, :], tiles[:, :, 1, :])
    return lr, tb


# Neighbour offset, cost matrix, and whether the candidate is on the matrix's row (False) or column
# side: a tile left of the slot uses lr[left, candidate], one right of it lr[candidate, right].
_SIDES = ((0, -1, "lr", False), (0, 1, "lr", True), (-1, 0, "tb", False), (1, 0, "tb", True))


def _normalised_costs(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge costs of (n, C, p, p) tiles, each divided by the tile's best alternative (confidence)."""
    n = len(tiles)
    lr, tb = _edge_dissimilarity(tiles)
    lr = lr / (np.sort(lr + np.eye(n) * 1e300, axis=1)[:, [1]] + 1e-12)
    tb = tb / (np.sort(tb + np.eye(n) * 1e300, axis=1)[:, [1]] + 1e-12)
    return lr, tb


def _grid(shape: tuple[int, ...], p: int) -> tuple[int, int]:
    h, w = shape[-2:]
    if h % p or w % p or p < 2:
        raise ValueError(f"image {h}x{w} is not divisible into blocks of {p} (need p >= 2 for edges).")
    return h // p, w // p


def solve_jigsaw(scrambled: torch.Tensor, patch_size: int) -> np.ndarray:
    """Greedy jigsaw solution of a block-permuted (C, H, W) image: perm with scrambled[j] = plain[perm[j]]."""
    if scrambled.dim() != 3:
        raise ValueError(f"pass one image (C, H, W), got shape {tuple(scrambled.shape)}.")
    return solve_jigsaw_shared(scrambled[None], patch_size)


def solve_jigsaw_shared(scrambled: torch.Tensor, patch_size: int) -> np.ndarray:
    """One permutation for (B, C, H, W) images scrambled by the same E_b, from edge costs summed over them."""
    if scrambled.dim() != 4 or len(scrambled) == 0:
        raise ValueError(f"pass a non-empty batch (B, C, H, W), got shape {tuple(scrambled.shape)}.")
    c, p = scrambled.shape[1], patch_size
    gh, gw = _grid(tuple(scrambled.shape), p)
    n = gh * gw
    lr, tb = np.zeros((n, n)), np.zeros((n, n))
    for tiles in blocks_of(scrambled, p).reshape(len(scrambled), n, c, p, p):
        costs = _normalised_costs(tiles)
        lr += costs[0]
        tb += costs[1]
    return _place(lr, tb, gh, gw)


def seam_cost(images: torch.Tensor, patch_size: int) -> float:
    """Mean prediction-based cost of the seams between neighbouring blocks of assembled (B, C, H, W) images.

    The same cost the solver minimises (Gallagher 2012), summed over the arrangement: an attacker can rank
    candidate block orders by it without knowing the right one (lower: the blocks continue each other).
    """
    x = as_float_images(images).double()
    _grid(tuple(x.shape), patch_size)
    total, seams = 0.0, 0
    for axis in (-1, -2):
        for c in range(patch_size, x.shape[axis], patch_size):
            a_prev, a_last, b_first, b_next = (x.select(axis, i) for i in (c - 2, c - 1, c, c + 1))
            across = ((2 * a_last - a_prev - b_first) ** 2).mean() + ((2 * b_first - b_next - a_last) ** 2).mean()
            total += float(across)
            seams += 1
    return total / max(seams, 1)


def _place(lr: np.ndarray, tb: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """Greedy placement on cost matrices: most confident free tile into the best frontier slot first."""
    n = gh * gw
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


def jigsaw_report(images: torch.Tensor, patch_size: int, data_label: str, seed: int = 0) -> pd.DataFrame:
    """Jigsaw solver on images scrambled by E_b only (E_a = identity); one row per image."""
    x = as_float_images(images).float()
    rng = np.random.default_rng(seed)
    rows = []
    for i, img in enumerate(x):
        gh, gw = img.shape[-2] // patch_size, img.shape[-1] // patch_size
        perm = rng.permutation(gh * gw)
        blocks = blocks_of(img[None], patch_size)
        scrambled = images_of(blocks[:, perm], tuple(img.shape[-2:]), patch_size)[0]
        est = solve_jigsaw(scrambled, patch_size)
        rows.append(dict(data=data_label, image_size=size_label(x), patch_size=patch_size,
                         kind="E_b only (E_a = identity)", image=i, N=gh * gw,
                         direct_accuracy=block_accuracy(est, perm),
                         neighbour_accuracy=_neighbour_accuracy(est, perm, (gh, gw)), chance=1.0 / (gh * gw)))
    return pd.DataFrame(rows)


def summarize_jigsaw(detail: pd.DataFrame) -> pd.DataFrame:
    """Per setting of a `jigsaw_report`: images, mean share of blocks and neighbour pairs placed, images solved."""
    by = ["data", "image_size", "patch_size", "kind", "N", "chance"]
    return detail.groupby(by, sort=False).agg(
        images=("image", "size"), direct_accuracy_mean=("direct_accuracy", "mean"),
        neighbour_accuracy_mean=("neighbour_accuracy", "mean"),
        images_solved=("direct_accuracy", lambda s: int((s == 1.0).sum()))).reset_index()
