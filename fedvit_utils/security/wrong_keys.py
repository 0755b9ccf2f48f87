"""Accuracy with the right key, another client's key, or no encryption on one side (Eq. 3, 8, 12, 14).

Eq. (14) says an encrypted model on images encrypted with the same key gives the plain model's
output. This module measures the other cases, for every key kind over several independent keys:
another client's key, the plain model on encrypted images, and an encrypted model on plain images.
Whether a case is "at chance" is a measured statement: the summary gives the mean over keys, its
standard error over keys, and how many standard errors it lies above a constant guess.
`permutation_key_leakage` separates what a permutation key leaves for a model to use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..encryption import EncryptImages
from ..evaluation import Predict, accuracy
from ..keys import KEY_KINDS, SecretKey
from ..model_encryption import encrypt_model
from ..models import input_size, patch_size
from .measures import draw_keys, part_key

CASES = ("encrypted model, same key", "encrypted model, another client's key", "plain model, encrypted images",
         "encrypted model, plain images")


def wrong_key_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    predict: Predict,
    data_label: str,
    kinds: Sequence[str] = KEY_KINDS,
    n_keys: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy with right, wrong and missing keys; one row per (kind, key, case), plus the plain model.

    Key i of a kind is drawn from (seed, kind, i); "another client's key" for key i is key i+1 (mod n).
    `chance` is what a constant guess scores on these images (the share of their most frequent class).
    `predict(model, images, transform=None)` preprocesses and runs the model (see
    `evaluation.exact_predictor`); encryption is applied as its transform, after preprocessing.
    """
    if n_keys < 2:
        raise ValueError("wrong-key accuracy needs at least two keys per kind (one to use, one to be wrong).")
    size, p = input_size(model), patch_size(model)
    # What a constant guess scores on these images: the share of the most frequent class.
    chance = float(torch.bincount(labels.long()).max()) / len(labels)
    base = dict(data=data_label, image_size=f"{size[0]}x{size[1]}", patch_size=p, n_images=len(images), chance=chance)

    def acc(m: nn.Module, key: SecretKey | None) -> float:
        return accuracy(predict(m, images, transform=EncryptImages(key) if key is not None else None), labels)

    rows = [dict(base, kind="-", case="plain model, plain images", model_key="-", image_key="-",
                 accuracy=acc(model, None))]
    for kind in kinds:
        keys = draw_keys(kind, n_keys, size, p, seed, "wrong keys")
        for i, key in enumerate(keys):
            enc_model = encrypt_model(model, key)  # one encrypted copy at a time keeps memory flat
            other = keys[(i + 1) % n_keys]
            for case, m, k in zip(CASES, (enc_model, enc_model, model, enc_model), (key, other, key, None),
                                  strict=True):
                rows.append(dict(base, kind=kind, case=case, model_key=key.fingerprint if m is enc_model else "-",
                                 image_key=k.fingerprint if k is not None else "-", accuracy=acc(m, k)))
            del enc_model
    return pd.DataFrame(rows)


def summarize_wrong_keys(detail: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, case): mean over keys, min/max, s.e. over keys, binomial s.e., and (mean - chance) / s.e.

    The s.e. over keys (s.d. of the per-key accuracies / sqrt(keys)) includes the key-to-key spread;
    the binomial s.e. sqrt(p(1-p)/n) is that of one accuracy on n images.
    """
    by = ["data", "image_size", "patch_size", "kind", "case"]
    g = detail.groupby(by, sort=False)
    out = g["accuracy"].agg(["mean", "min", "max", "count", "std"]).reset_index()
    out = out.rename(columns={"mean": "accuracy_mean", "min": "accuracy_min", "max": "accuracy_max", "count": "keys",
                              "std": "sd_over_keys"})
    out = out.merge(g[["n_images", "chance"]].first().reset_index(), on=by)
    out["se_over_keys"] = out["sd_over_keys"] / np.sqrt(out["keys"])
    out["se_binomial"] = np.sqrt(out["accuracy_mean"] * (1 - out["accuracy_mean"]) / out["n_images"])
    se = out["se_over_keys"].where(out["se_over_keys"] > 0)  # one key, or every key alike (Eq. 14)
    out["se_above_chance"] = (out["accuracy_mean"] - out["chance"]) / se
    return out.drop(columns="sd_over_keys")


def _block_means(patch: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Transform: every p x p block replaced by the mean of all its L = p*p*C values (what a pixel shuffle keeps)."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        v = x.reshape(b, c, h // patch, patch, w // patch, patch)
        return v.mean(dim=(1, 3, 5), keepdim=True).expand_as(v).reshape(x.shape)

    return apply


def permutation_key_leakage(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    predict: Predict,
    data_label: str,
    n_keys: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """The plain model on images with one part of a permutation key applied, or reduced to block means.

    Separates what keeps a permutation key's wrong-key accuracy above a constant guess: moving blocks
    (E_b only), shuffling values inside each block in place (E_a only), or each block's mean value alone.
    One row per (case, key); the key-free case has key "-". Uses the keys of `wrong_key_accuracy`.
    """
    size, p = input_size(model), patch_size(model)
    chance = float(torch.bincount(labels.long()).max()) / len(labels)
    base = dict(data=data_label, image_size=f"{size[0]}x{size[1]}", patch_size=p, kind="permutation",
                n_images=len(images), chance=chance)
    rows = [dict(base, case="each block replaced by its mean value, in place", model_key="-", image_key="-",
                 accuracy=accuracy(predict(model, images, transform=_block_means(p)), labels))]
    for key in draw_keys("permutation", n_keys, size, p, seed, "wrong keys"):
        for case, part in (("blocks moved (E_b only)", "E_b only"),
                           ("values shuffled inside each block, in place (E_a only)", "E_a only")):
            rows.append(dict(base, case=case, model_key="-", image_key=key.fingerprint,
                             accuracy=accuracy(predict(model, images, transform=EncryptImages(part_key(key, part))),
                                               labels)))
    return pd.DataFrame(rows)
