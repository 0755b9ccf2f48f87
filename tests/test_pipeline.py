"""Eq. (14) end to end on real images: CIFAR-10 JPEG (uint8) -> torchvision preprocessing -> encrypt.

Per-channel normalization does not commute with a block transform that mixes channels, so the
encrypting transform must come after Normalize; doing it the other way round must visibly fail.
`fold_normalization` moves the normalization into the model so uint8 images can be encrypted raw.
"""

from __future__ import annotations

import pytest
import torch
import vit_zoo
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms

from fedvit_utils.encryption import EncryptImages, encrypt_images
from fedvit_utils.keys import KEY_KINDS, generate_key
from fedvit_utils.model_encryption import encrypt_model, fold_normalization
from fedvit_utils.models import data_config


def _cifar_images(root, n=8):
    files = sorted((root / "test").glob("*/*.jpg"))[::997][:n]  # n images across the classes
    return [Image.open(f).convert("RGB") for f in files]


def _pipeline(model, encrypt=None, encrypt_before_normalize=False, cfg=None):
    cfg = cfg or data_config(model)
    steps = [transforms.Resize(cfg["input_size"][1:]), transforms.ToTensor()]
    norm = transforms.Normalize(cfg["mean"], cfg["std"])
    if encrypt is None:
        steps.append(norm)
    elif encrypt_before_normalize:
        steps += [encrypt, norm]
    else:
        steps += [norm, encrypt]
    return transforms.Compose(steps)


def _predict(model, images, pipeline):
    with torch.no_grad():
        return model(torch.stack([pipeline(im) for im in images]))


@pytest.mark.parametrize("config", vit_zoo.config_params(["vit_ti16_224", "small32_p4"]))
@pytest.mark.parametrize("kind", KEY_KINDS)
def test_real_images_through_real_preprocessing(cifar_root, config, kind):
    images = _cifar_images(cifar_root)
    model = vit_zoo.make(config)
    size, p = tuple(model.patch_embed.img_size), model.patch_embed.patch_size[0]
    key = generate_key(size, p, kind=kind, seed=11)
    plain = _predict(model, images, _pipeline(model))
    enc = _predict(encrypt_model(model, key), images, _pipeline(model, EncryptImages(key)))
    assert (plain - enc).abs().max() <= 1e-4
    assert torch.equal(plain.argmax(1), enc.argmax(1))


def test_normalizing_after_encrypting_breaks_the_equivalence(cifar_root):
    images = _cifar_images(cifar_root, n=16)
    model = vit_zoo.make("small32_p4")
    key = generate_key(32, 4, kind="permutation", seed=11)  # mixes channels inside each block
    # ImageNet statistics differ per channel (timm's ViT-Ti config uses 0.5 for all three, for which
    # normalization happens to commute with channel mixing).
    cfg = dict(data_config(model), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    plain = _predict(model, images, _pipeline(model, cfg=cfg))
    wrong = _predict(encrypt_model(model, key), images, _pipeline(model, EncryptImages(key), True, cfg))
    assert (plain - wrong).abs().max() > 1e-2


# Gaussian keys are left out: raw pixels (0..255, with a large common offset that the folded bias
# cancels) times cond(E_a) ~ 400 cost about one more digit than the 1e-4 contract allows in float32.
@pytest.mark.parametrize("kind", ["permutation", "orthogonal"])
def test_folded_normalization_takes_raw_pixels(cifar_root, kind):
    """Clients can send encrypted raw images: uint8 stays uint8 under a permutation key."""
    images = _cifar_images(cifar_root)
    model = vit_zoo.make("small32_p8")
    cfg = dict(data_config(model), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    raw = torch.stack([transforms.PILToTensor()(im) for im in images])  # uint8, 32x32
    plain = _predict(model, images, _pipeline(model, cfg=cfg))
    folded = fold_normalization(model, cfg["mean"], cfg["std"], scale=1 / 255)
    key = generate_key(32, 8, kind=kind, seed=2)
    sent = encrypt_images(raw if kind == "permutation" else raw.float(), key)
    if kind == "permutation":
        assert sent.dtype == torch.uint8
    with torch.no_grad():
        enc = encrypt_model(folded, key)(sent.float())
    assert (plain - enc).abs().max() <= 1e-4
    assert torch.equal(plain.argmax(1), enc.argmax(1))
