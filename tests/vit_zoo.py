"""Tiny timm ViTs for fast CPU tests, with parameters of realistic size.

A freshly initialised timm ViT has position embeddings of std 0.02 and weights of std 0.02: its
attention is nearly uniform and its blocks nearly linear, so the class token sees little more than the
mean of the tokens, and a bug that forgets to permute the position embedding moves the logits by
only ~1e-3. `realistic` gives embeddings, weights and head the magnitudes of a trained model
(fan-in scaled weights, position embeddings of std 0.5), so such a bug moves logits by O(1).
"""

from __future__ import annotations

import pytest
import timm
import torch

SMALL = dict(embed_dim=48, depth=2, num_heads=2, mlp_ratio=2.0)

# name -> (timm model name, kwargs); covers every layout of prefix tokens and position embedding.
CONFIGS: dict[str, tuple[str, dict]] = {
    "vit_ti16_224": ("vit_tiny_patch16_224", {}),
    "small32_p4": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=4, **SMALL)),
    "small32_p8": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, **SMALL)),
    "no_class_token": (
        "vit_tiny_patch16_224",
        dict(img_size=32, patch_size=8, class_token=False, global_pool="avg", **SMALL),
    ),
    "register_tokens": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, reg_tokens=4, **SMALL)),
    "pos_without_prefix": (
        "vit_tiny_patch16_224",
        dict(img_size=32, patch_size=4, reg_tokens=2, no_embed_class=True, **SMALL),
    ),
    "distilled": ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, **SMALL)),
}

SLOW_CONFIGS = {"vit_ti16_224"}  # 224x224 inputs: tens of seconds per test on a CPU


def config_params(configs=None) -> list:
    """CONFIGS names for parametrize, those in SLOW_CONFIGS marked slow (left out by make test-fast)."""
    return [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CONFIGS else c for c in (configs or CONFIGS)]


@torch.no_grad()
def realistic(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give embeddings, prefix tokens and head trained-model magnitudes; returns the model in eval."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name in ("pos_embed", "cls_token", "reg_token", "dist_token"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        elif name.startswith("head") and name.endswith("weight"):
            p.copy_(torch.randn(p.shape, generator=g) * 2.0 / p.shape[1] ** 0.5)
        elif p.dim() >= 2:  # patch embedding and every linear layer in the blocks
            p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    # Centre the logits on a calibration batch: otherwise the (input-independent) class-token path
    # dominates and every input gets the same class, so "predictions unchanged" would prove nothing.
    model.eval()
    h, w = model.patch_embed.img_size
    mean_logits = model(torch.randn(64, 3, h, w, generator=g)).mean(0)
    for name in ("head", "head_dist"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Linear):
            head.bias.sub_(mean_logits)
    return model


def make(config: str, num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    """Build the named test ViT with realistic parameters."""
    name, kwargs = CONFIGS[config]
    torch.manual_seed(seed)
    return realistic(timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs), seed)
