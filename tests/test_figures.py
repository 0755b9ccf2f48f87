"""Figure 2 and the key-kind gallery: real photographs, real encryption, honest display."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedvit_utils.data import photographs
from fedvit_utils.study import figures


def test_photographs_are_square_rgb_uint8():
    img = photographs(["astronaut"])
    assert img.shape == (1, 3, 224, 224) and img.dtype == torch.uint8
    small = photographs(size=64)
    assert small.shape == (3, 3, 64, 64) and not torch.equal(small[0], small[1])


def test_permutation_display_is_the_same_pixels_rearranged():
    img = photographs(["coffee"], size=64)[0]
    enc, rescaled = figures.encrypt_for_display(img, "permutation", 16, seed=0)
    assert not rescaled
    shown = (enc * 255).round().astype(np.uint8)
    assert np.array_equal(np.sort(shown.ravel()), np.sort(img.numpy().ravel()))
    assert not np.array_equal(shown, img.permute(1, 2, 0).numpy())


@pytest.mark.parametrize("kind", ["orthogonal", "gaussian"])
def test_dense_display_is_rescaled_into_range(kind):
    enc, rescaled = figures.encrypt_for_display(photographs(["chelsea"], size=32)[0], kind, 8, seed=0)
    assert rescaled and enc.min() == 0.0 and enc.max() == 1.0


def test_figures_have_the_expected_panels():
    img = photographs(["astronaut"], size=64)[0]
    assert len(figures.figure2(img, block_size=16).axes) == 2
    fig = figures.key_kind_gallery({"a": (img, 16), "b": (img[:, :32, :32], 4)})
    assert len(fig.axes) == 2 * 4


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="one uint8 image"):
        figures.encrypt_for_display(torch.zeros((32, 32), dtype=torch.uint8), "permutation", 8, 0)
    with pytest.raises(ValueError, match="unknown photo"):
        photographs(["moon-landing"])
