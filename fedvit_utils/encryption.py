"""Block-wise image encryption, Sec. 3.3 of Nagamori & Kiya (Eq. 9-13).

A test image is (a) split into p x p blocks, (b) the blocks are permuted with E_b (Eq. 9-10): encrypted
block i is plain block l_e(i), (c) every block is flattened (Eq. 11), (d) multiplied by E_a^-1 from the
right (Eq. 12-13) and (e) the blocks are put back together. `encrypt_images_reference` does exactly
that, one block at a time; `encrypt_images` computes the same in one pass over the batch and is tested
against it.

Flatten order. timm's patch embedding is a Conv2d with weight ``(D, C, p, p)`` and stride p, i.e.
``z = W.reshape(D, L) @ b + bias`` with ``b`` a block flattened channel-major ``(C, p, p)``, so every
block here is flattened as ``(C, p, p)`` (see `model_encryption` for the model side).

Normalization. Per-channel normalization does not commute with an E_a that mixes channels, so in a
pipeline encryption comes after normalization (`EncryptImages` after `Preprocess`), or the
normalization is folded into the model (`model_encryption.fold_normalization`).
"""

from __future__ import annotations

import torch
from torch import nn

from .keys import KEY_KINDS, KeyMismatchError, SecretKey, key_kind

__all__ = [
    "EncryptImages",
    "decrypt_images",
    "encrypt_images",
    "encrypt_images_reference",
    "merge_blocks",
    "split_blocks",
]


# -- blocks (steps a, c and e) ---------------------------------------------------------------------
def split_blocks(images: torch.Tensor, patch_size: int, order: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, L): blocks in row-major order (or in `order`), each flattened (C, p, p) (Eq. 11)."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"images are {h}x{w}, not divisible by the block size {p}.")
    gh, gw = h // p, w // p
    grid = images.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p), a view
    if order is not None:  # gather the blocks in the given order and lay them out in one copy
        return grid[:, order // gw, order % gw].reshape(b, gh * gw, c * p * p)
    return grid.reshape(b, gh * gw, c * p * p)


def merge_blocks(blocks: torch.Tensor, image_size: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(B, N, L) -> (B, C, H, W): the inverse of `split_blocks`."""
    b, _, length = blocks.shape
    (h, w), p = image_size, patch_size
    c = length // (p * p)
    return blocks.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


# -- the definition ----------------------------------------------------------------------------------
def encrypt_images_reference(images: torch.Tensor, key: SecretKey) -> torch.Tensor:
    """Sec. 3.3 read literally, one block at a time (slow; the definition `encrypt_images` is tested against)."""
    _check_images(images, key, allow_integer=False)
    p, (_, gw) = key.patch_size, key.grid_size
    inverse = torch.tensor(key.inverse_matrix, dtype=images.dtype, device=images.device)  # E_a^-1
    out = torch.empty_like(images)
    for i, source in enumerate(key.block_permutation.tolist()):
        r, c = divmod(source, gw)  # (b) Eq. (9): encrypted block i is plain block l_e(i)
        block = images[:, :, p * r : p * r + p, p * c : p * c + p]
        b_i = block.reshape(len(images), -1)  # (c) Eq. (11): flattened (C, p, p)
        b_hat = b_i @ inverse  # (d) Eq. (12): b_hat = b E_a^-1
        ri, ci = divmod(i, gw)  # (e) the encrypted block goes to position i
        out[:, :, p * ri : p * ri + p, p * ci : p * ci + p] = b_hat.view_as(block)
    return out


# -- the fast path -----------------------------------------------------------------------------------
def encrypt_images(images: torch.Tensor, key: SecretKey) -> torch.Tensor:
    """Encrypt a batch (B, C, H, W) with `key` (Eq. 9-13); same dtype and device as the input."""
    _check_images(images, key, allow_integer=True)
    if key.key_kind.moves_pixels_only:
        # E_b and a permutation E_a only move pixels: the whole of Eq. 9-12 is one gather.
        return _gather(images, _pixel_source(key, images.device, inverse=False))
    ct = _compute_dtype(images.dtype)
    if not bool(torch.isfinite(images.sum(dtype=ct))):  # one pass, no mask: any NaN or Inf makes the sum so
        raise ValueError(
            f"images contain {int((~torch.isfinite(images)).sum())} NaN or infinite values: a {key.kind!r} key "
            f"would spread each over a whole block (and Eq. 14 cannot hold for them); clean or drop those images."
        )
    # (a)-(c): split into blocks, put them in E_b's order (Eq. 9) and flatten them (Eq. 11), in one copy.
    blocks = split_blocks(images.to(ct), key.patch_size, _block_order(key, images.device))
    with _no_autocast(images.device):  # under autocast the product would run in bf16 whatever `ct` says
        encrypted = blocks @ _matrix(key, "inverse", images.device, ct)  # (d) Eq. (12)
    return merge_blocks(encrypted, key.image_size, key.patch_size).to(images.dtype)  # (e)


def decrypt_images(images: torch.Tensor, key: SecretKey) -> torch.Tensor:
    """Invert `encrypt_images`: recover the plain batch from an encrypted one."""
    _check_images(images, key, allow_integer=True)
    if key.key_kind.moves_pixels_only:
        return _gather(images, _pixel_source(key, images.device, inverse=True))
    ct = _compute_dtype(images.dtype)
    with _no_autocast(images.device):  # b = b_hat E_a
        blocks = split_blocks(images.to(ct), key.patch_size) @ _matrix(key, "forward", images.device, ct)
    plain = torch.empty_like(blocks)
    plain[:, _block_order(key, images.device)] = blocks  # undo Eq. (9)
    return merge_blocks(plain, key.image_size, key.patch_size).to(images.dtype)


class EncryptImages(nn.Module):
    """Transform that encrypts (C, H, W) or (B, C, H, W) tensors; place it after normalization."""

    def __init__(self, key: SecretKey) -> None:
        super().__init__()
        self.key = key

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            return encrypt_images(images.unsqueeze(0), self.key).squeeze(0)
        return encrypt_images(images, self.key)

    def extra_repr(self) -> str:
        return repr(self.key)


# -- helpers -----------------------------------------------------------------------------------------
def _check_images(images: torch.Tensor, key: SecretKey, allow_integer: bool) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected a batch of images (B, C, H, W), got {shape}; add a batch dimension.")
    _, c, h, w = images.shape
    if images.is_complex():
        raise TypeError(f"images have complex dtype {images.dtype}; encryption takes real pixel values.")
    if c != key.channels and w == key.channels and h % key.patch_size == 0:
        raise KeyMismatchError(
            f"images of shape {tuple(images.shape)} look channels-last (B, H, W, C); encryption takes (B, C, H, W): "
            f"pass images.permute(0, 3, 1, 2)."
        )
    if c != key.channels:
        raise KeyMismatchError(
            f"images have {c} channels but the key was made for {key.channels}: "
            f"generate a key with channels={c}."
        )
    if (h, w) != key.image_size:
        p = key.patch_size
        hint = "" if h % p == 0 and w % p == 0 else f" ({h}x{w} is not even divisible by the block size {p})"
        raise KeyMismatchError(
            f"images are {h}x{w} but the key was made for {key.image_size[0]}x{key.image_size[1]}{hint}: "
            f"resize the images to the model's input size first, or generate a key for {h}x{w}."
        )
    if not images.is_floating_point() and not (allow_integer and key.key_kind.moves_pixels_only):
        only_moving = [name for name in KEY_KINDS if key_kind(name).moves_pixels_only]
        raise TypeError(
            f"images have integer dtype {images.dtype}; a {key.kind!r} key mixes pixel values, which needs "
            f"floats: convert and normalize first (e.g. Preprocess), or use a key that only moves pixels "
            f"({', '.join(map(repr, only_moving))}) and keeps uint8 images exact."
        )


def _block_order(key: SecretKey, device: torch.device) -> torch.Tensor:
    """l_e as an index tensor on `device` (cached on the key)."""
    return key.derived(("block_order", str(device)),
                       lambda: torch.tensor(key.block_permutation, device=device))


def _matrix(key: SecretKey, which: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """E_a^-1 ("inverse", Eq. 12) or E_a ("forward", decryption) on `device` (cached on the key)."""
    source = key.inverse_matrix if which == "inverse" else key.matrix
    return key.derived(("matrix", which, str(device), dtype),
                       lambda: torch.tensor(source, dtype=torch.float64).to(device=device, dtype=dtype))


def _pixel_source(key: SecretKey, device: torch.device, inverse: bool) -> torch.Tensor:
    """Flat index `src` with encrypted.flatten(1) == plain.flatten(1)[:, src] (pixel-moving keys, cached)."""

    def make() -> torch.Tensor:
        # Encrypt the image of pixel positions 0, 1, 2, ... with the general path: what lands at
        # each place is the index of the pixel it came from.
        c, (h, w) = key.channels, key.image_size
        positions = torch.arange(c * h * w, dtype=torch.float64).view(1, c, h, w)
        blocks = split_blocks(positions, key.patch_size)[:, torch.tensor(key.block_permutation)]
        # Eq. (12) with a permutation E_a: (b E_a^-1)[j] = b[pixel_perm[j]].
        blocks = blocks[:, :, torch.tensor(key.pixel_permutation)]
        src = merge_blocks(blocks, key.image_size, key.patch_size).reshape(-1).long()
        return (torch.argsort(src) if inverse else src).to(device)

    return key.derived(("pixel_source", inverse, str(device)), make)


def _gather(images: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    # torch.gather with a broadcast index is ~6x faster on CPU than advanced indexing x[:, src].
    flat = images.reshape(images.shape[0], -1)
    return torch.gather(flat, 1, src.expand(flat.shape[0], -1)).view(images.shape)


def _no_autocast(device: torch.device) -> torch.autocast:
    # Encryption runs inside training and evaluation code that may hold bf16 autocast (devices.autocast);
    # the key's product must stay in the compute dtype, or Eq. 14 holds only to bf16 precision.
    return torch.autocast(device.type, enabled=False)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision inputs are transformed in float32: a dense L x L product in bf16 would lose
    # ~3 significant digits, far more than the final cast back does.
    return torch.float64 if dtype == torch.float64 else torch.float32
