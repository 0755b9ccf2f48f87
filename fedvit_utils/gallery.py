"""Pictures of encrypted images: the paper's Figure 2 and a gallery of every key kind.

Figure 2 of Nagamori & Kiya shows a 224x224 photograph encrypted with 16x16 blocks, where E_a
(Eq. 2) is drawn like E_b (Eq. 6): a permutation matrix, i.e. pixel shuffling inside each block.
Dense keys (orthogonal, gaussian) give real-valued images outside [0, 1]; they are min-max scaled
for display, which is said in their titles.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from .encryption import encrypt_images
from .keys import KEY_KINDS, generate_key

PHOTOS = ("astronaut", "coffee", "chelsea")


def photo(name: str = "astronaut", size: int = 224) -> np.ndarray:
    """A photograph shipped with scikit-image, centre-cropped and resized to size x size (uint8 HWC)."""
    import skimage.data

    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {PHOTOS}.")
    img = getattr(skimage.data, name)()[..., :3]
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(img[top : top + s, left : left + s])
    return np.asarray(crop.resize((size, size), Image.BICUBIC))


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}.")
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None]


def encrypt_for_display(image: np.ndarray, kind: str, block_size: int, seed: int) -> tuple[np.ndarray, bool]:
    """Encrypt an RGB uint8 image with a fresh demo key; returns (HWC image in [0, 1], was_rescaled)."""
    x = _to_tensor(image)
    key = generate_key(image.shape[:2], block_size, 3, kind, seed)
    if kind == "permutation":  # pixels only move: the result is a valid uint8 image
        return encrypt_images(x, key)[0].permute(1, 2, 0).numpy() / 255.0, False
    enc = encrypt_images(x.double() / 255.0, key)[0].permute(1, 2, 0).numpy()
    return (enc - enc.min()) / (enc.max() - enc.min()), True


def figure2(image: np.ndarray, block_size: int = 16, seed: int = 0, label: str = "") -> Figure:
    """The paper's Figure 2: (a) original, (b) encrypted with a pixel-shuffling key."""
    enc, _ = encrypt_for_display(image, "permutation", block_size, seed)
    h, w = image.shape[:2]
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    axes[0].imshow(image)
    axes[0].set_title(f"(a) Original\n({h} x {w} x 3)")
    axes[1].imshow(enc)
    axes[1].set_title(f"(b) Encrypted image\n(block size = {block_size})")
    for ax in axes:
        ax.set_axis_off()
    if label:
        fig.suptitle(label, fontsize=8)
    return fig


def key_kind_gallery(images: dict[str, tuple[np.ndarray, int]], seed: int = 0, label: str = "") -> Figure:
    """Rows: images (name -> (RGB uint8, block size)); columns: original and each key kind."""
    fig = Figure(figsize=(2.4 * (1 + len(KEY_KINDS)), 2.5 * len(images)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(images), 1 + len(KEY_KINDS)))
    for row, (name, (image, block)) in zip(axes, images.items(), strict=True):
        row[0].imshow(image, interpolation="nearest")
        row[0].set_title(f"{name}\n{image.shape[0]}x{image.shape[1]}, plain", fontsize=9)
        for ax, kind in zip(row[1:], KEY_KINDS, strict=True):
            enc, rescaled = encrypt_for_display(image, kind, block, seed)
            ax.imshow(enc, interpolation="nearest")
            note = " (scaled)" if rescaled else ""
            ax.set_title(f"{kind}, block {block}{note}", fontsize=9)
        for ax in row:
            ax.set_axis_off()
    if label:
        fig.suptitle(label, fontsize=8)
    return fig
