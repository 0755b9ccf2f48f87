"""Key extraction from an encrypted model (Sec. 3.2, Eq. 3 and 8).

Every FedAvg participant holds the plain integrated model. With one client's encrypted copy,
``W_hat = W E_a^T`` (Eq. 3) gives E_a^T = pinv(W) W_hat (exact when rank W = L), and the block
permutation is where each encrypted position-embedding row sits among the plain ones (Eq. 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..encryption import encrypt_images
from ..keys import KEY_KINDS
from ..model_encryption import encrypt_model
from ..models import embeddings
from .measures import RecoveredKey, as_float_images, assign, draw_key, evaluate_recovery, pair_cost, size_label


@torch.no_grad()
def extract_key_from_model(plain_model: nn.Module, encrypted_model: nn.Module, kind: str) -> RecoveredKey:
    """Recover E_a from W_hat = W E_a^T and the block permutation from the position embeddings."""
    proj, pos, prefix, grid = embeddings(plain_model)
    proj_hat, pos_hat, _, grid_hat = embeddings(encrypted_model)
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
        pix = assign(pair_cost(w_hat.T[None], w.T[None]))
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
    perm = assign(pair_cost(rows_hat[None], rows[None]))  # pos_hat[i] = pos[perm[i]] (Eq. 8)
    return RecoveredKey(perm, mat, inv, proj.kernel_size[0], method)


def key_extraction_report(
    plain_model: nn.Module, images: torch.Tensor, data: str, model_name: str,
    kinds: Sequence[str] = KEY_KINDS, seed: int = 0, pixel_range: tuple[float, float] = (0.0, 1.0),
) -> pd.DataFrame:
    """Per key kind: encrypt `plain_model`, extract the key from it, decrypt `images`; one row per kind."""
    proj, _, _, grid = embeddings(plain_model)
    x = as_float_images(images).float()
    p = proj.kernel_size[0]
    size = (grid[0] * p, grid[1] * p)
    if tuple(x.shape[-2:]) != size:
        raise ValueError(f"images are {size_label(x)} but the model takes {size[0]}x{size[1]}; resize them first.")
    d = proj.weight.shape[0]
    w = proj.weight.detach().cpu().double().reshape(d, -1).numpy()
    rank = int(np.linalg.matrix_rank(w))
    rows = []
    for kind in kinds:
        key = draw_key(size, p, x.shape[1], kind, seed)
        rec = extract_key_from_model(plain_model, encrypt_model(plain_model, key), kind)
        rows.append(dict(data=data, image_size=size_label(x), patch_size=p, kind=kind, model=model_name, D=d,
                         L=key.block_length, rank_W=rank, cond_W=float(np.linalg.cond(w)),
                         **evaluate_recovery(rec, key, x, encrypt_images(x, key), pixel_range)))
    return pd.DataFrame(rows)
