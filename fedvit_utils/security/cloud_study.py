"""What a curious cloud recovers from one client's encrypted model and queries, per key kind and n.

The attacker (`cloud_view`, `cloud_relearn`) sees the client's encrypted model, n of its encrypted
queries (one key) and public images of the same kind with their labels; the plain model is used here
only to score what it recovered (its accuracy on the recovered images), never by the attacker.
Scores, each over the first `n_scored` of the n queries:

* block content: recovered blocks put back in their *true* places, PSNR/SSIM against the originals;
* whole images: recovered blocks in the attacker's *own* block order, PSNR/SSIM and the plain model's
  accuracy on them (saved as 8-bit images, as an attacker would);
* two references scored the same way: every block replaced by the public mean block, and every block
  replaced by its own true mean colour (what a perfect attacker on block colour alone would get).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from ..data import Preprocess
from ..encryption import encrypt_images
from ..evaluation import Predict, accuracy
from ..keys import KEY_KINDS, key_kind
from ..model_encryption import encrypt_model
from ..models import embeddings, input_size, patch_size
from .cloud_relearn import relearn_embeddings
from .cloud_view import (
    RANKS,
    STATISTICS,
    Alignment,
    BlockMap,
    align_covariance,
    align_generalized,
    align_pixels,
    block_symmetries,
    order_blocks,
    order_from_position_embedding,
    place_blocks,
)
from .jigsaw import seam_cost, solve_jigsaw_shared
from .key_extraction import extract_key_from_model, patch_weight
from .measures import (
    PSNR_CAP,
    Normalization,
    block_accuracy,
    blocks_of,
    draw_key,
    draw_keys,
    image_quality,
    images_of,
    key_error,
    size_label,
)

JIGSAW_IMAGES = 10  # recovered images the jigsaw on recovered blocks uses (its cost grows with each)


# The key-kind-specific part of the statistics attack, in one place: which alignments the attacker tries.
# The key kind is public (the scheme's settings); an orthogonal E_a keeps covariance eigenvectors.
def candidate_methods(kind: str) -> list[str]:
    """The statistics-attack methods the attacker tries for a key kind (it picks one by `choose_method`)."""
    spec = key_kind(kind)
    if spec.moves_pixels_only:  # E_a only moves pixels: match where each pixel's statistics went
        return ["pixel correlations"]
    return (["covariance"] if spec.orthogonal else []) + list(STATISTICS)


def alignment(method: str, public: np.ndarray, cipher: np.ndarray) -> Alignment:
    """The dense-key alignment named `method` (one of `candidate_methods`, not "pixel correlations")."""
    return align_covariance(public, cipher) if method == "covariance" else align_generalized(public, cipher, method)


def statistics_attack(kind: str, public: np.ndarray, cipher: np.ndarray, method: str, rank: int, patch: int,
                      channels: int) -> tuple[BlockMap, np.ndarray]:
    """One statistics attack: (block map, estimated block order), `method` from `candidate_methods(kind)`."""
    if method == "pixel correlations":
        found = align_pixels(public, cipher)
        order, g = order_blocks(public, found.apply(cipher), block_symmetries(patch, channels))
        method = found.method + "; block symmetry from position means"
        return BlockMap(found.matrix[:, g], found.shift[g], method), order
    found = alignment(method, public, cipher).block_map(rank)
    return found, order_blocks(public, found.apply(cipher))[0]


def choose_method(kind: str, public: np.ndarray, n: int, image_size: tuple[int, int], patch: int, channels: int,
                  seed: int) -> tuple[str, int]:
    """The (method, rank) the attacker picks on its own simulation: half the public images as statistics,
    up to `n` of the other half as queries under its own key of the kind; the least block error wins."""
    length = public.shape[-1]
    methods = candidate_methods(kind)
    if key_kind(kind).moves_pixels_only:
        return methods[0], length
    half = len(public) // 2
    reference, simulated = public[:half], public[half : half + min(n, len(public) - half)]
    own = draw_key(image_size, patch, channels, kind, seed)
    cipher = simulated @ own.inverse_matrix  # pooled statistics do not depend on the block order
    errors = {}
    for method in methods:
        found = alignment(method, reference, cipher)
        for r in (r for r in RANKS if r <= length):
            errors[method, r] = float(np.mean((found.block_map(r).apply(cipher) - simulated) ** 2))
    return min(errors, key=errors.get)


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _scores(truth: torch.Tensor, blocks: np.ndarray, norm: Normalization, patch: int, prefix: str) -> dict:
    """PSNR/SSIM (mean and worst image) of plain-order normalized `blocks` against [0, 1] `truth`."""
    images = norm.undo(images_of(blocks, tuple(truth.shape[-2:]), patch)).clamp(0, 1)
    psnr, ssim = image_quality(truth.double(), images)
    psnr = np.minimum(psnr, PSNR_CAP)  # identical images: the project's cap, not inf
    return {f"{prefix}_psnr_mean": float(psnr.mean()), f"{prefix}_psnr_worst": float(psnr.min()),
            f"{prefix}_ssim_mean": float(ssim.mean()), f"{prefix}_ssim_worst": float(ssim.min())}


def _score_recovery(decrypted: np.ndarray, order: np.ndarray, true_order: np.ndarray, truth: torch.Tensor,
                    labels: torch.Tensor, norm: Normalization, patch: int, model: nn.Module | None,
                    predict: Predict | None) -> tuple[dict, torch.Tensor]:
    """Block content (true places), whole images (own order), the plain model's accuracy (NaN with no model)."""
    whole = norm.undo(images_of(place_blocks(decrypted, order), tuple(truth.shape[-2:]), patch)).clamp(0, 1)
    row = dict(blocks_placed=block_accuracy(order, true_order),
               **_scores(truth, place_blocks(decrypted, true_order), norm, patch, "content"),
               **_scores(truth, place_blocks(decrypted, order), norm, patch, "image"),
               accuracy=np.nan if model is None else accuracy(predict(model, _as_uint8(whole)), labels))
    return row, whole


def reference_scores(model: nn.Module | None, truth: torch.Tensor, labels: torch.Tensor, public: np.ndarray,
                     norm: Normalization, predict: Predict | None, base: dict, patch: int | None = None
                     ) -> pd.DataFrame:
    """The originals, every block -> the public mean block, every block -> its own true mean colour."""
    p = patch or patch_size(model)
    blocks = blocks_of(norm.apply(truth.double()), p)
    b, n, length = blocks.shape
    colour = blocks.reshape(b, n, -1, p * p).mean(-1, keepdims=True).repeat(p * p, -1).reshape(b, n, length)
    cases = {"originals": blocks, "public mean block": np.broadcast_to(public.reshape(-1, length).mean(0),
                                                                       blocks.shape).copy(),
             "own mean colour": colour}
    rows = []
    for name, est in cases.items():
        row, _ = _score_recovery(est, np.arange(n), np.arange(n), truth, labels, norm, p, model, predict)
        rows.append(dict(base, reference=name, n_scored=b, **row))
    return pd.DataFrame(rows).drop(columns="blocks_placed")


def cloud_view_study(
    model: nn.Module,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    public: torch.Tensor,
    public_labels: torch.Tensor,
    preprocess: nn.Module,
    predict: Predict,
    data: str,
    ns: Sequence[int],
    n_keys: int = 5,
    n_scored: int = 100,
    relearn_images: int = 1000,
    relearn_epochs: int = 1,
    kinds: Sequence[str] = KEY_KINDS,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Every attack per key kind, key and n; returns tables "detail", "references", "figure images".

    `queries` (the client's test images) and `public` (other images of the kind, with labels) are uint8;
    `preprocess` (a `data.Preprocess`) gives the model's input size and the normalization clients encrypt
    after. `model` is the plain model: it is encrypted per key and scores recovered images, nothing more.
    """
    if max(ns) > len(queries):
        raise ValueError(f"n up to {max(ns)} queries asked but {len(queries)} given: lower security.cloud_queries.")
    norm, size, p = Normalization.of(preprocess), input_size(model), patch_size(model)
    channels = embeddings(model).proj.in_channels
    x_all = preprocess.unit(queries[: max(ns)])
    x_public = preprocess.unit(public)
    public_blocks = blocks_of(norm.apply(x_public.double()), p)
    scored = min(n_scored, min(ns))  # the re-learned key (it uses no query) is scored on as many as the smallest n
    truth, labels = x_all[:n_scored], query_labels[:n_scored]
    base = dict(data=data, image_size=size_label(x_all), patch_size=p, public_images=len(public))
    references = reference_scores(model, truth, labels, public_blocks, norm, predict, base)
    start = time.perf_counter()  # one training serves every key: the plain weights are the same for all
    relearned = relearn_embeddings(model, norm.apply(x_public[:relearn_images]), public_labels[:relearn_images],
                                   relearn_epochs, seed=seed)
    relearn_seconds = time.perf_counter() - start
    relearned_accuracy = accuracy(predict(relearned, _as_uint8(truth)), labels)
    rows, shown = [], {}
    sent = norm.apply(x_all).float()  # what the client encrypts, the same under every key
    for kind in kinds:
        chosen = {n: choose_method(kind, public_blocks, n, size, p, channels, seed + 1) for n in ns}
        for key in draw_keys(kind, n_keys, size, p, seed, "cloud view"):
            cipher_blocks = blocks_of(encrypt_images(sent, key), p)
            info = dict(base, kind=kind, key_fingerprint=key.fingerprint)
            parts = embeddings(encrypt_model(model, key))  # what the cloud holds: Ê_pos (Eq. 8)
            pos_orders = None if parts.pos_embed is None else order_from_position_embedding(
                parts.pos_embed[0, parts.prefix_rows:].detach().double().numpy(),
                (size[0] // p, size[1] // p), seed=seed)
            rows += _statistics_rows(info, kind, key, public_blocks, cipher_blocks, chosen, truth, labels, norm, p,
                                     channels, n_scored, model, predict, shown, pos_orders=pos_orders)
            rows.append(_relearned_row(info, relearned, model, key, kind, cipher_blocks[:scored], truth[:scored],
                                       labels[:scored], norm, p, predict, relearn_seconds, relearned_accuracy))
    return {"detail": pd.DataFrame(rows), "references": references, "figure images": _shown_table(shown)}


def _shown_table(shown: dict) -> pd.DataFrame:
    return pd.DataFrame([dict(kind=k, n_queries=n, images=v) for (k, n), v in shown.items()])


def _statistics_rows(info: dict, kind: str, key, public_blocks: np.ndarray, cipher_blocks: np.ndarray,
                     chosen: dict, truth: torch.Tensor, labels: torch.Tensor, norm: Normalization, p: int,
                     channels: int, n_scored: int, model: nn.Module | None, predict: Predict | None, shown: dict,
                     extra: tuple[torch.Tensor, np.ndarray] | None = None, pos_orders: list[np.ndarray] | None = None
                     ) -> list[dict]:
    """The statistics attack on the first n cipher blocks for each n of `chosen`, scored; one row per n.

    `extra` (images in [0, 1], their cipher blocks under the same key) are further queries the attacker
    decrypts with what it found: their whole-image PSNR/SSIM go into the row (`extra_*`) and the figure.
    `pos_orders` (`cloud_view.order_from_position_embedding` on the client's encrypted model) add a third
    candidate block order.
    """
    rows, size = [], tuple(truth.shape[-2:])
    for n, (method, rank) in chosen.items():
        start = time.perf_counter()
        found, order = statistics_attack(kind, public_blocks, cipher_blocks[:n], method, rank, p, channels)
        seconds = time.perf_counter() - start
        k = min(n, n_scored)
        decrypted = found.apply(cipher_blocks[:k])
        jigsaw = solve_jigsaw_shared(_cipher_order_images(decrypted, norm, size, p)[:JIGSAW_IMAGES], p)
        means, candidates = order, {"position means": order, "jigsaw": jigsaw}
        if pos_orders:  # the encrypted position embedding's order, its flip/turn chosen by the seams
            pos_order, _ = _smoother_order(decrypted[:JIGSAW_IMAGES], dict(enumerate(pos_orders)), norm, size, p)
            candidates["position embedding"] = pos_order
        order, order_from = _smoother_order(decrypted[:JIGSAW_IMAGES], candidates, norm, size, p)
        row, whole = _score_recovery(decrypted, order, key.block_permutation, truth[:k], labels[:k], norm, p,
                                     model, predict)
        if extra is not None:
            extra_whole = norm.undo(images_of(place_blocks(found.apply(extra[1]), order), size, p)).clamp(0, 1)
            psnr, ssim = image_quality(extra[0].double(), extra_whole)
            row.update(extra_psnr_mean=float(np.minimum(psnr, PSNR_CAP).mean()), extra_ssim_mean=float(ssim.mean()))
            whole = torch.cat([whole[:4], extra_whole])
        rows.append(dict(info, attack="statistics of n queries", n_queries=n, method=found.method, rank=rank,
                         key_error=key_error(found.matrix, key.matrix),
                         order_from=order_from, blocks_placed_means=block_accuracy(means, key.block_permutation),
                         blocks_placed_jigsaw=block_accuracy(jigsaw, key.block_permutation),
                         **_position_embedding_scores(candidates.get("position embedding"), pos_orders, key),
                         n_scored=k, seconds=seconds, **row))
        shown.setdefault((kind, n), whole[:8])
    return rows


def cloud_view_geometry_study(
    queries: torch.Tensor,
    public: torch.Tensor,
    preprocess: nn.Module,
    data: str,
    ns: Sequence[int],
    size: int = 224,
    patch: int = 16,
    n_keys: int = 5,
    n_scored: int = 20,
    extra: torch.Tensor | None = None,
    kinds: Sequence[str] = KEY_KINDS,
    seed: int = 0,
) -> dict:
    """The statistics attacks at another geometry (default the paper's: 224x224, 16x16 blocks), with no model.

    The statistics attack needs no model: only the client's ciphertexts, public images and the scheme's
    settings. uint8 `queries` and `public` are resized to `size` with `preprocess`'s interpolation and
    normalized with its mean and std. With no trained model of this geometry, the column has no accuracy
    and no re-learned embeddings. `extra` (uint8, e.g. the photographs) are further queries under the same
    key, decrypted with what the n queries gave. Returns "detail", "references", "figure images" as
    `cloud_view_study` does, and "originals": the images the figure's columns show.
    """
    if max(ns) > len(queries):
        raise ValueError(f"n up to {max(ns)} queries asked but {len(queries)} given: "
                         f"lower security.cloud_geometry_queries.")
    norm = Normalization.of(preprocess)
    preprocess = Preprocess((size, size), norm.mean, norm.std, preprocess.interpolation)
    size, channels = (size, size), queries.shape[1]
    x_all = preprocess.unit(queries[: max(ns)])
    public_blocks = blocks_of(norm.apply(preprocess.unit(public).double()), patch)
    truth, labels = x_all[:n_scored], torch.full((min(n_scored, len(x_all)),), -1)
    base = dict(data=data, image_size=size_label(x_all), patch_size=patch, public_images=len(public))
    references = reference_scores(None, truth, labels, public_blocks, norm, None, base, patch)
    x_extra = None if extra is None else preprocess.unit(extra)
    sent = norm.apply(x_all).float()  # what the client encrypts, the same under every key
    sent_extra = None if x_extra is None else norm.apply(x_extra).float()
    rows, shown = [], {}
    for kind in kinds:
        chosen = {n: choose_method(kind, public_blocks, n, size, patch, channels, seed + 1) for n in ns}
        for key in draw_keys(kind, n_keys, size, patch, seed, "cloud view", channels):
            cipher_blocks = blocks_of(encrypt_images(sent, key), patch)
            extra_pair = None if x_extra is None else (x_extra, blocks_of(encrypt_images(sent_extra, key), patch))
            info = dict(base, kind=kind, key_fingerprint=key.fingerprint)
            rows += _statistics_rows(info, kind, key, public_blocks, cipher_blocks, chosen, truth, labels, norm,
                                     patch, channels, n_scored, None, None, shown, extra_pair)
    originals = truth[:8] if x_extra is None else torch.cat([truth[:4], x_extra])[:8]
    return {"detail": pd.DataFrame(rows), "references": references, "figure images": _shown_table(shown),
            "originals": originals}


def _position_embedding_scores(chosen: np.ndarray | None, pos_orders: list[np.ndarray] | None, key) -> dict:
    """Blocks placed by the position-embedding order: with the attacker's flip/turn, and the best of them."""
    if not pos_orders:
        return {}
    return dict(blocks_placed_pos_embed=block_accuracy(chosen, key.block_permutation),
                blocks_placed_pos_embed_any_flip=max(block_accuracy(o, key.block_permutation) for o in pos_orders))


def _smoother_order(decrypted: np.ndarray, orders: dict[str, np.ndarray], norm: Normalization,
                    size: tuple[int, int], p: int) -> tuple[np.ndarray, str]:
    """The attacker's own block order: of the candidates, the one whose assembled images have the smoothest seams."""
    cost = {name: seam_cost(norm.undo(images_of(place_blocks(decrypted, o), size, p)).clamp(0, 1), p)
            for name, o in orders.items()}
    best = min(cost, key=cost.get)
    return orders[best], best


def _cipher_order_images(decrypted: np.ndarray, norm: Normalization, size: tuple[int, int], p: int) -> torch.Tensor:
    return norm.undo(images_of(decrypted, size, p)).clamp(0, 1)


def _relearned_row(info: dict, relearned: nn.Module, model: nn.Module, key, kind: str, cipher_blocks: np.ndarray,
                   truth: torch.Tensor, labels: torch.Tensor, norm: Normalization, p: int, predict: Predict,
                   seconds: float, relearned_accuracy: float) -> dict:
    """Key extraction with the re-learned embeddings standing in for the plain ones (no query used)."""
    start = time.perf_counter()
    rec = extract_key_from_model(relearned, encrypt_model(model, key), kind)
    decrypted = cipher_blocks @ rec.matrix
    row, _ = _score_recovery(decrypted, rec.block_permutation, key.block_permutation, truth, labels, norm, p, model,
                             predict)
    return dict(info, attack="re-learned embeddings (no query)", n_queries=0, method=rec.method, rank=np.nan,
                key_error=key_error(rec.matrix, key.matrix), order_from="position-embedding rows",
                blocks_placed_jigsaw=np.nan, n_scored=len(truth),
                seconds=seconds + time.perf_counter() - start, relearned_model_accuracy=relearned_accuracy,
                relearned_W_error=key_error(patch_weight(relearned), patch_weight(model)), **row)


def summarize_cloud_view(detail: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, attack, n): keys, blocks placed, block-content and whole-image PSNR/SSIM, accuracy, seconds."""
    by = ["data", "image_size", "patch_size", "public_images", "kind", "attack", "n_queries"]
    extra = {c: (c, "mean") for c in ("extra_psnr_mean", "extra_ssim_mean") if c in detail}
    pos = {c: (c, "mean") for c in ("blocks_placed_pos_embed", "blocks_placed_pos_embed_any_flip") if c in detail}
    return detail.groupby(by, sort=False).agg(
        keys=("key_fingerprint", "nunique"), n_scored=("n_scored", "max"), rank=("rank", "median"),
        blocks_placed=("blocks_placed", "mean"), blocks_placed_means=("blocks_placed_means", "mean"),
        blocks_placed_jigsaw=("blocks_placed_jigsaw", "mean"), **pos,
        key_error=("key_error", "mean"), content_psnr_mean=("content_psnr_mean", "mean"),
        content_psnr_worst=("content_psnr_worst", "min"), content_ssim_mean=("content_ssim_mean", "mean"),
        image_psnr_mean=("image_psnr_mean", "mean"), image_psnr_worst=("image_psnr_worst", "min"),
        image_ssim_mean=("image_ssim_mean", "mean"), accuracy=("accuracy", "mean"),
        accuracy_min=("accuracy", "min"), **extra, seconds_per_key=("seconds", "mean")).reset_index()


def key_refresh_transfer(model: nn.Module, kinds: Sequence[str] = KEY_KINDS, pairs: int = 5, seed: int = 0
                         ) -> pd.DataFrame:
    """Refreshing the key: how well two encrypted models of one client map one key's ciphertexts onto the other's.

    Ŵ_1 = W E_1^T and Ŵ_2 = W E_2^T (Eq. 3) give T = Ŵ_1^+ Ŵ_2 = E_1^-T E_2^T when rank W = L, and a block
    under key 2 maps to key 1 as y_1 = y_2 T^T: queries under all keys pool into one set. Scored on random blocks.
    """
    size, p = input_size(model), patch_size(model)
    w = patch_weight(model)
    rows = []
    for kind in kinds:
        keys = draw_keys(kind, 2 * pairs, size, p, seed, "key refresh")
        blocks = np.random.default_rng(seed).standard_normal((256, keys[0].block_length))
        for k1, k2 in zip(keys[::2], keys[1::2], strict=True):
            transfer = np.linalg.pinv(w @ k1.matrix.T) @ (w @ k2.matrix.T)
            y1, y2 = blocks @ k1.inverse_matrix, blocks @ k2.inverse_matrix
            rows.append(dict(kind=kind, D=w.shape[0], L=w.shape[1], rank_W=int(np.linalg.matrix_rank(w)),
                             mapping_error=key_error(y2 @ transfer.T, y1)))
    out = pd.DataFrame(rows)
    return out.groupby(["kind", "D", "L", "rank_W"], sort=False).agg(
        key_pairs=("mapping_error", "size"), mapping_error_max=("mapping_error", "max")).reset_index()


def cloud_view_figure(originals: torch.Tensor, shown: pd.DataFrame, n: int, label: str) -> Figure:
    """Originals beside what the statistics attack recovered from n queries, one row per key kind."""
    rows = [("originals", originals)] + [(f"{r.kind}, n = {r.n_queries}", r.images)
                                         for r in shown[shown["n_queries"] == n].itertuples()]
    cols = min(len(originals), min(len(images) for _, images in rows))
    fig = Figure(figsize=(1.3 * cols, 1.4 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(images[c].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.suptitle(f"the cloud's statistics attack (key 1 of each kind, own block order); {label}", fontsize=8)
    return fig
