"""The curious cloud's statistics attacks: ciphertexts of one key against public images (Eq. 9-13).

Threat model. The cloud holds a client's encrypted model, n of its encrypted queries (one key) and any
number of public images of the same kind; it has no plaintext-ciphertext pair and not the plain model.
Every block of every query goes through the same map (Eq. 12): encrypted block j of an image is
``y_j = x_{l_e(j)} E_a^-1`` (row vectors, normalized pixels). Pooled over positions, the ciphertext
blocks are therefore the public block distribution seen through one unknown linear map, and every
statistic of that distribution is a constraint on the key:

* mean ``m_y = m_x E_a^-1``; covariance ``S_y = E_a^-T S_x E_a^-1``;
* the cross-block covariance averaged over all pairs of distinct positions in an image,
  ``C_y = E_a^-T C_x E_a^-1``; averaging over *all* pairs makes it independent of the block order E_b.

``align_covariance`` (orthogonal E_a): the eigenvectors of S_y are those of S_x turned by E_a^-1, with
signs fixed by the mean (or the third moment where the mean is too small); components beyond a rank
are set to their mean, since an eigenvector the data cannot pin down would add noise, not signal.
``align_generalized`` (any invertible E_a): whitening leaves an unknown rotation R, which the
eigenvectors of a second statistic that turns with R determine where its eigenvalues are distinct: the
whitened cross-block covariance (second-order blind identification, as AMUSE) or the fourth-order
moment matrix (FOBI).
``align_pixels`` (permutation E_a): a quadratic assignment of the correlation matrices (FAQ), which
is fixed up to the symmetries of a block; `order_blocks` picks the symmetry and the block order that
best match the public images' per-position mean blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import quadratic_assignment

from .measures import assign, pair_cost

# Candidate ranks the attacker tries on its own simulation (public images, its own key): `cloud_study.choose_method`.
RANKS = (2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 384, 512, 768)


@dataclass(frozen=True, repr=False, eq=False)
class BlockMap:
    """An attacker's affine estimate of decryption: plain block = cipher block @ matrix + shift."""

    matrix: np.ndarray  # (L, L), estimates E_a where the key is identified (Eq. 12 inverted)
    shift: np.ndarray  # (L,)
    method: str

    def apply(self, blocks: np.ndarray) -> np.ndarray:
        """Plain-block estimates of (..., L) cipher blocks."""
        return blocks @ self.matrix + self.shift

    def __repr__(self) -> str:
        return f"BlockMap(method={self.method!r}, L={len(self.matrix)})"


def pooled(blocks: np.ndarray) -> np.ndarray:
    """(B, N, L) -> (B*N, L): blocks pooled over images and positions."""
    return blocks.reshape(-1, blocks.shape[-1])


def moments(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (L,), covariance S (L, L) and all-pairs cross-block covariance C (L, L) of (B, N, L) blocks."""
    b, n, _ = blocks.shape
    flat = pooled(blocks)
    mean = flat.mean(0)
    centred = blocks - mean
    cov = pooled(centred).T @ pooled(centred) / len(flat)
    total = centred.sum(1)  # sum over positions: sum_{j != k} y_j^T y_k = T^T T - sum_j y_j^T y_j
    cross = (total.T @ total - pooled(centred).T @ pooled(centred)) / (b * n * (n - 1))
    return mean, cov, (cross + cross.T) / 2


def _signs(proj_cipher: np.ndarray, proj_public: np.ndarray) -> np.ndarray:
    """Per component, the sign s with public projection ~ s * cipher projection: from the mean or the skew.

    Each candidate's evidence is its z-score (mean: |m| / sd * sqrt(count); skew: |g| / sqrt(6 / count));
    the stronger of the two decides, per component.
    """
    def stats(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m, sd = z.mean(0), z.std(0) + 1e-300
        skew = (((z - m) / sd) ** 3).mean(0)
        return m, sd, skew

    mc, sdc, gc = stats(proj_cipher)
    mp, _, gp = stats(proj_public)
    z_mean = np.abs(mc) / sdc * np.sqrt(len(proj_cipher))
    z_skew = np.abs(gc) / np.sqrt(6.0 / len(proj_cipher))
    by_mean = np.sign(mc * mp)
    by_skew = np.sign(gc * gp)
    out = np.where(z_mean >= z_skew, by_mean, by_skew)
    return np.where(out == 0, 1.0, out)


@dataclass(frozen=True, repr=False, eq=False)
class Alignment:
    """Matched component bases: plain - m_x = (cipher - m_y) @ cipher_basis @ plain_basis.T, columns by rank."""

    cipher_mean: np.ndarray  # (L,)
    plain_mean: np.ndarray  # (L,)
    cipher_basis: np.ndarray  # (L, L): column k turns a cipher block into component k (signs fixed)
    plain_basis: np.ndarray  # (L, L): column k turns component k back into a plain block
    method: str

    def block_map(self, rank: int) -> BlockMap:
        """The decryption estimate keeping the first `rank` components; the others are set to their mean."""
        matrix = self.cipher_basis[:, :rank] @ self.plain_basis[:, :rank].T
        return BlockMap(matrix, self.plain_mean - self.cipher_mean @ matrix, f"{self.method}, rank {rank}")

    def __repr__(self) -> str:
        return f"Alignment(method={self.method!r}, L={len(self.plain_mean)})"


def align_covariance(public: np.ndarray, cipher: np.ndarray) -> Alignment:
    """Orthogonal E_a from eigenvectors of the block covariances (S_y = E_a^T S_x E_a), by falling eigenvalue."""
    mx, sx, _ = moments(public)
    my, sy, _ = moments(cipher)
    ux = np.linalg.eigh(sx)[1][:, ::-1]
    uy = np.linalg.eigh(sy)[1][:, ::-1]
    s = _signs(pooled(cipher) @ uy, pooled(public) @ ux)
    return Alignment(my, mx, uy * s, ux, "covariance eigenvectors")  # x - m_x = (y - m_y) U_y S U_x^T


def _whitener(cov: np.ndarray, floor: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric S^-1/2 and S^1/2, eigenvalues floored at `floor` times the largest (JPEG leaves some ~0)."""
    lam, u = np.linalg.eigh(cov)
    lam = np.maximum(lam, floor * lam.max())
    return (u / np.sqrt(lam)) @ u.T, (u * np.sqrt(lam)) @ u.T


def _fourth_order(blocks: np.ndarray, whitener: np.ndarray) -> np.ndarray:
    """E[|z|^2 z^T z] of whitened blocks z (FOBI): turns with z, so W_x F_x W_x = R^T F_y R as C does."""
    z = (pooled(blocks) - pooled(blocks).mean(0)) @ whitener
    return (z * (z * z).sum(1, keepdims=True)).T @ z / len(z)


STATISTICS = ("cross-block", "fourth-order, low", "fourth-order, high")


def align_generalized(public: np.ndarray, cipher: np.ndarray, statistic: str = "cross-block") -> Alignment:
    """Any invertible E_a: whiten both sides, then rotate by the eigenvectors of a second statistic.

    With W_x = S_x^-1/2 and W_y = S_y^-1/2, x W_x = y W_y R for an orthogonal R, and any statistic that
    turns with the whitened blocks (the all-pairs cross-block covariance C, or the fourth-order FOBI
    matrix) satisfies T_x = R^T T_y R: R = V_y S V_x^T where its eigenvalues are distinct. `statistic`
    names the matrix and which end of its spectrum comes first.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose one of {STATISTICS}.")
    mx, sx, cx = moments(public)
    my, sy, cy = moments(cipher)
    wx, root_x = _whitener(sx)
    wy, _ = _whitener(sy)
    if statistic == "cross-block":
        tx, ty = wx @ cx @ wx, wy @ cy @ wy
    else:
        tx, ty = _fourth_order(public, wx), _fourth_order(cipher, wy)
    step = 1 if statistic == "fourth-order, low" else -1
    vx = np.linalg.eigh(tx)[1][:, ::step]
    vy = np.linalg.eigh(ty)[1][:, ::step]
    s = _signs(pooled(cipher) @ wy @ vy, pooled(public) @ wx @ vx)
    # x - m_x = (y - m_y) W_y R S_x^1/2 with R = V_y S V_x^T
    return Alignment(my, mx, wy @ (vy * s), root_x @ vx, f"whitening + {statistic} rotation")


def _correlation(cov: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    return cov / np.outer(sd, sd)


def align_pixels(public: np.ndarray, cipher: np.ndarray, restarts: int = 4, seed: int = 0) -> BlockMap:
    """Permutation E_a: the pixel permutation whose correlation matrix best matches the public one (FAQ QAP).

    The answer is determined up to the permutations that leave the public correlations unchanged (for
    natural images, the 8 flips and turns of a block); `order_blocks` resolves those.
    """
    _, sx, _ = moments(public)
    _, sy, _ = moments(cipher)
    a, b = _correlation(sy), _correlation(sx)
    rng = np.random.default_rng(seed)
    best = None
    for attempt in range(restarts):
        p0 = "barycenter" if attempt == 0 else _random_doubly_stochastic(len(a), rng)
        res = quadratic_assignment(a, b, method="faq", options=dict(maximize=True, P0=p0, maxiter=60, rng=rng))
        if best is None or res.fun > best.fun:
            best = res
    source = best.col_ind  # cipher coordinate l holds plain coordinate source[l]
    matrix = np.zeros((len(a), len(a)))
    matrix[np.arange(len(a)), source] = 1.0
    return BlockMap(matrix, np.zeros(len(a)), f"pixel correlations, FAQ quadratic assignment ({restarts} starts)")


def _random_doubly_stochastic(n: int, rng: np.random.Generator) -> np.ndarray:
    m = rng.random((n, n)) + 1.0
    for _ in range(50):  # Sinkhorn balancing
        m /= m.sum(1, keepdims=True)
        m /= m.sum(0, keepdims=True)
    return 0.5 * m + 0.5 / n


def block_symmetries(patch_size: int, channels: int) -> list[np.ndarray]:
    """The 8 flips and turns of a (C, p, p) block as index permutations of its L flattened values."""
    idx = np.arange(channels * patch_size * patch_size).reshape(channels, patch_size, patch_size)
    out = []
    for k in range(4):
        turned = np.rot90(idx, k, axes=(1, 2))
        out += [turned.reshape(-1), turned[:, :, ::-1].reshape(-1)]
    return out


def order_blocks(public: np.ndarray, decrypted: np.ndarray, symmetries: list[np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Block order (and block symmetry) matching decrypted per-position mean blocks to the public ones.

    `decrypted` (B, N, L) are plain-block estimates still in cipher order. Returns (order, g) with
    order[j] = the plain position of cipher position j, and g the symmetry (index permutation) to apply
    to each decrypted block; the identity when `symmetries` is None.
    """
    target = public.mean(0)[None]  # (1, N, L) public per-position mean blocks
    best = None
    for g in symmetries or [np.arange(decrypted.shape[-1])]:
        means = decrypted[..., g].mean(0)[None]
        cost = pair_cost(means, target)
        order = assign(cost)
        total = cost[np.arange(len(order)), order].sum()
        if best is None or total < best[0]:
            best = (total, order, g)
    return best[1], best[2]


def place_blocks(decrypted: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(B, N, L) blocks in cipher order -> plain order (undo Eq. 9 with an estimated order)."""
    out = np.empty_like(decrypted)
    out[:, order] = decrypted
    return out


def grid_symmetries(grid: tuple[int, int]) -> list[np.ndarray]:
    """The flips and turns of a (gh, gw) block grid as position permutations (8 if square, else 4)."""
    idx = np.arange(grid[0] * grid[1]).reshape(grid)
    out = []
    for k in range(4) if grid[0] == grid[1] else (0, 2):
        turned = np.rot90(idx, k)
        out += [turned.reshape(-1), turned[:, ::-1].reshape(-1)]
    return out


def order_from_position_embedding(rows: np.ndarray, grid: tuple[int, int], restarts: int = 8, seed: int = 0
                                  ) -> list[np.ndarray]:
    """Block orders read off the encrypted position embedding alone (Eq. 8): one per flip/turn of the grid.

    A trained position embedding is smooth on the grid: nearby positions get similar rows. The rows of
    Ê_pos = E_b E_pos are the plain rows in cipher order, so laying them on the grid so that similar rows are
    near each other (a quadratic assignment of their cosine similarities onto a Gaussian kernel of grid
    distance, width a quarter of the grid; FAQ, the best of `restarts` starts) gives order[j] = the plain
    position of cipher position j, up to the flips and turns of the grid, which leave distances unchanged:
    every one of them is returned, for the attacker to choose among. FAQ is approximate: the tests and the
    tables measure how many blocks it places.
    """
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True).clip(1e-300)
    sim = unit @ unit.T
    np.fill_diagonal(sim, 0)
    gh, gw = grid
    pos = np.arange(gh * gw)
    r, c = pos // gw, pos % gw
    kernel = np.exp(-((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2) / (2 * (max(grid) / 4) ** 2))
    np.fill_diagonal(kernel, 0)
    rng = np.random.default_rng(seed)
    best = None
    for attempt in range(restarts):
        p0 = "barycenter" if attempt == 0 else _random_doubly_stochastic(len(sim), rng)
        res = quadratic_assignment(sim, kernel, method="faq", options=dict(maximize=True, P0=p0, rng=rng))
        if best is None or res.fun > best.fun:
            best = res
    return [g[best.col_ind] for g in grid_symmetries(grid)]
