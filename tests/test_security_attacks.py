"""Attacks on the scheme (fedvit_utils.security), each on a small case whose right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
import vit_zoo
from matplotlib.figure import Figure

from fedvit_utils.data import Preprocess, photographs, sample_images, to_unit_float
from fedvit_utils.encryption import decrypt_images, encrypt_images, merge_blocks, split_blocks
from fedvit_utils.evaluation import exact_predictor
from fedvit_utils.keys import KEY_KINDS, SecretKey, generate_key
from fedvit_utils.model_encryption import encrypt_model
from fedvit_utils.models import input_size
from fedvit_utils.security.jigsaw import jigsaw_report, solve_jigsaw, summarize_jigsaw
from fedvit_utils.security.key_extraction import (
    extract_key_from_model,
    key_extraction_report,
    models_to_study,
    summarize_key_extraction,
    vit_of_width,
)
from fedvit_utils.security.known_plaintext import fit_block_transform, known_plaintext_attack, match_positions
from fedvit_utils.security.known_plaintext_draws import known_plaintext_trials, summarize_known_plaintext
from fedvit_utils.security.measures import Normalization, RecoveredKey, blocks_of, decrypt_recovered, key_error
from fedvit_utils.security.position_embedding import (
    jigsaw_after_extraction,
    patch_rows_distinct,
    position_embedding_conditions,
    position_variant,
    summarize_jigsaw_after_extraction,
    summarize_position_conditions,
)
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
    # L = 192, N = 16: 13 pairs give 208 > L known blocks, which pin down any invertible E_a.
    key = _key(kind)
    x = _noise(13)
    y = encrypt_images(x, key)
    rec = known_plaintext_attack(x, y, 8, kind)
    assert np.array_equal(rec.block_permutation, key.block_permutation)
    assert key_error(rec.matrix, key.matrix) < 1e-8
    assert key_error(rec.inverse_matrix, key.inverse_matrix) < 1e-8
    unseen = _noise(2, seed=9)
    assert torch.allclose(decrypt_recovered(encrypt_images(unseen, key), rec), unseen, atol=1e-8)


def test_known_plaintext_at_L_blocks_only_orthogonality_pins_the_key():
    # 12 pairs = 192 = L independent blocks: every matching fits some invertible E_a exactly, so a
    # Gaussian key is not determined; an orthogonal one is, by Gram matching and Procrustes.
    x = _noise(12)
    ortho, gauss = _key("orthogonal"), _key("gaussian")
    rec = known_plaintext_attack(x, encrypt_images(x, ortho), 8, "orthogonal")
    assert rec.method == "gram + procrustes"
    assert np.array_equal(rec.block_permutation, ortho.block_permutation)
    assert key_error(rec.matrix, ortho.matrix) < 1e-8
    under = known_plaintext_attack(x, encrypt_images(x, gauss), 8, "gaussian")
    assert key_error(under.matrix, gauss.matrix) > 0.5


def test_gram_matching_places_blocks_from_one_pair_where_the_projector_cannot():
    key = _key("orthogonal")
    x = _noise(1)
    a, b = blocks_of(x, 8), blocks_of(encrypt_images(x, key), 8)
    assert np.array_equal(match_positions(a, b, "gram"), key.block_permutation)
    # 16 known blocks < L: the column space of any 16 independent blocks is the same, no information.
    assert np.array_equal(match_positions(a, b, "projector"), np.arange(16))


def test_below_L_least_squares_beats_procrustes_on_unseen_images():
    # Procrustes puts an arbitrary rotation on directions no known block spans; least squares leaves them
    # at zero, which costs half as much on average on images independent of the known ones.
    key = _key("orthogonal")
    x, unseen = _noise(4), _noise(8, seed=5)
    enc = encrypt_images(unseen, key)
    err = {}
    for fit in ("lstsq", "procrustes"):
        rec = known_plaintext_attack(x, encrypt_images(x, key), 8, "orthogonal", match="gram", fit=fit)
        assert np.array_equal(rec.block_permutation, key.block_permutation)
        err[fit] = float(((decrypt_recovered(enc, rec, clip=None) - unseen) ** 2).mean())
    assert err["lstsq"] < 0.75 * err["procrustes"]
    with pytest.raises(ValueError, match="unknown fit"):
        fit_block_transform(np.eye(3), np.eye(3), "magic")
    with pytest.raises(ValueError, match="unknown matching"):
        match_positions(blocks_of(x, 8), blocks_of(x, 8), "magic")


def test_known_plaintext_permutation_kind_from_one_image():
    key = _key("permutation")
    x = _noise(1)
    rec = known_plaintext_attack(x, encrypt_images(x, key), 8, "permutation")
    assert np.array_equal(rec.block_permutation, key.block_permutation)
    assert np.array_equal(rec.matrix, key.matrix)


def test_known_plaintext_permutation_needs_distinguishable_channels():
    # A greyscale image (R = G = B) cannot tell a pixel's channels apart: one known pair is not enough.
    key = _key("permutation")
    grey = _noise(1)[:, :1].expand(1, 3, 32, 32).contiguous()
    rec = known_plaintext_attack(grey, encrypt_images(grey, key), 8, "permutation")
    assert np.array_equal(rec.block_permutation, key.block_permutation)  # value multisets still place blocks
    assert not np.array_equal(rec.matrix, key.matrix)


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


def test_known_plaintext_draws_on_cifar(cifar):
    norm = Normalization((0.5,) * 3, (0.5,) * 3)
    trials = known_plaintext_trials(cifar, 8, "CIFAR-10 test (JPEG q75)", ks=[1, 13], draws=2, n_unseen=4,
                                    kinds=("permutation", "orthogonal", "gaussian"), norm=norm)
    assert len(trials) == 2 * 2 * 4  # draws x ks x (1 + 2 + 1 methods)
    assert trials.groupby(["kind", "draw"])["key_fingerprint"].nunique().eq(1).all()  # one key per draw
    assert trials.groupby(["kind", "k"])["key_fingerprint"].nunique().eq(2).all()  # a fresh key per draw
    s = summarize_known_plaintext(trials).set_index(["kind", "method", "k"])
    assert (s["draws"] == 2).all() and {"exact", "psnr_mean", "psnr_worst_image", "known_cond_median"} <= set(s.columns)
    # One pair of a colour image gives a permutation key; 13 pairs (208 > L blocks) a dense one.
    assert s.loc[("permutation", "multiset + pixels", 1), "exact"] == "2/2"
    for method in ("gram + lstsq", "gram + procrustes"):
        assert s.loc[("orthogonal", method, 13), "exact"] == "2/2"
        # One pair: blocks placed, but E_a only on the 16 directions the known blocks span.
        assert s.loc[("orthogonal", method, 1), "all_blocks_placed"] == 2
        assert 12 < s.loc[("orthogonal", method, 1), "psnr_mean"] < 40
    assert s.loc[("orthogonal", "gram + lstsq", 1), "psnr_mean"] > s.loc[("orthogonal", "gram + procrustes", 1),
                                                                            "psnr_mean"]
    # A Gaussian E_a fits any matching of 16 blocks: positions cannot be told apart from one pair.
    assert s.loc[("gaussian", "projector + lstsq", 1), "all_blocks_placed"] == 0
    assert s.loc[("gaussian", "projector + lstsq", 1), "psnr_mean"] < 15
    assert isinstance(known_plaintext_figure(summarize_known_plaintext(trials)), Figure)
    with pytest.raises(ValueError, match="n_unseen"):
        known_plaintext_trials(cifar, 8, "c", ks=[len(cifar)], draws=1, n_unseen=1)


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


def _u8(x):
    return (x * 255).round().to(torch.uint8)


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_key_extraction_exact_when_D_at_least_L(kind):
    model = _vit(4, 48)  # D = L = 48
    key = _key(kind, p=4)
    rec = extract_key_from_model(model, encrypt_model(model, key), kind)
    assert np.array_equal(rec.block_permutation, key.block_permutation)
    assert key_error(rec.matrix, key.matrix) < 1e-4  # float32 weights
    x = _noise(2)
    assert torch.allclose(decrypt_recovered(encrypt_images(x, key), rec), x, atol=1e-3)


def test_key_extraction_when_D_below_L(cifar):
    model = _vit(8, 48)  # D = 48 < L = 192
    prep = Preprocess((32, 32), (0.5,) * 3, (0.5,) * 3)
    detail = key_extraction_report({"ViT D=48": model}, _u8(cifar[:6]), prep, "CIFAR-10 test", n_keys=2,
                                   prior=_u8(cifar[6:]))
    rep = summarize_key_extraction(detail).set_index("kind")
    assert (rep["all_blocks_placed"] == 2).all() and (rep["rank_W"] == 48).all() and rep["W_columns_distinct"].all()
    # A permutation key only permutes the columns of W: read off exactly although D < L.
    assert rep.loc["permutation", "exact"] == "2/2" and rep.loc["permutation", "images_identical"] == 12
    for kind in ("orthogonal", "gaussian"):
        assert rep.loc[kind, "exact_keys"] == 0
        # The weights give each block's projection on W's 48-dim row space; block statistics of other
        # images fill in much of the rest.
        assert rep.loc[kind, "psnr_with_block_prior_mean"] > rep.loc[kind, "psnr_mean"] + 5
    assert np.isnan(rep.loc["permutation", "psnr_with_block_prior_mean"])
    # Only E_a on the D-dim row space of W is determined; for an orthogonal E_a the error is sqrt(1 - D/L).
    assert rep.loc["orthogonal", "key_error_max"] == pytest.approx(math.sqrt(1 - 48 / 192), abs=1e-3)


def test_key_extraction_at_the_model_input_size():
    # A model built for 64x64 takes 32x32 images resized by its preprocessing; the report works on those.
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=64, patch_size=16,
                              embed_dim=64, depth=1, num_heads=2).eval()
    fresh = vit_of_width(model, 32)
    assert input_size(fresh) == (64, 64) and fresh.patch_embed.proj.out_channels == 32
    rep = key_extraction_report(models_to_study(model, [32]), _u8(_noise(2)), Preprocess.for_model(model), "noise",
                                kinds=("permutation",), n_keys=2)
    assert set(rep["image_size"]) == {"64x64"} and set(rep["model"]) == {"trained (D=64)", "fresh (D=32)"}
    assert rep["exact"].all()
    with pytest.raises(ValueError, match="preprocessing"):
        key_extraction_report({"m": model}, _u8(_noise(1)), Preprocess((32, 32), (0.5,), (0.5,)), "noise")


def test_key_extraction_rejects_unrelated_models():
    with pytest.raises(ValueError, match="differ in patch embedding"):
        extract_key_from_model(_vit(4, 48), _vit(8, 48), "orthogonal")


# -- position embeddings: when they give the block order away ------------------------------------------
@torch.no_grad()
def _swap_blocks(x, a, b, p=8):
    blocks = split_blocks(x, p).clone()
    blocks[:, [a, b]] = blocks[:, [b, a]]
    return merge_blocks(blocks, tuple(x.shape[-2:]), p)


@pytest.fixture(scope="module")
def vit_192():
    """D = L = 192 (32x32, patch 8), so E_a comes off the weights exactly; position rows of trained magnitude."""
    torch.manual_seed(0)
    return vit_zoo.realistic(timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8,
                                               embed_dim=192, depth=1, num_heads=2))


@torch.no_grad()
def test_equal_or_absent_position_rows_hide_the_block_order_but_keep_eq14(cifar, vit_192):
    model = vit_192
    x = cifar[:8].float()
    equal = position_variant(model, "two equal patch rows", rows=(0, 1))
    assert patch_rows_distinct(model) and not patch_rows_distinct(equal)
    assert patch_rows_distinct(position_variant(model, "no position embedding")) is None
    # Equal rows: the model cannot tell those two positions apart, so swapping their blocks changes nothing;
    # it does change the unmodified model's output.
    assert torch.allclose(equal(x), equal(_swap_blocks(x, 0, 1)), atol=1e-5)
    assert not torch.allclose(model(x), model(_swap_blocks(x, 0, 1)), atol=1e-3)
    blocks_moved = SecretKey("permutation", (32, 32), 8, 3, _key("permutation").block_permutation, np.eye(192),
                             np.arange(192))  # E_b alone
    for variant in ("all patch rows zero", "no position embedding"):
        m = position_variant(model, variant)
        # Without position information the model does not depend on the block order at all.
        assert torch.allclose(m(x), m(encrypt_images(x, blocks_moved)), atol=1e-5), variant
    prep = Preprocess((32, 32), (0.5,) * 3, (0.5,) * 3)
    detail = position_embedding_conditions(model, _u8(cifar[:8]), prep, exact_predictor(prep, 64, torch.device("cpu")),
                                           "CIFAR-10 test", kinds=("permutation", "orthogonal"), n_keys=2, n_check=8)
    s = summarize_position_conditions(detail).set_index(["variant", "kind"])
    assert (s["eq14_max_abs_logit_diff"] < 1e-4).all()  # Eq. 14 holds in every condition
    for kind in ("permutation", "orthogonal"):
        assert s.loc[("as given", kind), "exact"] == "2/2"
        # Two equal rows: at most those two blocks are swapped.
        assert s.loc[("two equal patch rows", kind), "blocks_placed_mean"] >= 14 / 16
        for variant in ("all patch rows zero", "no position embedding"):
            assert s.loc[(variant, kind), "exact_keys"] == 0
            assert s.loc[(variant, kind), "blocks_placed_mean"] < 0.25  # the identity guess
    with pytest.raises(ValueError, match="unknown variant"):
        position_variant(model, "shuffled")


def test_jigsaw_after_extraction_recovers_the_order_a_model_without_positions_hides(cifar, vit_192):
    # E_a from the weights, E_b from several ciphertexts of the same client, which share it.
    prep = Preprocess((32, 32), (0.5,) * 3, (0.5,) * 3)
    detail = jigsaw_after_extraction(vit_192, _u8(cifar), prep, "CIFAR-10 test", ciphertexts=[1, 10], n_unseen=4,
                                     kinds=("orthogonal",), n_keys=2)
    s = summarize_jigsaw_after_extraction(detail).set_index("ciphertexts")
    assert s.loc[10, "exact"] == "2/2"
    assert s.loc[10, "blocks_placed_mean"] > s.loc[1, "blocks_placed_mean"]


# -- 6. ciphertext-only jigsaw ----------------------------------------------------------------------
def test_jigsaw_far_above_chance_on_photographs():
    rep = jigsaw_report(to_unit_float(photographs()), 16, "skimage photographs")
    assert (rep["N"] == 196).all()
    assert rep["neighbour_accuracy"].mean() > 0.7  # chance is about 1/196
    assert rep["direct_accuracy"].max() > 0.9
    s = summarize_jigsaw(rep).iloc[0]
    assert s["images"] == 3 and s["direct_accuracy_mean"] == pytest.approx(rep["direct_accuracy"].mean())
    assert s["images_solved"] == (rep["direct_accuracy"] == 1.0).sum()


def test_jigsaw_identity_and_bad_input():
    ph = to_unit_float(photographs(size=64))[1]
    perm = solve_jigsaw(ph, 16)
    assert sorted(perm.tolist()) == list(range(16))
    with pytest.raises(ValueError, match="one image"):
        solve_jigsaw(ph[None], 16)
    with pytest.raises(ValueError, match="not divisible"):
        solve_jigsaw(ph, 5)
