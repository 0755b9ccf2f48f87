"""The study's figures: client partitions, accuracy per round, the paper's Figure 2, key kinds, attacks.

Every function takes data and returns a `matplotlib.figure.Figure` (no pyplot state), so notebooks
show it and save it, and tests can inspect it. Figure 2 of Nagamori & Kiya shows a 224x224 photograph
encrypted with 16x16 blocks where E_a (Eq. 2) is drawn like E_b (Eq. 6): a permutation matrix, i.e.
pixel shuffling inside each block. Dense keys (orthogonal, gaussian) give real-valued images outside
[0, 1]; they are min-max scaled for display, which their titles say.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..encryption import decrypt_images, encrypt_images
from ..keys import KEY_KINDS, generate_key
from ..security.measures import stretch


# -- training ---------------------------------------------------------------------------------------
def class_counts_figure(counts: np.ndarray, classes: list[str], title: str = "") -> Figure:
    """Stacked bars: images per class for each client."""
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    bottom = np.zeros(len(counts))
    cmap = matplotlib.colormaps["tab20"]
    for c, name in enumerate(classes):
        ax.bar(np.arange(len(counts)), counts[:, c], bottom=bottom, label=name, color=cmap(c % 20))
        bottom += counts[:, c]
    ax.set_xlabel("client")
    ax.set_ylabel("images")
    ax.set_xticks(np.arange(len(counts)))
    if len(classes) <= 20:
        ax.legend(fontsize=7, ncols=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(textwrap.fill(title, 110), fontsize=8)
    return fig


def accuracy_curves(federated: pd.DataFrame, centralized: pd.DataFrame | None, title: str = "",
                    chance: float | None = None) -> Figure:
    """Test accuracy per round: integrated model, the clients' spread, local models, the baseline per epoch, and
    the accuracy of guessing (`chance`, 1 / classes). Whole-number round ticks; the legend sits under the plot."""
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.subplots()
    test = federated[federated["data"] == "test"]
    integrated = test[test["model"] == "integrated"]
    whole, per_client = integrated[integrated["scope"] == "all"], integrated[integrated["scope"] == "client"]
    if not per_client.empty:
        spread = per_client.groupby("round")["accuracy"].agg(["min", "max"])
        ax.fill_between(spread.index, spread["min"], spread["max"], alpha=0.2, color="C0",
                        label="integrated model, min-max over clients' test splits")
    ax.plot(whole["round"], whole["accuracy"], "o-", color="C0", label="integrated model (FedAvg), all test images")
    local = test[test["model"] == "local"]
    if not local.empty:
        mean_local = local.groupby("round")["accuracy"].mean()
        ax.plot(mean_local.index, mean_local.values, "s--", color="C2", alpha=0.8,
                label="clients' local models, mean on own test split")
    if centralized is not None and not centralized.empty:
        base = centralized[(centralized["data"] == "test") & (centralized["scope"] == "all")]
        ax.plot(base["round"], base["accuracy"], "^-", color="C1", label="baseline (centralized), per epoch")
    if chance is not None:
        ax.axhline(chance, color="0.4", ls=":", lw=1, label=f"chance (1 / classes = {chance:.2f})")
    ax.set_xlabel("round (= epoch over each client's data)")
    ax.set_ylabel("test accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, frameon=False)
    ax.set_title(textwrap.fill(title, 95), fontsize=8)  # labels name profile, data and hardware: long
    return fig


# -- encrypted images -------------------------------------------------------------------------------
def encrypt_for_display(image: torch.Tensor, kind: str, block_size: int, seed: int) -> tuple[np.ndarray, bool]:
    """Encrypt one uint8 image (C, H, W) with a demo key; returns (HWC image in [0, 1], was_rescaled)."""
    if image.dim() != 3 or image.dtype != torch.uint8:
        raise ValueError(f"expected one uint8 image (C, H, W), got {image.dtype} {tuple(image.shape)}.")
    key = generate_key(tuple(image.shape[-2:]), block_size, image.shape[0], kind, seed)
    if key.key_kind.moves_pixels_only:  # the result is a valid uint8 image
        return encrypt_images(image[None], key)[0].permute(1, 2, 0).numpy() / 255.0, False
    enc = encrypt_images(image[None].double() / 255.0, key)
    return stretch(enc)[0].permute(1, 2, 0).numpy(), True


def figure2(image: torch.Tensor, block_size: int = 16, seed: int = 0, label: str = "") -> Figure:
    """The paper's Figure 2: (a) original, (b) encrypted with a pixel-shuffling key."""
    enc, _ = encrypt_for_display(image, "permutation", block_size, seed)
    _, h, w = image.shape
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    axes[0].imshow(image.permute(1, 2, 0).numpy())
    axes[0].set_title(f"(a) Original\n({h} x {w} x 3)")
    axes[1].imshow(enc)
    axes[1].set_title(f"(b) Encrypted image\n(block size = {block_size})")
    for ax in axes:
        ax.set_axis_off()
    if label:
        fig.suptitle(textwrap.fill(label, 100), fontsize=8)
    return fig


def encryption_roundtrip(image: torch.Tensor, kind: str, block_size: int, seed: int, label: str = "") -> Figure:
    """One uint8 image (C, H, W): plain, encrypted with a demo key (Eq. 9-13) and decrypted with the same key."""
    if image.dim() != 3 or image.dtype != torch.uint8:
        raise ValueError(f"expected one uint8 image (C, H, W), got {image.dtype} {tuple(image.shape)}.")
    key = generate_key(tuple(image.shape[-2:]), block_size, image.shape[0], kind, seed)
    plain = image[None].double() / 255.0
    encrypted = encrypt_images(plain, key)
    decrypted = decrypt_images(encrypted, key)
    error = (decrypted - plain).abs().max().item()
    rescaled = not key.key_kind.moves_pixels_only
    shown = stretch(encrypted) if rescaled else encrypted
    fig = Figure(figsize=(7.2, 2.9), layout="constrained")
    axes = fig.subplots(1, 3)
    titles = [f"plain {image.shape[1]}x{image.shape[2]}",
              f"encrypted: {kind} key\n{key.num_blocks} blocks of {block_size}x{block_size}, L={key.block_length}"
              + (" (scaled)" if rescaled else ""),
              f"decrypted with the same key\nmax |error| = {error:.1e}"]
    for ax, img, title in zip(axes, (plain, shown, decrypted), titles, strict=True):
        ax.imshow(img[0].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(textwrap.fill(f"demo key from seed {seed} (public, not a secret)" + (f" · {label}" if label else ""),
                               110), fontsize=8)
    return fig


def key_kind_gallery(images: Mapping[str, tuple[torch.Tensor, int]], kinds: Sequence[str] = KEY_KINDS,
                     seed: int = 0, label: str = "") -> Figure:
    """Rows: uint8 images (name -> ((C, H, W), block size)); columns: plain and each key kind."""
    fig = Figure(figsize=(2.4 * (1 + len(kinds)), 2.5 * len(images)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(images), 1 + len(kinds), squeeze=False))
    for row, (name, (image, block)) in zip(axes, images.items(), strict=True):
        row[0].imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        row[0].set_title(f"{name}\n{image.shape[1]}x{image.shape[2]}, plain", fontsize=9)
        for ax, kind in zip(row[1:], kinds, strict=True):
            enc, rescaled = encrypt_for_display(image, kind, block, seed)
            ax.imshow(enc, interpolation="nearest")
            ax.set_title(f"{kind}, block {block}{' (scaled)' if rescaled else ''}", fontsize=9)
        for ax in row:
            ax.set_axis_off()
    if label:
        fig.suptitle(textwrap.fill(label, 110), fontsize=8)
    return fig


# -- attacks ----------------------------------------------------------------------------------------
# What each known-plaintext method does, in words (security/known_plaintext.py): how the attacker tells which
# encrypted block came from which plain block, then how it solves for the key.
ATTACK_WORDS = {
    "multiset": "match blocks by their sorted pixel values",
    "gram": "match blocks by their inner products (Gram matrix)",
    "projector": "match blocks by projecting onto the known blocks' span",
    "pixels": "read the pixel permutation off the matched blocks",
    "lstsq": "solve for E_a by least squares",
    "procrustes": "fit an orthogonal E_a (Procrustes)",
}


def attack_label(kind: str, method: str) -> str:
    """A legend entry that says what an attack does: "orthogonal key: match blocks by ..., then solve ..."."""
    match, _, fit = method.partition(" + ")
    words = [ATTACK_WORDS.get(match.strip(), match.strip())] + ([ATTACK_WORDS.get(fit.strip(), fit.strip())]
                                                                  if fit else [])
    return f"{kind} key: {', then '.join(words)} ({method})"


def known_plaintext_figure(summary: pd.DataFrame) -> Figure:
    """Share of exact draws and decryption PSNR (mean over draws, worst image) against k, per (kind, method)."""
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    groups = summary.groupby(["data", "image_size", "patch_size", "kind", "method"], sort=False)
    for i, ((_, size, p, kind, method), g) in enumerate(groups):
        label = f"{attack_label(kind, method)} · {size}, block {p}"
        color = f"C{i % 10}"
        axes[0].plot(g["k"], g["exact_draws"] / g["draws"], marker="o", color=color, label=label)
        axes[1].plot(g["k"], g["psnr_mean"], marker="o", color=color, label=label)
        axes[1].plot(g["k"], g["psnr_worst_image"], ls="--", color=color, alpha=0.6)
    draws = ", ".join(str(n) for n in sorted(set(summary["draws"])))
    titles = [f"share of draws exact ({draws} draws per k)",
              "PSNR of decrypted unseen images (dB; 100 = identical)\nsolid: mean over draws, dashed: worst image"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xlabel("known (plain, encrypted) pairs k")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # k counts image pairs
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="outside lower center", ncols=1, frameon=False)
    fig.suptitle(textwrap.fill("Known-plaintext attack, fresh key and known images per draw: "
                               + ", ".join(sorted(set(summary["data"]))), 120), fontsize=9)
    return fig
