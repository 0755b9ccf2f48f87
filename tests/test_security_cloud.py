"""The curious cloud's attacks on small synthetic data whose answer is known (security.cloud_*)."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from timm.models.vision_transformer import VisionTransformer

from fedvit_utils.data import Preprocess
from fedvit_utils.encryption import encrypt_images
from fedvit_utils.keys import generate_key
from fedvit_utils.model_encryption import encrypt_model
from fedvit_utils.models import embeddings
from fedvit_utils.security import cloud_study, cloud_view, jigsaw
from fedvit_utils.security.cloud_relearn import relearn_embeddings
from fedvit_utils.security.measures import blocks_of, images_of, key_error


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _source(images: int, blocks: int, rng: np.random.Generator, shared: np.ndarray, own: np.ndarray,
            basis: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(images, blocks, L) blocks: a per-image component (variance `shared`) plus a per-block one (`own`),
    in the coordinates `basis`, skewed (exponential) so that signs are visible beyond the mean."""
    per_image = (rng.exponential(size=(images, 1, len(shared))) - 1) * np.sqrt(shared)
    per_block = (rng.exponential(size=(images, blocks, len(own))) - 1) * np.sqrt(own)
    return (per_image + per_block) @ basis + mean


def test_covariance_alignment_recovers_an_orthogonal_key():
    rng = np.random.default_rng(0)
    # Distinct covariance eigenvalues and a non-zero mean: the eigenvectors, with signs, determine E_a.
    length = 10
    basis, variances = _orthogonal(length, rng), 1.6 ** np.arange(length)
    mean = rng.normal(size=length)
    public = _source(4000, 8, rng, np.zeros(length), variances, basis, mean)
    plain = _source(4000, 8, rng, np.zeros(length), variances, basis, mean)
    e_a = _orthogonal(length, rng)
    cipher = plain @ e_a.T  # y = x E_a^-1 and E_a^-1 = E_a^T
    found = cloud_view.align_covariance(public, cipher).block_map(length)
    assert key_error(found.matrix, e_a) < 0.05
    assert np.abs(found.apply(cipher) - plain).mean() < 0.1 * np.abs(plain - mean).mean()
    # Fewer components: the rest are set to their mean, so the error is the variance left out.
    top = cloud_view.align_covariance(public, cipher).block_map(3)
    assert np.linalg.matrix_rank(top.matrix) == 3


def test_whitening_and_cross_block_covariance_recover_a_dense_key():
    rng = np.random.default_rng(1)
    # Any invertible E_a: whitening leaves a rotation, which the whitened cross-block covariance fixes
    # when each component's share of per-image variance differs.
    length = 8
    basis = _orthogonal(length, rng)
    shared, own = np.linspace(0.2, 3.0, length), np.linspace(3.0, 0.5, length)
    mean = rng.normal(size=length)
    public = _source(6000, 8, rng, shared, own, basis, mean)
    plain = _source(6000, 8, rng, shared, own, basis, mean)
    e_a = rng.normal(size=(length, length)) + 3 * np.eye(length)
    cipher = plain @ np.linalg.inv(e_a)
    found = cloud_view.align_generalized(public, cipher, "cross-block").block_map(length)
    assert key_error(found.matrix, e_a) < 0.1
    with pytest.raises(ValueError, match="unknown statistic"):
        cloud_view.align_generalized(public, cipher, "third-order")


def _smooth_images(n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Smooth random images whose channels differ in blur and whose brightness falls from top-left."""
    noise = rng.standard_normal((n, size, size))
    base = gaussian_filter(noise, sigma=(0, 2.0, 2.0))
    other = gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 3.0, 3.0))
    i, j = np.arange(size)[:, None], np.arange(size)[None, :]
    ramp = (i + 0.3 * j + 0.02 * i * j) / size  # distinct block means: the block order is identifiable
    channels = [base + ramp, gaussian_filter(base, sigma=(0, 1, 1)) + 0.5 * other - ramp, 0.5 * base + other]
    return torch.from_numpy(np.stack(channels, 1))


def test_pixel_correlations_recover_a_permutation_key_and_the_block_order():
    rng = np.random.default_rng(2)
    size, p = 16, 4
    key = generate_key(size, p, 3, "permutation", seed=3)
    public = blocks_of(_smooth_images(3000, size, rng), p)
    plain = _smooth_images(3000, size, rng)
    cipher = blocks_of(encrypt_images(plain.float(), key), p)
    found, order = cloud_study.statistics_attack("permutation", public, cipher, "pixel correlations", 3 * p * p, p, 3)
    np.testing.assert_array_equal(order, key.block_permutation)
    np.testing.assert_array_equal(found.matrix, key.matrix)  # every pixel (and channel) back in its place


def test_order_blocks_reads_the_order_off_position_means():
    rng = np.random.default_rng(3)
    blocks = rng.normal(size=(500, 6, 5)) * 0.3 + np.arange(6)[None, :, None] * np.array([1, -1, 2, 0, 1])
    perm = rng.permutation(6)
    order, _ = cloud_view.order_blocks(blocks, blocks[:, perm])
    np.testing.assert_array_equal(order, perm)


def test_relearning_touches_only_the_encrypted_embeddings():
    model = _tiny_vit()
    images, labels = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
    relearned = relearn_embeddings(model, images, labels, epochs=1, batch_size=8)
    before, after = dict(model.named_parameters()), dict(relearned.named_parameters())
    pos = embeddings(model).pos_embed.detach()
    for name, value in before.items():
        if name == "patch_embed.proj.weight":
            assert not torch.equal(value, after[name])
        elif name == "pos_embed":
            prefix = embeddings(model).prefix_rows
            assert torch.equal(pos[:, :prefix], after[name][:, :prefix])  # the class token's row is plain
            assert not torch.equal(pos[:, prefix:], after[name][:, prefix:])
        else:
            assert torch.equal(value, after[name]), name
    with pytest.raises(ValueError, match="one label per public image"):
        relearn_embeddings(model, images, labels[:3])


def _tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(img_size=8, patch_size=2, embed_dim=16, depth=1, num_heads=1, num_classes=10).eval()


def test_key_refresh_maps_ciphertexts_across_keys_when_the_width_covers_the_block():
    # D = 16 >= L = 12: two encrypted models give E_1^-T E_2^T, so a refreshed key hides nothing new.
    wide = cloud_study.key_refresh_transfer(_tiny_vit(), pairs=2)
    assert (wide["mapping_error_max"] < 1e-8).all()
    torch.manual_seed(0)
    narrow = VisionTransformer(img_size=8, patch_size=2, embed_dim=4, depth=1, num_heads=1, num_classes=10).eval()
    assert (cloud_study.key_refresh_transfer(narrow, pairs=2)["mapping_error_max"] > 0.1).all()


def test_seam_cost_prefers_the_true_block_order():
    rng = np.random.default_rng(4)
    images = _smooth_images(4, 16, rng)
    blocks = blocks_of(images, 4)
    shuffled = cloud_view.place_blocks(blocks, rng.permutation(16))
    true_cost = jigsaw.seam_cost(images, 4)
    assert true_cost < jigsaw.seam_cost(images_of(shuffled, (16, 16), 4), 4)
    with pytest.raises(ValueError, match="not divisible"):
        jigsaw.seam_cost(images[..., :15], 4)


def _uint8(images: torch.Tensor) -> torch.Tensor:
    lo, hi = images.amin(), images.amax()
    return ((images - lo) / (hi - lo) * 255).round().to(torch.uint8)


def test_geometry_study_recovers_a_permutation_key_without_a_model():
    # No model: pixel correlations give E_a, the smoother of two block orders is taken, and further
    # queries under the same key (`extra`) decrypt with what the n queries gave.
    rng = np.random.default_rng(5)
    public, queries, extra = (_uint8(_smooth_images(n, 16, rng)) for n in (2000, 1500, 3))
    prep = Preprocess((16, 16), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    out = cloud_study.cloud_view_geometry_study(queries, public, prep, "synthetic", [1500], size=16, patch=4, n_keys=1,
                                                n_scored=8, extra=extra, kinds=["permutation"])
    row = out["detail"].iloc[0]
    assert row["key_error"] == 0 and row["content_psnr_mean"] == 100
    assert row["blocks_placed"] == 1.0 and row["image_psnr_mean"] == 100 and row["extra_psnr_mean"] == 100
    assert np.isnan(row["accuracy"])  # no model of this geometry: nothing to score accuracy with
    summary = cloud_study.summarize_cloud_view(out["detail"])
    assert summary["extra_psnr_mean"].iloc[0] == 100
    assert list(out["references"]["reference"]) == ["originals", "public mean block", "own mean colour"]
    assert len(out["originals"]) == 7 and torch.equal(out["originals"][4:], extra.float() / 255)
    with pytest.raises(ValueError, match="lower security.cloud_geometry_queries"):
        cloud_study.cloud_view_geometry_study(queries[:5], public, prep, "synthetic", [10], 16, 4, kinds=["orthogonal"])


def test_position_embedding_alone_places_most_blocks_up_to_a_flip():
    # A smooth position embedding (nearby positions similar, as training makes it; here Gaussian bumps on a
    # 4x4 grid, as the study's 32x32 images with 8x8 blocks): laying the encrypted rows (Ê_pos = E_b E_pos,
    # Eq. 8) on the grid by similarity places most blocks, up to the grid's flips and turns (chance: 1/16).
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=1, num_classes=10).eval()
    rng = np.random.default_rng(0)
    r, c = np.divmod(np.arange(16), 4)
    centres = rng.uniform(0, 3, size=(24, 2))
    bumps = np.exp(-((r[:, None] - centres[None, :, 0]) ** 2 + (c[:, None] - centres[None, :, 1]) ** 2) / 2)
    with torch.no_grad():
        model.pos_embed[0, 1:] = torch.from_numpy(bumps + 0.05 * rng.standard_normal(bumps.shape)).float()
    key = generate_key(32, 8, 3, "orthogonal", seed=7)
    parts = embeddings(encrypt_model(model, key))
    orders = cloud_view.order_from_position_embedding(parts.pos_embed[0, 1:].detach().double().numpy(), (4, 4))
    assert len(orders) == 8 and len({tuple(o) for o in orders}) == 8
    assert max(np.mean(o == key.block_permutation) for o in orders) >= 0.75
    shuffled = cloud_view.order_from_position_embedding(rng.standard_normal((16, 24)), (4, 4))  # no structure
    assert max(np.mean(o == key.block_permutation) for o in shuffled) < 0.5
    assert len(cloud_view.grid_symmetries((2, 4))) == 4
