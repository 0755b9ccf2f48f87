"""ViT model encryption, Sec. 3.2 of Nagamori & Kiya (Eq. 3 and 8), and why it cancels image encryption.

Patch embedding (Eq. 3): E_hat = E_a E. In timm, E is ``W.reshape(D, L).T`` for the patch-embedding
convolution weight W (D, C, p, p), so the encrypted weight is ``W.reshape(D, L) @ E_a.T``.
Position embedding (Eq. 8): E_pos_hat = E_b E_pos. Row i of it is row l_e(i) of E_pos; the prefix
rows (class token, and distillation or register tokens where a model has them) stay where they are,
as row 0 of E_b (Eq. 6) says.

Eq. (14): an encrypted block ``x_hat = x E_a^-1`` meets ``E_a E`` and gives ``x E`` back, at the
position E_b moved it to, where the permuted position embedding waits for it. So
``encrypt_model(m, k)(encrypt_images(x, k)) == m(x)`` up to float rounding.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .keys import KeyMismatchError, SecretKey
from .models import Embeddings, embeddings

__all__ = ["encrypt_model", "fold_normalization", "is_encrypted"]

# Set on every encrypted copy (deepcopy keeps it): encrypting again would compose two keys silently.
ENCRYPTED_MARK = "fedvit_encrypted_with"


def is_encrypted(model: nn.Module) -> bool:
    """True if `model` came out of `encrypt_model`."""
    return getattr(model, ENCRYPTED_MARK, None) is not None


def _check_model_key(parts: Embeddings, key: SecretKey) -> None:
    proj, grid = parts.proj, parts.grid
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
    if is_encrypted(model):
        raise ValueError(
            f"this model is already encrypted (key {getattr(model, ENCRYPTED_MARK)}): encrypting it again would "
            f"compose two keys; encrypt the plain model instead."
        )
    _check_model_key(embeddings(model), key)
    encrypted = copy.deepcopy(model)
    proj, pos, prefix_rows, _ = embeddings(encrypted)
    w = proj.weight
    d = w.shape[0]
    e_a = torch.tensor(key.matrix, dtype=torch.float64)
    # (E_a E).T = W.reshape(D, L) @ E_a.T; in float64 on the CPU (one small product; MPS has no float64).
    w_hat = w.detach().cpu().to(torch.float64).reshape(d, -1) @ e_a.T
    w.copy_(w_hat.reshape(w.shape).to(device=w.device, dtype=w.dtype))
    if pos is not None:
        order = torch.tensor(key.block_permutation, device=pos.device)
        patch_rows = pos[:, prefix_rows:].clone()
        # Row i of E_b E_pos is row l_e(i) of E_pos (Eq. 5-8); prefix rows are untouched (row 0 of Eq. 6).
        pos[:, prefix_rows:] = patch_rows[:, order]
    setattr(encrypted, ENCRYPTED_MARK, key.fingerprint)
    return encrypted


@torch.no_grad()
def fold_normalization(
    model: nn.Module,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    scale: float = 1.0,
) -> nn.Module:
    """Copy of `model` that takes raw pixels x and computes model((scale*x - mean)/std) exactly."""
    c = embeddings(model).proj.in_channels
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries for a {c}-channel model.")
    if not all(math.isfinite(v) for v in (*mean, *std, scale)) or any(v == 0 for v in (*std, scale)):
        raise ValueError(f"mean {tuple(mean)}, std {tuple(std)} and scale {scale} must be finite, with std and "
                         f"scale non-zero: the folded weights divide by them.")
    if is_encrypted(model):
        raise ValueError("fold the normalization into the plain model, then encrypt it: normalization acts on plain "
                         "pixels and does not commute with a key that mixes channels.")
    out = copy.deepcopy(model)
    proj = embeddings(out).proj
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
