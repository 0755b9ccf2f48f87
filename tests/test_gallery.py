"""Figure 2 and the key-kind gallery: real photographs, real encryption, honest display."""

from __future__ import annotations

import numpy as np
import pytest

from fedvit_utils import gallery


def test_photo_is_224_rgb_uint8():
    img = gallery.photo("astronaut")
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8


def test_permutation_display_is_the_same_pixels_rearranged():
    img = gallery.photo("coffee", size=64)
    enc, rescaled = gallery.encrypt_for_display(img, "permutation", 16, seed=0)
    assert not rescaled
    assert np.array_equal(np.sort((enc * 255).round().astype(np.uint8).ravel()), np.sort(img.ravel()))
    assert not np.array_equal((enc * 255).round().astype(np.uint8), img)


@pytest.mark.parametrize("kind", ["orthogonal", "gaussian"])
def test_dense_display_is_rescaled_into_range(kind):
    enc, rescaled = gallery.encrypt_for_display(gallery.photo("chelsea", size=32), kind, 8, seed=0)
    assert rescaled and enc.min() == 0.0 and enc.max() == 1.0


def test_figures_have_the_expected_panels():
    img = gallery.photo("astronaut", size=64)
    assert len(gallery.figure2(img, block_size=16).axes) == 2
    fig = gallery.key_kind_gallery({"a": (img, 16), "b": (img[:32, :32], 4)})
    assert len(fig.axes) == 2 * 4


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="RGB uint8"):
        gallery.encrypt_for_display(np.zeros((32, 32), np.uint8), "permutation", 8, 0)
    with pytest.raises(ValueError, match="unknown photo"):
        gallery.photo("moon-landing")
