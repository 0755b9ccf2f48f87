"""Key extraction from an encrypted model (Sec. 3.2, Eq. 3 and 8).

Every FedAvg participant holds the plain integrated model. With one client's encrypted copy,
``W_hat = W E_a^T`` (Eq. 3; W is the D x L patch-embedding weight) gives E_a and the position
embedding ``E_pos_hat = E_b E_pos`` (Eq. 8) gives the block permutation:

* permutation keys: column l of W_hat is column pix[l] of W, a matching that is exact even when
  D < L, as long as the columns of W are pairwise distinct;
* dense keys: least squares gives E_a^T = pinv(W) W_hat exactly when rank W = L (D >= L). When D < L
  it gives E_a P_W, so decrypting yields each block's projection on the row space of W, all the model
  ever sees of it. Public images add the rest: the linear MMSE estimate of a block from that
  projection, with the mean and covariance of blocks of public images (``prior``), recovers much more;
* the block order: each encrypted position-embedding row is matched to a plain one; exact when the
  patch rows are pairwise distinct (see `position_embedding` for when they are not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..encryption import encrypt_images
from ..keys import KEY_KINDS, key_kind
from ..model_encryption import encrypt_model
from ..models import embeddings, input_size, patch_size
from .measures import (
    Normalization,
    RecoveredKey,
    assign,
    blocks_of,
    draw_keys,
    evaluate_recovery,
    images_of,
    pair_cost,
    score_decryption,
    size_label,
    summarize_draws,
)


def patch_weight(model: nn.Module) -> np.ndarray:
    """The patch embedding as a float64 (D, L) matrix W; E of Eq. 1 is its transpose."""
    proj = embeddings(model).proj
    return proj.weight.detach().cpu().double().reshape(proj.weight.shape[0], -1).numpy()


def _distinct_rows(rows: np.ndarray) -> bool:
    return len(np.unique(rows, axis=0)) == len(rows)  # exact comparison: equal rows are exactly equal


@torch.no_grad()
def extract_key_from_model(plain_model: nn.Module, encrypted_model: nn.Module, kind: str) -> RecoveredKey:
    """Recover E_a from W_hat = W E_a^T and the block permutation from the position embeddings (Eq. 3, 8).

    Without a position embedding the model does not hold the block order: the identity is returned
    for it (a guess), and the method says so.
    """
    proj, pos, prefix, grid = embeddings(plain_model)
    proj_hat, pos_hat, _, grid_hat = embeddings(encrypted_model)
    if proj.weight.shape != proj_hat.weight.shape or grid != grid_hat or (pos is None) != (pos_hat is None):
        raise ValueError(f"the models differ in patch embedding {tuple(proj.weight.shape)} vs "
                         f"{tuple(proj_hat.weight.shape)}: pass the plain model the encrypted one came from.")
    w, w_hat = patch_weight(plain_model), patch_weight(encrypted_model)
    length = w.shape[1]
    if key_kind(kind).moves_pixels_only:
        # Column l of W E_a^T is column pix[l] of W: a matching, exact even when D < L.
        pix = assign(pair_cost(w_hat.T[None], w.T[None]))
        mat = np.zeros((length, length))
        mat[np.arange(length), pix] = 1.0
        inv, method = mat.T.copy(), "column matching of W"
    else:
        # Least squares; with rank W < L only E_a's action on the row space of W is determined.
        mat = np.linalg.lstsq(w, w_hat, rcond=None)[0].T
        inv = np.linalg.pinv(mat)
        method = "least squares pinv(W) W_hat"
    if pos is None:
        return RecoveredKey(np.arange(grid[0] * grid[1]), mat, inv, proj.kernel_size[0],
                            method + "; no position embedding: block order guessed (identity)")
    rows = pos[0, prefix:].detach().cpu().double().numpy()
    rows_hat = pos_hat[0, prefix:].detach().cpu().double().numpy()
    perm = assign(pair_cost(rows_hat[None], rows[None]))  # pos_hat[i] = pos[perm[i]] (Eq. 8)
    return RecoveredKey(perm, mat, inv, proj.kernel_size[0], method + " + position-embedding rows")


def vit_of_width(model: nn.Module, embed_dim: int, seed: int = 0, depth: int = 1) -> nn.Module:
    """A freshly initialised timm ViT with `model`'s input size, patch size, tokens and classes, but width D."""
    torch.manual_seed(seed)
    parts = embeddings(model)
    return VisionTransformer(
        img_size=input_size(model), patch_size=patch_size(model), in_chans=parts.proj.in_channels,
        num_classes=getattr(model, "num_classes", 10), embed_dim=embed_dim, depth=depth, num_heads=1,
        class_token=getattr(model, "cls_token", None) is not None, reg_tokens=getattr(model, "num_reg_tokens", 0),
        no_embed_class=getattr(model, "no_embed_class", False), global_pool=getattr(model, "global_pool", "token"),
    ).eval()


def models_to_study(model: nn.Module, widths: Sequence[int], seed: int = 0) -> dict[str, nn.Module]:
    """The trained model, and freshly initialised ViTs of its geometry with each width D in `widths`."""
    d = embeddings(model).proj.out_channels
    return {f"trained (D={d})": model, **{f"fresh (D={w})": vit_of_width(model, w, seed) for w in widths}}


def block_prior(images: torch.Tensor, patch_size: int, norm: Normalization) -> tuple[np.ndarray, np.ndarray]:
    """Mean (L,) and covariance (L, L) of normalized blocks of public [0, 1] images, pooled over positions."""
    blocks = blocks_of(norm.apply(images.double()), patch_size).reshape(-1, images.shape[1] * patch_size ** 2)
    return blocks.mean(0), np.cov(blocks, rowvar=False)


def _with_prior(rec: RecoveredKey, w: np.ndarray, enc: torch.Tensor, plain: torch.Tensor, norm: Normalization,
                prior: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """PSNR and identical images after the linear MMSE estimate of each block from its projection on W's rows."""
    mu, cov = prior
    q = np.linalg.svd(w, full_matrices=False)[2].T  # L x rank: orthonormal basis of the row space of W
    p = rec.patch_size
    z = blocks_of(enc, p) @ rec.matrix  # = x P_W, blocks still in encrypted order
    gain = np.linalg.pinv(q.T @ cov @ q, rcond=1e-10) @ q.T @ cov  # rank x L
    est = mu + ((z - mu) @ q) @ gain  # E[x | x Q] for a Gaussian block with mean mu, covariance cov
    blocks = np.empty_like(est)
    blocks[:, rec.block_permutation] = est
    return score_decryption(plain, norm.undo(images_of(blocks, tuple(enc.shape[-2:]), p)))


def key_extraction_report(
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    preprocess: nn.Module,
    data_label: str,
    kinds: Sequence[str] = KEY_KINDS,
    n_keys: int = 5,
    seed: int = 0,
    prior: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Per model, key kind and key: encrypt the model, extract the key, decrypt `images`; one row each.

    `images` are uint8; `preprocess` (a `data.Preprocess`) resizes them to the models' input as the
    client's pipeline does and gives the normalization they are encrypted after. `prior`: public uint8
    images for the block statistics of the D < L estimate (dense keys only).
    """
    x = preprocess.unit(images).double()
    norm = Normalization.of(preprocess)
    stats = None
    rows = []
    for name, model in models.items():
        size, p = input_size(model), patch_size(model)
        if tuple(x.shape[-2:]) != size:
            raise ValueError(f"the preprocessing gives {size_label(x)} images but model {name!r} takes "
                             f"{size[0]}x{size[1]}: pass the models' own preprocessing.")
        w = patch_weight(model)
        rank = int(np.linalg.matrix_rank(w))
        if prior is not None and rank < w.shape[1] and stats is None:
            stats = block_prior(preprocess.unit(prior).double(), p, norm)
        for kind in kinds:
            for key in draw_keys(kind, n_keys, size, p, seed, "key extraction"):
                rec = extract_key_from_model(model, encrypt_model(model, key), kind)
                enc = encrypt_images(norm.apply(x).float(), key)  # float32 ciphertexts
                row = dict(data=data_label, image_size=size_label(x), patch_size=p, model=name, D=w.shape[0],
                           L=key.block_length, rank_W=rank, W_columns_distinct=_distinct_rows(w.T), kind=kind,
                           key_fingerprint=key.fingerprint, **evaluate_recovery(rec, key, x, enc, norm),
                           psnr_with_block_prior_mean=np.nan, psnr_with_block_prior_min=np.nan,
                           prior_images=0)
                if stats is not None and not key.key_kind.moves_pixels_only and rank < w.shape[1]:
                    psnr, _ = _with_prior(rec, w, enc, x, norm, stats)
                    row.update(psnr_with_block_prior_mean=float(psnr.mean()),
                               psnr_with_block_prior_min=float(psnr.min()), prior_images=len(prior))
                rows.append(row)
    return pd.DataFrame(rows)


def summarize_key_extraction(detail: pd.DataFrame) -> pd.DataFrame:
    """Per (model, kind): exact keys of all, images identical, PSNR mean and worst image, with and without prior."""
    by = ["data", "image_size", "patch_size", "model", "D", "L", "rank_W", "kind"]
    out = summarize_draws(detail, by).rename(columns={"draws": "keys", "exact_draws": "exact_keys"})
    extra = detail.groupby(by, sort=False).agg(
        W_columns_distinct=("W_columns_distinct", "all"), key_error_max=("key_error", "max"),
        psnr_with_block_prior_mean=("psnr_with_block_prior_mean", "mean"),
        psnr_with_block_prior_worst_image=("psnr_with_block_prior_min", "min"),
        prior_images=("prior_images", "max")).reset_index()
    return out.merge(extra, on=by)
