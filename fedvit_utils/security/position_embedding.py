"""When the encrypted position embedding gives the block order away, and when not (Eq. 8, 14).

``E_pos_hat = E_b E_pos`` (Eq. 8) moves the patch rows of the position embedding; matching each
encrypted row to a plain one reads E_b off the model, exactly when the patch rows are pairwise
distinct (freshly initialised and trained rows are). Where two rows are equal, the model cannot tell
those two positions apart (swapping the two blocks leaves its output unchanged), and neither can the
attack. Where all patch rows are zero, or the ViT has no position embedding (timm
``pos_embed='none'``), the model's output does not depend on the block order at all: E_b cannot be
read off the model, Eq. 14 still holds, and the order is then recovered from ciphertexts instead: once
E_a is removed, what is left is a block-permuted image, and the client's images share one E_b
(`jigsaw.solve_jigsaw_shared`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..encryption import EncryptImages, encrypt_images
from ..evaluation import Predict
from ..keys import KEY_KINDS
from ..model_encryption import encrypt_model
from ..models import embeddings, input_size, patch_size
from ..seeds import derive_seed
from .jigsaw import solve_jigsaw_shared
from .key_extraction import extract_key_from_model
from .measures import (
    Normalization,
    RecoveredKey,
    blocks_of,
    draw_keys,
    evaluate_recovery,
    images_of,
    size_label,
    summarize_draws,
)

VARIANTS = ("as given", "two equal patch rows", "all patch rows zero", "no position embedding")


def patch_rows_distinct(model: nn.Module) -> bool | None:
    """Whether the patch rows of the position embedding are pairwise distinct (exactly); None without one."""
    pos, prefix = embeddings(model).pos_embed, embeddings(model).prefix_rows
    if pos is None:
        return None
    rows = pos[0, prefix:].detach().cpu().double().numpy()
    return len(np.unique(rows, axis=0)) == len(rows)


@torch.no_grad()
def position_variant(model: nn.Module, variant: str, rows: tuple[int, int] = (0, 1)) -> nn.Module:
    """A copy of `model` whose position embedding is changed: one of VARIANTS (`rows`: the two made equal)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}.")
    out = copy.deepcopy(model)
    pos, prefix = embeddings(out).pos_embed, embeddings(out).prefix_rows
    if variant == "as given":
        return out
    if pos is None:
        raise ValueError("the model has no position embedding to change.")
    if variant == "two equal patch rows":
        pos[0, prefix + rows[0]] = pos[0, prefix + rows[1]]
    elif variant == "all patch rows zero":
        pos[0, prefix:] = 0
    else:
        out.pos_embed = None  # timm's pos_embed='none': tokens get no position information
    return out


def position_embedding_conditions(
    model: nn.Module,
    images: torch.Tensor,
    preprocess: nn.Module,
    predict: Predict,
    data_label: str,
    kinds: Sequence[str] = KEY_KINDS,
    n_keys: int = 5,
    seed: int = 0,
    n_check: int = 16,
) -> pd.DataFrame:
    """Per variant of the position embedding, kind and key: Eq. 14, and what extraction from the model recovers.

    `images` are uint8; the first `n_check` check Eq. 14 through `predict`, all are decrypted with the
    extracted key after `preprocess` (resize, then the normalization they are encrypted after).
    """
    x = preprocess.unit(images).double()
    norm = Normalization.of(preprocess)
    size, p = input_size(model), patch_size(model)
    check = images[:n_check]
    rows = []
    for variant in VARIANTS:
        m = position_variant(model, variant)
        plain_logits = predict(m, check)
        distinct = patch_rows_distinct(m)
        for kind in kinds:
            for key in draw_keys(kind, n_keys, size, p, seed, "position embedding"):
                enc_model = encrypt_model(m, key)
                diff = predict(enc_model, check, transform=EncryptImages(key)) - plain_logits
                rec = extract_key_from_model(m, enc_model, kind)
                enc = encrypt_images(norm.apply(x).float(), key)
                rows.append(dict(data=data_label, image_size=size_label(x), patch_size=p, variant=variant,
                                 patch_rows_distinct=distinct, kind=kind, key_fingerprint=key.fingerprint,
                                 eq14_max_abs_logit_diff=float(diff.abs().max()), eq14_images=len(check),
                                 **evaluate_recovery(rec, key, x, enc, norm)))
    return pd.DataFrame(rows)


def jigsaw_after_extraction(
    model: nn.Module,
    images: torch.Tensor,
    preprocess: nn.Module,
    data_label: str,
    ciphertexts: Sequence[int],
    n_unseen: int,
    kinds: Sequence[str] = KEY_KINDS,
    n_keys: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Without a position embedding: E_a from the weights, E_b by a jigsaw on n ciphertexts of the client.

    The last `n_unseen` of `images` (uint8) are scored; each key's ciphertexts are drawn from the others.
    """
    x = preprocess.unit(images).double()
    norm = Normalization.of(preprocess)
    pool, unseen = x[: len(x) - n_unseen], x[len(x) - n_unseen :]
    if n_unseen < 1 or max(ciphertexts) > len(pool):
        raise ValueError(f"need max(ciphertexts) + n_unseen = {max(ciphertexts) + n_unseen} images "
                         f"(n_unseen >= 1), got {len(x)}.")
    m = position_variant(model, "no position embedding")
    size, p = input_size(m), patch_size(m)
    rows = []
    for kind in kinds:
        for i, key in enumerate(draw_keys(kind, n_keys, size, p, seed, "jigsaw after extraction")):
            weights = extract_key_from_model(m, encrypt_model(m, key), kind)
            order = np.random.default_rng(derive_seed(seed, "jigsaw ciphertexts", kind, i)).permutation(len(pool))
            enc_unseen = encrypt_images(norm.apply(unseen).float(), key)
            for n in ciphertexts:
                cipher = encrypt_images(norm.apply(pool[torch.as_tensor(order[:n])]).float(), key)
                # E_a undone, blocks still in encrypted order: block-permuted images (in pixel values).
                scrambled = norm.undo(images_of(blocks_of(cipher, p) @ weights.matrix, size, p))
                perm = solve_jigsaw_shared(scrambled, p)
                rec = RecoveredKey(perm, weights.matrix, weights.inverse_matrix, p, "weights + shared jigsaw")
                rows.append(dict(data=data_label, image_size=size_label(x), patch_size=p, kind=kind,
                                 key_fingerprint=key.fingerprint, ciphertexts=n,
                                 **evaluate_recovery(rec, key, unseen, enc_unseen, norm)))
    return pd.DataFrame(rows)


def summarize_position_conditions(detail: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, kind): keys with every block placed and every image identical, PSNR, and Eq. 14's largest error."""
    by = ["data", "image_size", "patch_size", "variant", "patch_rows_distinct", "kind"]
    out = summarize_draws(detail, by).rename(columns={"draws": "keys", "exact_draws": "exact_keys"})
    eq14 = detail.groupby(by, sort=False, dropna=False)["eq14_max_abs_logit_diff"].max().reset_index()
    return out.merge(eq14, on=by)


def summarize_jigsaw_after_extraction(detail: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, ciphertexts): keys with every block placed and every image identical, PSNR."""
    by = ["data", "image_size", "patch_size", "kind", "ciphertexts"]
    return summarize_draws(detail, by).rename(columns={"draws": "keys", "exact_draws": "exact_keys"})
