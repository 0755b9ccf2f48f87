"""Accuracy with the right key, another client's key, or no encryption on one side (Eq. 3, 8, 12, 14).

Eq. (14) says an encrypted model on images encrypted with the same key gives the plain model's
output. This module measures the other cases: another client's key, the plain model on encrypted
images, and an encrypted model on plain images.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from ..encryption import EncryptImages
from ..evaluation import Predict, accuracy
from ..keys import SecretKey
from ..model_encryption import encrypt_model


def wrong_key_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    keys: Sequence[SecretKey],
    predict: Predict,
    data: str,
    wrong_keys_per_client: int = 1,
) -> pd.DataFrame:
    """Accuracy with right, wrong and missing keys; one row per (case, model key, image key).

    `predict(model, images, transform=None)` preprocesses and runs the model (see
    `evaluation.exact_predictor`); encryption is applied as its transform, after preprocessing.
    """
    if len(keys) < 2:
        raise ValueError("wrong-key accuracy needs at least two client keys (one to use, one to be wrong).")
    kinds = {k.kind for k in keys}
    h, w = keys[0].image_size
    base = dict(data=data, image_size=f"{h}x{w}", patch_size=keys[0].patch_size, kind="/".join(sorted(kinds)),
                n_images=len(images), chance=1.0 / max(int(labels.max()) + 1, 2))

    def acc(m: nn.Module, key: SecretKey | None) -> float:
        return accuracy(predict(m, images, transform=EncryptImages(key) if key is not None else None), labels)

    rows = [dict(base, case="plain model, plain images", model_key="-", image_key="-", accuracy=acc(model, None))]
    n = len(keys)
    for a, key in enumerate(keys):
        enc_model = encrypt_model(model, key)  # one encrypted copy at a time keeps memory flat
        fp = key.fingerprint
        rows.append(dict(base, case="encrypted model, same key", model_key=fp, image_key=fp,
                         accuracy=acc(enc_model, key)))
        for step in range(1, min(wrong_keys_per_client, n - 1) + 1):
            other = keys[(a + step) % n]
            rows.append(dict(base, case="encrypted model, another client's key", model_key=fp,
                             image_key=other.fingerprint, accuracy=acc(enc_model, other)))
        rows.append(dict(base, case="encrypted model, plain images", model_key=fp, image_key="-",
                         accuracy=acc(enc_model, None)))
        rows.append(dict(base, case="plain model, encrypted images", model_key="-", image_key=fp,
                         accuracy=acc(model, key)))
        del enc_model
    return pd.DataFrame(rows)


def summarize_wrong_keys(detail: pd.DataFrame) -> pd.DataFrame:
    """Mean/min/max accuracy per case of a `wrong_key_accuracy` table."""
    keys = ["data", "image_size", "patch_size", "kind", "case"]
    out = detail.groupby(keys, sort=False)["accuracy"].agg(["mean", "min", "max", "count"]).reset_index()
    out = out.rename(columns={"mean": "accuracy_mean", "min": "accuracy_min", "max": "accuracy_max",
                              "count": "pairs"})
    return out.merge(detail.groupby(keys, sort=False)[["n_images", "chance"]].first().reset_index(), on=keys)
