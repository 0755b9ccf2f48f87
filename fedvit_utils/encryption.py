"""Block-wise image encryption and ViT model encryption (Nagamori & Kiya, Sec. 3.2-3.3).

Images (Sec. 3.3): split into p x p blocks (a), permute the blocks with E_b (Eq. 9), flatten each
block (Eq. 11) and multiply by E_a^-1 (Eq. 12).
Model (Sec. 3.2): patch embedding E_hat = E_a E (Eq. 3), position embedding E_pos_hat = E_b E_pos
(Eq. 8), prefix-token rows (class, distillation, register tokens) left in place.
Together (Eq. 14): ``encrypt_model(m, k)(encrypt_images(x, k)) == m(x)``.

Flatten order. timm's patch embedding is a Conv2d with weight ``(D, C, p, p)`` and stride p, i.e.
``z = W.reshape(D, L) @ b + bias`` with ``b`` a block flattened channel-major ``(C, p, p)``. So the
paper's ``E`` (L x D) is ``W.reshape(D, L).T`` and every block here is flattened as ``(C, p, p)``.

Normalization. Per-channel normalization does not commute with an E_a that mixes channels, so in a
pipeline encryption comes after normalization. `fold_normalization` moves the normalization into the
model instead, so a client can encrypt raw pixels (uint8 with a permutation key).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .keys import KeyMismatchError, SecretKey

__all__ = [
    "EncryptImages",
    "NotAViTError",
    "decrypt_images",
    "encrypt_images",
    "encrypt_model",
    "fold_normalization",
]


class NotAViTError(TypeError):
    """The model is not a timm VisionTransformer with a linear, non-overlapping patch embedding."""


# -- images -----------------------------------------------------------------------------------------
def _check_images(images: torch.Tensor, key: SecretKey, allow_integer: bool) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected a batch of images (B, C, H, W), got {shape}; add a batch dimension.")
    _, c, h, w = images.shape
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
    if not images.is_floating_point() and not (allow_integer and key.kind == "permutation"):
        raise TypeError(
            f"images have integer dtype {images.dtype}; a {key.kind!r} key mixes pixel values, which needs "
            f"floats: convert and normalize first (e.g. Preprocess), or use a 'permutation' key, which "
            f"only moves pixels and keeps uint8 images exact."
        )


def _block_grid_index(key: SecretKey, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column (in blocks) of the plain block that goes to each encrypted position."""
    _, gw = key.grid_size
    perm = torch.as_tensor(key.block_permutation, device=device)
    return perm // gw, perm % gw


def _pixel_gather_index(key: SecretKey, device: torch.device, inverse: bool) -> torch.Tensor:
    """Flat index `src` with encrypted.flatten(1) == plain.flatten(1)[:, src] (permutation keys)."""
    c, (h, w), p = key.channels, key.image_size, key.patch_size
    gh, gw = key.grid_size
    plain = torch.arange(c * h * w, device=device).view(1, c, h, w)
    blocks = plain.view(c, gh, p, gw, p).permute(1, 3, 0, 2, 4)  # (gh, gw, C, p, p)
    rows, cols = _block_grid_index(key, device)
    enc_blocks = blocks[rows, cols].reshape(-1, c * p * p)  # (N, L): Eq. (9), flattened as in Eq. (11)
    # Eq. (12) with E_a a permutation matrix: (b E_a^-1)[j] = b[pixel_perm[j]], a gather.
    enc_blocks = enc_blocks[:, torch.as_tensor(key.pixel_permutation, device=device)]
    src = _unblock(enc_blocks.unsqueeze(0), key).reshape(-1)
    if inverse:
        src = torch.argsort(src)
    return src


def _blocks(images: torch.Tensor, key: SecretKey, permute: bool) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, L) blocks flattened (C, p, p), optionally in E_b order; one copy."""
    b, c, h, w = images.shape
    p = key.patch_size
    gh, gw = key.grid_size
    grid = images.view(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p), a view
    if permute:
        # Advanced indexing gathers and lays out the blocks in one pass.
        rows, cols = _block_grid_index(key, images.device)
        return grid[:, rows, cols].reshape(b, gh * gw, c * p * p)
    return grid.reshape(b, gh * gw, c * p * p)


def _unblock(blocks: torch.Tensor, key: SecretKey) -> torch.Tensor:
    """(B, N, L) -> (B, C, H, W), the inverse of `_blocks` without permutation."""
    b = blocks.shape[0]
    c, (h, w), p = key.channels, key.image_size, key.patch_size
    gh, gw = key.grid_size
    return blocks.view(b, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


_cache: dict[tuple, torch.Tensor] = {}


def _cached(key: SecretKey, what: str, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    # Index and matrix tensors are derived once per (key, device, dtype); keys are immutable.
    tag = (key._digest(), what, str(device), dtype)
    if tag not in _cache:
        if len(_cache) > 64:
            _cache.clear()
        if what in ("gather", "scatter"):
            _cache[tag] = _pixel_gather_index(key, device, inverse=what == "scatter")
        else:
            mat = key.inverse_matrix if what == "enc" else key.matrix
            # Row-vector convention of Eq. (12): b_hat = b @ E_a^-1; decryption b = b_hat @ E_a.
            _cache[tag] = torch.as_tensor(mat, dtype=torch.float64).to(device=device, dtype=dtype)
    return _cache[tag]


def _gather(images: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    # torch.gather with a broadcast index is ~6x faster on CPU than advanced indexing x[:, src].
    flat = images.reshape(images.shape[0], -1)
    return torch.gather(flat, 1, src.expand(flat.shape[0], -1)).view(images.shape)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision inputs are transformed in float32: a dense L x L product in bf16 would lose
    # ~3 significant digits, far more than the final cast back does.
    return torch.float64 if dtype == torch.float64 else torch.float32


def encrypt_images(images: torch.Tensor, key: SecretKey) -> torch.Tensor:
    """Encrypt a batch (B, C, H, W) with `key` (Eq. 9-13); same dtype and device as the input."""
    _check_images(images, key, allow_integer=True)
    if key.kind == "permutation":
        return _gather(images, _cached(key, "gather", images.device))
    ct = _compute_dtype(images.dtype)
    blocks = _blocks(images.to(ct), key, permute=True)
    enc = blocks @ _cached(key, "enc", images.device, ct)
    return _unblock(enc, key).to(images.dtype)


def decrypt_images(images: torch.Tensor, key: SecretKey) -> torch.Tensor:
    """Invert `encrypt_images`: recover the plain batch from an encrypted one."""
    _check_images(images, key, allow_integer=True)
    if key.kind == "permutation":
        return _gather(images, _cached(key, "scatter", images.device))
    ct = _compute_dtype(images.dtype)
    blocks = _blocks(images.to(ct), key, permute=False) @ _cached(key, "dec", images.device, ct)
    plain = torch.empty_like(blocks)
    plain[:, torch.as_tensor(key.block_permutation, device=images.device)] = blocks  # undo Eq. (9)
    return _unblock(plain, key).to(images.dtype)


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


# -- models -----------------------------------------------------------------------------------------
def _vit_parts(model: nn.Module) -> tuple[nn.Conv2d, nn.Parameter | None, int, tuple[int, int]]:
    """Patch-embedding conv, position embedding, prefix rows inside it, and the patch grid."""
    patch_embed = getattr(model, "patch_embed", None)
    proj = getattr(patch_embed, "proj", None)
    if not isinstance(proj, nn.Conv2d):
        raise NotAViTError(
            f"{type(model).__name__} has no ViT patch embedding (model.patch_embed.proj Conv2d): "
            f"model encryption needs a timm VisionTransformer (e.g. create_vit('vit_base_patch16_224'))."
        )
    if proj.kernel_size != proj.stride or proj.padding != (0, 0) or proj.groups != 1 or proj.dilation != (1, 1):
        raise NotAViTError(
            f"patch embedding {proj} is not a non-overlapping linear patch projection "
            f"(kernel == stride, no padding): blocks would not map one-to-one onto tokens."
        )
    grid = tuple(getattr(patch_embed, "grid_size", ()))
    if len(grid) != 2:
        raise NotAViTError("model.patch_embed has no grid_size; encrypt a model built for a fixed image size.")
    pos = getattr(model, "pos_embed", None)
    if pos is not None and not isinstance(pos, nn.Parameter):
        raise NotAViTError("model.pos_embed is not a learned Parameter; this ViT variant is not supported.")
    n = grid[0] * grid[1]
    prefix_rows = 0
    if pos is not None:
        if pos.dim() != 3:
            raise NotAViTError(f"pos_embed has shape {tuple(pos.shape)}; expected (1, tokens, D).")
        prefix_rows = pos.shape[1] - n
        num_prefix = getattr(model, "num_prefix_tokens", 0)
        if prefix_rows not in (0, num_prefix):
            raise NotAViTError(
                f"pos_embed has {pos.shape[1]} rows for {n} patches and {num_prefix} prefix tokens: "
                f"cannot tell which rows belong to patches."
            )
    return proj, pos, prefix_rows, grid


def _check_model_key(proj: nn.Conv2d, grid: tuple[int, int], key: SecretKey) -> None:
    p = proj.kernel_size[0]
    if proj.kernel_size != (key.patch_size, key.patch_size):
        raise KeyMismatchError(
            f"the model's patch size is {proj.kernel_size} but the key's block size is {key.patch_size}: "
            f"generate the key with patch_size={p}."
        )
    if proj.in_channels != key.channels:
        raise KeyMismatchError(
            f"the model takes {proj.in_channels} channels but the key was made for {key.channels}: "
            f"generate the key with channels={proj.in_channels}."
        )
    if grid != key.grid_size:
        size = (grid[0] * p, grid[1] * p)
        raise KeyMismatchError(
            f"the model's input is {size[0]}x{size[1]} ({grid[0]}x{grid[1]} patches) but the key was made "
            f"for {key.image_size[0]}x{key.image_size[1]}: generate the key with image_size={size}."
        )


@torch.no_grad()
def encrypt_model(model: nn.Module, key: SecretKey) -> nn.Module:
    """Return an encrypted copy of a timm ViT: E_hat = E_a E (Eq. 3), E_pos_hat = E_b E_pos (Eq. 8)."""
    proj, _, _, grid = _vit_parts(model)
    _check_model_key(proj, grid, key)
    enc = copy.deepcopy(model)
    proj, pos, prefix_rows, _ = _vit_parts(enc)
    w = proj.weight
    d = w.shape[0]
    e_a = torch.as_tensor(key.matrix, dtype=torch.float64)
    # E is W.reshape(D, L).T, so (E_a E).T = W.reshape(D, L) @ E_a.T; computed in float64 on the CPU
    # (one small product; Apple MPS has no float64).
    w_hat = w.detach().cpu().to(torch.float64).reshape(d, -1) @ e_a.T
    w.copy_(w_hat.reshape(w.shape).to(device=w.device, dtype=w.dtype))
    if pos is not None:
        perm = torch.as_tensor(key.block_permutation, device=pos.device)
        patch_rows = pos[:, prefix_rows:].clone()
        # Row i of E_b E_pos is row l_e(i) of E_pos (Eq. 5-8); prefix rows are untouched (row 0 of Eq. 6).
        pos[:, prefix_rows:] = patch_rows[:, perm]
    return enc


@torch.no_grad()
def fold_normalization(
    model: nn.Module,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    scale: float = 1.0,
) -> nn.Module:
    """Copy of `model` that takes raw pixels x and computes model((scale*x - mean)/std) exactly."""
    proj, _, _, _ = _vit_parts(model)
    c = proj.in_channels
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries for a {c}-channel model.")
    out = copy.deepcopy(model)
    proj = out.patch_embed.proj
    device = proj.weight.device
    w = proj.weight.detach().cpu().to(torch.float64)  # float64 on the CPU: MPS has none
    m = torch.tensor(mean, dtype=torch.float64).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, c, 1, 1)
    # W((a x - m)/s) + b = (W a/s) x + (b - W m/s): a linear map absorbs the affine normalization.
    new_w = w * (scale / s)
    shift = (w * (m / s)).sum(dim=(1, 2, 3))
    bias = proj.bias.detach().cpu().to(torch.float64) if proj.bias is not None else torch.zeros_like(shift)
    proj.weight.copy_(new_w.to(device=device, dtype=proj.weight.dtype))
    if proj.bias is None:
        proj.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=proj.weight.dtype, device=device))
    proj.bias.copy_((bias - shift).to(device=device, dtype=proj.bias.dtype))
    return out
