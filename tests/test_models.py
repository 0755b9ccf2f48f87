"""create_vit: local checkpoints load through timm's own path; offline downloads fail fast and clearly."""

from __future__ import annotations

import time

import pytest
import torch

from fedvit_utils import models
from fedvit_utils.models import PretrainedWeightsUnavailable, create_vit

SMALL = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=2)


def test_local_checkpoint_loads_every_weight(tmp_path):
    src = create_vit("vit_tiny_patch16_224", num_classes=10, **SMALL)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    dst = create_vit("vit_tiny_patch16_224", num_classes=10, checkpoint_path=path, **SMALL)
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_local_checkpoint_with_another_head_keeps_the_body(tmp_path):
    """Like ImageNet weights fine-tuned to CIFAR-10: the body loads, the classifier is new."""
    src = create_vit("vit_tiny_patch16_224", num_classes=1000, **SMALL)
    path = tmp_path / "in1k.pth"
    torch.save(src.state_dict(), path)
    dst = create_vit("vit_tiny_patch16_224", num_classes=10, checkpoint_path=path, **SMALL)
    assert dst.head.weight.shape == (10, 48)
    assert torch.equal(src.pos_embed, dst.pos_embed)
    assert torch.equal(src.patch_embed.proj.weight, dst.patch_embed.proj.weight)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_vit("vit_tiny_patch16_224", num_classes=10, checkpoint_path=tmp_path / "nope.pth")


def test_offline_download_fails_fast_with_instructions(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(PretrainedWeightsUnavailable, match="checkpoint_path="):
        create_vit("vit_base_patch16_224", num_classes=10, pretrained=True)


def test_real_probe_is_quick_here(monkeypatch):
    """Without internet the probe answers in seconds, not after the hub client's ~50 s of retries."""
    if models.hub_reachable():
        pytest.skip("the hub is reachable from this machine; the offline path is not exercised")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable):
        create_vit("vit_tiny_patch16_224", num_classes=10, pretrained=True)
    assert time.monotonic() - start < 10


def test_non_vit_is_refused():
    with pytest.raises(TypeError, match="not a ViT"):
        create_vit("resnet10t", num_classes=10)
