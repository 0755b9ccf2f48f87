"""ViT construction over timm (Dosovitskiy et al., the paper's [10]) with an offline-safe weight path.

Pretrained weights come through timm's normal loading (Hugging Face hub) on machines with internet.
Offline, pass ``checkpoint_path`` (a .pth/.bin/.safetensors state dict, or an original .npz): timm
loads it through the same code path, adapting the classifier and position embeddings.
Without internet and without a checkpoint we fail within seconds, instead of waiting out the hub
client's retries, and say what to do.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import timm
import timm.data
import torch
from torch import nn

if TYPE_CHECKING:  # annotations only: profiles must load without torch, models needs it
    from .profiles import Profile

HUB_HOST = "huggingface.co"


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights cannot be fetched here and no local checkpoint was given."""


class NotAViTError(TypeError):
    """The model is not a timm VisionTransformer with a linear, non-overlapping patch embedding."""


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """True if a TCP connection to the weights hub opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_message(name: str) -> str:
    return (
        f"cannot download pretrained weights for {name!r}: {HUB_HOST} is unreachable (no internet?). "
        f"On a machine with internet run\n"
        f"    python -c \"import timm, torch; m = timm.create_model('{name}', pretrained=True); "
        f"torch.save(m.state_dict(), '{name}.pth')\"\n"
        f"copy the file here and pass checkpoint_path='{name}.pth' (or set HF_HUB_OFFLINE=1 if the weights "
        f"are already in the Hugging Face cache), or use pretrained=False."
    )


def require_pretrained_weights(name: str) -> None:
    """Fail fast, with what to do, when `name`'s pretrained weights cannot be downloaded from here."""
    if os.environ.get("HF_HUB_OFFLINE") != "1" and not hub_reachable():
        raise PretrainedWeightsUnavailable(_offline_message(name))


def create_vit(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    img_size: int | tuple[int, int] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs,
) -> nn.Module:
    """Create a timm ViT with `num_classes` outputs; weights from the hub or a local checkpoint."""
    if img_size is not None:
        kwargs["img_size"] = img_size
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint_path {path} does not exist; give the file saved from {name!r}.")
        # timm's own loader reads the file, so filtering and resizing match a hub download exactly.
        # It drops the classifier when num_classes differs from the *config's* class count, so tell it
        # the file's real count: a fine-tuned 10-class checkpoint then keeps its head.
        overlay = dict(file=str(path), hf_hub_id=None, url=None)
        file_classes = _checkpoint_num_classes(path, name)
        if file_classes is not None:
            overlay["num_classes"] = file_classes
        kwargs["pretrained_cfg_overlay"] = overlay
        pretrained = True
    elif pretrained:
        require_pretrained_weights(name)
    model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    if not hasattr(model, "patch_embed") or not hasattr(model, "pos_embed"):
        raise TypeError(f"{name!r} is not a ViT with patch and position embeddings; pick a vit_* / deit_* model.")
    return model


def _checkpoint_num_classes(path: Path, name: str) -> int | None:
    """Rows of the classifier weight stored in a state-dict file (None if not a plain state dict)."""
    if path.suffix == ".npz":  # original big_vision/JAX files: timm's custom loader handles the head
        return None
    classifier = timm.models.get_pretrained_cfg_value(name, "classifier") or "head"
    state = timm.models.load_state_dict(str(path))
    weight = state.get(f"{classifier}.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else None


def data_config(model: nn.Module) -> dict:
    """timm's preprocessing config (mean, std, interpolation) with the input size the model was built for."""
    cfg = timm.data.resolve_data_config({}, model=model)
    # resolve_data_config reads the *pretrained* config (224 for vit_*_224) even when the model was
    # created with another img_size; the patch embedding knows the real one.
    cfg["input_size"] = (model.patch_embed.proj.in_channels, *input_size(model))
    return cfg


def input_size(model: nn.Module) -> tuple[int, int]:
    """Image (height, width) the ViT was built for."""
    return tuple(model.patch_embed.img_size)


def patch_size(model: nn.Module) -> int:
    """Side of the ViT's square patches (the encryption block size)."""
    return int(model.patch_embed.patch_size[0])


class Embeddings(NamedTuple):
    """The two embeddings the scheme encrypts (Eq. 1): patch embedding E and position embedding E_pos."""

    proj: nn.Conv2d  # patch embedding: E = proj.weight.reshape(D, L).T (Eq. 1, 3)
    pos_embed: nn.Parameter | None  # (1, prefix_rows + N, D): E_pos (Eq. 1, 8)
    prefix_rows: int  # rows of pos_embed for prefix tokens (class, distillation, registers)
    grid: tuple[int, int]  # patches per column and per row (N = grid[0] * grid[1])


def embeddings(model: nn.Module) -> Embeddings:
    """The patch and position embeddings of a timm ViT, checked to have the layout Eq. 1 assumes."""
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
    return Embeddings(proj, pos, prefix_rows, grid)


def profile_geometry(profile: Profile) -> tuple[tuple[int, int], int]:
    """(input size, patch size) of the profile's ViT, read off a weightless copy (no download, no memory)."""
    try:
        with torch.device("meta"):
            model = timm.create_model(profile.model, pretrained=False, num_classes=10, **profile.model_kwargs)
    except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
        raise ValueError(f"profile {profile.name!r}: cannot build model {profile.model!r} with model_kwargs "
                         f"{profile.model_kwargs}: {exc}") from exc
    if not hasattr(model, "patch_embed") or not hasattr(model, "pos_embed"):
        raise ValueError(f"profile {profile.name!r}: {profile.model!r} is not a ViT with patch and position "
                         f"embeddings; pick a vit_* / deit_* model.")
    return input_size(model), patch_size(model)


def build_model(profile: Profile, num_classes: int) -> nn.Module:
    """The profile's ViT, initialised from `training_seed` (pretrained weights where the profile asks)."""
    torch.manual_seed(profile.training_seed)
    return create_vit(profile.model, num_classes, pretrained=profile.pretrained,
                      checkpoint_path=profile.checkpoint_path, **profile.model_kwargs)
