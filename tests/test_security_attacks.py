"""Attacks on the scheme (fedvit_utils.security), each on a small case whose right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from matplotlib.figure import Figure

from fedvit_utils.data import photographs, sample_images, to_unit_float
from fedvit_utils.encryption import decrypt_images, encrypt_images
from fedvit_utils.keys import KEY_KINDS, generate_key
from fedvit_utils.model_encryption import encrypt_model
from fedvit_utils.security.jigsaw import jigsaw_report, solve_jigsaw
from fedvit_utils.security.key_extraction import extract_key_from_model, key_extraction_report
from fedvit_utils.security.known_plaintext import known_plaintext_attack, known_plaintext_curve
from fedvit_utils.security.measures import RecoveredKey, decrypt_recovered, key_error
from fedvit_utils.study.figures import known_plaintext_figure


@pytest.fixture(scope="module")
def cifar(cifar_test):
    return to_unit_float(sample_images(cifar_test, 20, seed=0).images)


def _key(kind, size=32, p=8, seed=3):
    # Seeds chosen so gaussian draws pass the default condition-number check.
    return generate_key(size, p, 3, kind, seed)


def _noise(n, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_recovered_true_key_decrypts_like_the_library():
    # Pins the block and flatten conventions of the attacks to those of fedvit_utils.encryption.
    for kind in KEY_KINDS:
        key = _key(kind)
        x = _noise(3)
        y = encrypt_images(x, key)
        rec = RecoveredKey(key.block_permutation, key.matrix, key.inverse_matrix, 8, "true key")
        assert torch.allclose(decrypt_recovered(y, rec, clip=None), decrypt_images(y, key), atol=1e-10)
        assert "matrix" not in repr(rec) and str(key.matrix[0, 0]) not in repr(rec)


# -- 4. known plaintext -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["orthogonal", "gaussian"])
def test_known_plaintext_exact_once_blocks_exceed_L(kind):
    # L = 192, N = 16: 12 pairs give 192 blocks (every matching fits some E_a), 13 pin it down.
    key = _key(kind)
    x = _noise(13)
    y = encrypt_images(x, key)
    rec = known_plaintext_attack(x, y, 8, kind)
    assert np.array_equal(rec.block_permutation, key.block_permutation)
    assert key_error(rec.matrix, key.matrix) < 1e-8
    assert key_error(rec.inverse_matrix, key.inverse_matrix) < 1e-8
    unseen = _noise(2, seed=9)
    assert torch.allclose(decrypt_recovered(encrypt_images(unseen, key), rec), unseen, atol=1e-8)
    under = known_plaintext_attack(x[:12], y[:12], 8, kind)
    assert key_error(under.matrix, key.matrix) > 0.5


def test_known_plaintext_permutation_kind_from_one_image():
    key = _key("permutation")
    x = _noise(1)
    rec = known_plaintext_attack(x, encrypt_images(x, key), 8, "permutation")
    assert np.array_equal(rec.block_permutation, key.block_permutation)
    assert np.array_equal(rec.matrix, key.matrix)


def test_known_plaintext_k0_is_chance():
    key = _key("orthogonal")
    x = _noise(4)
    y = encrypt_images(x, key)
    rec = known_plaintext_attack(x[:0], y[:0], 8, "orthogonal")
    assert np.mean(rec.block_permutation == key.block_permutation) <= 0.25
    assert key_error(rec.matrix, key.matrix) > 1.0
    assert not torch.allclose(decrypt_recovered(y, rec), x, atol=0.1)


def test_known_plaintext_bad_input():
    x = _noise(2)
    with pytest.raises(ValueError, match="differ in shape"):
        known_plaintext_attack(x, x[:1], 8, "orthogonal")
    with pytest.raises(ValueError, match="unknown key kind"):
        known_plaintext_attack(x, x, 8, "rot13")
    with pytest.raises(ValueError, match="not divisible"):
        known_plaintext_attack(x, x, 5, "orthogonal")


def test_known_plaintext_curve_on_cifar(cifar):
    curve = known_plaintext_curve(cifar, 8, "CIFAR-10 test (JPEG q75)", ks=[0, 8, 13], n_unseen=4,
                                  kinds=("orthogonal", "permutation"))
    assert {"data", "image_size", "patch_size", "kind", "k", "block_accuracy", "key_error", "decrypt_psnr",
            "exact"} <= set(curve.columns)
    c = curve.set_index(["kind", "k"])
    assert c.loc[("orthogonal", 0), "block_accuracy"] <= 0.25
    assert c.loc[("orthogonal", 0), "decrypt_psnr"] < 15
    # 8 * 16 = 128 known blocks < L = 192: positions are not identifiable, decryption fails.
    assert not c.loc[("orthogonal", 8), "exact"] and c.loc[("orthogonal", 8), "decrypt_psnr"] < 20
    assert c.loc[("orthogonal", 13), "exact"] and c.loc[("orthogonal", 13), "decrypt_psnr"] > 60
    # Value multisets identify blocks in JPEG images too; a single known image would do.
    assert c.loc[("permutation", 8), "exact"]
    assert isinstance(known_plaintext_figure(curve), Figure)


def test_known_plaintext_patch4_needs_one_image(cifar):
    # L = 48 < N = 64: one known image already over-determines E_a.
    key = _key("gaussian", p=4, seed=1)
    rec = known_plaintext_attack(cifar[:1], encrypt_images(cifar[:1].double(), key), 4, "gaussian")
    assert np.array_equal(rec.block_permutation, key.block_permutation)
    assert key_error(rec.matrix, key.matrix) < 1e-6


# -- 5. key extraction from weights -----------------------------------------------------------------
def _vit(patch_size, dim, seed=0):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32,
                             patch_size=patch_size, embed_dim=dim, depth=1, num_heads=2).eval()


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_key_extraction_exact_when_D_at_least_L(kind):
    model = _vit(4, 48)  # D = L = 48
    key = _key(kind, p=4)
    rec = extract_key_from_model(model, encrypt_model(model, key), kind)
    assert np.array_equal(rec.block_permutation, key.block_permutation)
    assert key_error(rec.matrix, key.matrix) < 1e-4  # float32 weights
    x = _noise(2)
    assert torch.allclose(decrypt_recovered(encrypt_images(x, key), rec), x, atol=1e-3)


def test_key_extraction_when_D_below_L():
    model = _vit(8, 48)  # D = 48 < L = 192
    rep = key_extraction_report(model, _noise(2).float(), "uniform noise", "ViT D=48 p=8").set_index("kind")
    assert (rep["block_accuracy"] == 1.0).all() and (rep["rank_W"] == 48).all()
    assert rep.loc["permutation", "exact"]  # columns of W are only permuted
    for kind in ("orthogonal", "gaussian"):
        assert not rep.loc[kind, "exact"]
    # Only E_a on the D-dim row space of W is determined; for an orthogonal E_a the error is sqrt(1 - D/L).
    assert rep.loc["orthogonal", "key_error"] == pytest.approx(math.sqrt(1 - 48 / 192), abs=1e-3)


def test_key_extraction_rejects_unrelated_models():
    with pytest.raises(ValueError, match="differ in patch embedding"):
        extract_key_from_model(_vit(4, 48), _vit(8, 48), "orthogonal")
    model = _vit(4, 48)
    with pytest.raises(ValueError, match="resize"):
        key_extraction_report(model, _noise(1, size=64).float(), "noise", "m")


# -- 6. ciphertext-only jigsaw ----------------------------------------------------------------------
def test_jigsaw_far_above_chance_on_photographs():
    rep = jigsaw_report(to_unit_float(photographs()), 16, "skimage photographs")
    assert (rep["N"] == 196).all()
    assert rep["neighbour_accuracy"].mean() > 0.7  # chance is about 1/196
    assert rep["direct_accuracy"].max() > 0.9


def test_jigsaw_identity_and_bad_input():
    ph = to_unit_float(photographs(size=64))[1]
    perm = solve_jigsaw(ph, 16)
    assert sorted(perm.tolist()) == list(range(16))
    with pytest.raises(ValueError, match="one image"):
        solve_jigsaw(ph[None], 16)
    with pytest.raises(ValueError, match="not divisible"):
        solve_jigsaw(ph, 5)
