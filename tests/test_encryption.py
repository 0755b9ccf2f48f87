"""The central promise, Eq. (14): the encrypted model on encrypted images equals the plain model.

Every key kind on every ViT layout (class/distillation/register tokens, no class token, position
embedding without prefix rows, ViT-Ti/16 at 224), plus checks that each plausible implementation
mistake makes these same assertions fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vit_zoo

from fedvit_utils.encryption import EncryptImages, decrypt_images, encrypt_images, encrypt_images_reference
from fedvit_utils.keys import KEY_KINDS, KeyMismatchError, SecretKey, generate_key
from fedvit_utils.model_encryption import encrypt_model
from fedvit_utils.models import NotAViTError

TOL = 1e-4  # max |delta logit| in float32


def _inputs(model, batch=4, seed=0):
    h, w = model.patch_embed.img_size
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _key_for(model, kind, seed=1):
    return generate_key(tuple(model.patch_embed.img_size), model.patch_embed.patch_size[0], 3, kind, seed)


def _max_delta(model, enc_model, x, x_enc):
    with torch.no_grad():
        a, b = model(x), enc_model(x_enc)
    return (a - b).abs().max().item(), a.argmax(1), b.argmax(1)


@pytest.mark.parametrize("kind", KEY_KINDS)
@pytest.mark.parametrize("config", vit_zoo.config_params())
def test_encrypted_model_on_encrypted_images_equals_plain(config, kind):
    model = vit_zoo.make(config)
    x = _inputs(model)
    key = _key_for(model, kind)
    enc_model = encrypt_model(model, key)
    delta, plain_pred, enc_pred = _max_delta(model, enc_model, x, encrypt_images(x, key))
    assert delta <= TOL, f"{config}/{kind}: max |dlogit| = {delta:.2e}"
    assert torch.equal(plain_pred, enc_pred)


def test_input_model_is_not_modified():
    model = vit_zoo.make("small32_p4")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    encrypt_model(model, _key_for(model, "orthogonal"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- each deliberate mistake must break the same assertion -------------------------------------------
def _only_patch_embedding(model, key):
    """Mistake: Eq. (8) forgotten, the position embedding is not permuted."""
    enc = encrypt_model(model, key)
    enc.pos_embed.data.copy_(model.pos_embed.data)
    return enc


def _class_row_moved(model, key):
    """Mistake: E_b applied to every row of E_pos, moving the class-token row (Eq. 6 keeps row 0)."""
    enc = encrypt_model(model, key)
    rows = torch.cat([torch.tensor([0]), torch.tensor(key.block_permutation) + 1])
    full = torch.cat([rows[1:], rows[:1]])  # a permutation of all N+1 rows that moves row 0
    enc.pos_embed.data.copy_(model.pos_embed.data[:, full])
    return enc


def _flatten_hwc(images, key):
    """Mistake: blocks flattened (p, p, C) instead of timm's (C, p, p) weight layout."""
    b, c, h, w = images.shape
    p = key.patch_size
    gh, gw = key.grid_size
    blocks = images.view(b, c, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, -1)
    blocks = blocks[:, torch.tensor(key.block_permutation)]
    enc = blocks @ torch.tensor(key.inverse_matrix, dtype=images.dtype)
    return enc.view(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


@pytest.mark.parametrize("kind", ["permutation", "orthogonal"])
def test_each_deliberate_mistake_is_caught(kind):
    model = vit_zoo.make("small32_p4")
    x = _inputs(model, batch=16)
    key = _key_for(model, kind)
    x_enc = encrypt_images(x, key)
    correct, _, _ = _max_delta(model, encrypt_model(model, key), x, x_enc)
    assert correct <= TOL
    mistakes = {
        "no position permutation": _max_delta(model, _only_patch_embedding(model, key), x, x_enc),
        "class-token row moved": _max_delta(model, _class_row_moved(model, key), x, x_enc),
        "wrong flatten order": _max_delta(model, encrypt_model(model, key), x, _flatten_hwc(x, key)),
    }
    for what, (delta, plain_pred, enc_pred) in mistakes.items():
        assert delta > 100 * TOL, f"{what} went unnoticed (max |dlogit| = {delta:.2e})"
        assert not torch.equal(plain_pred, enc_pred), f"{what} kept every prediction"


def test_wrong_key_changes_predictions():
    model = vit_zoo.make("small32_p4")
    x = _inputs(model, batch=32)
    right, wrong = _key_for(model, "orthogonal", seed=1), _key_for(model, "orthogonal", seed=2)
    delta, plain_pred, enc_pred = _max_delta(model, encrypt_model(model, right), x, encrypt_images(x, wrong))
    assert delta > 0.1 and (plain_pred != enc_pred).float().mean() > 0.2


# -- images -------------------------------------------------------------------------------------------
# bfloat16 with a gaussian key is left out on purpose: bf16 keeps ~3 digits and cond(E_a) ~ 400 here
# amplifies that rounding past any useful bound. The transform itself runs in float32 (see
# _compute_dtype); the loss is in storing the encrypted image as bf16.
@pytest.mark.parametrize(
    "kind,dtype",
    [(k, d) for k in KEY_KINDS for d in (torch.float32, torch.float64, torch.bfloat16)
     if (k, d) != ("gaussian", torch.bfloat16)],
)
def test_round_trip_and_dtype(kind, dtype):
    key = generate_key((32, 48), 8, kind=kind, seed=3)  # non-square on purpose
    x = torch.rand(3, 3, 32, 48, dtype=torch.float64).to(dtype)
    enc = encrypt_images(x, key)
    assert enc.dtype == dtype and enc.shape == x.shape
    assert not torch.allclose(enc.double(), x.double())
    tol = {torch.float32: 1e-4, torch.float64: 1e-10, torch.bfloat16: 5e-2}[dtype]
    assert (decrypt_images(enc, key).double() - x.double()).abs().max() <= tol
    if kind == "permutation":  # a permutation only moves values: exact and range-preserving
        assert torch.equal(decrypt_images(enc, key), x)
        assert torch.equal(enc.flatten().sort().values, x.flatten().sort().values)


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_fast_path_matches_the_per_block_definition(kind):
    """The vectorized path equals the literal reading of Sec. 3.3 (steps a-e), block by block."""
    key = generate_key((16, 24), 4, kind=kind, seed=4)  # non-square on purpose
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    torch.testing.assert_close(encrypt_images(x, key), encrypt_images_reference(x, key), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["orthogonal", "gaussian"])
def test_encryption_ignores_a_surrounding_bf16_autocast(kind):
    """Training and evaluation may run under bf16 autocast; the key's product stays in float32 inside it."""
    key = generate_key(16, 4, kind=kind, seed=5)
    x = torch.randn(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what devices.autocast does on CUDA, here on the CPU
        enc, dec = encrypt_images(x, key), decrypt_images(encrypt_images(x, key), key)
    assert torch.equal(enc, encrypt_images(x, key))
    torch.testing.assert_close(dec, x, rtol=0, atol=1e-4)


def test_the_definition_moves_block_le_i_to_i_and_multiplies_by_the_inverse():
    """Eq. (9)-(12) on a case small enough to write down: 2x1 blocks of 1x1 pixels, one channel."""
    ea = np.array([[2.0]])
    key = SecretKey("gaussian", (2, 1), 1, 1, np.array([1, 0]), ea)  # l_e = [2, 1] in the paper's 1-based terms
    x = torch.tensor([[[[3.0], [5.0]]]], dtype=torch.float64)  # block 1 = 3, block 2 = 5
    # encrypted block 1 is plain block l_e(1) = 2, times E_a^-1 = 1/2; encrypted block 2 is plain block 1 / 2
    expected = torch.tensor([[[[2.5], [1.5]]]], dtype=torch.float64)
    assert torch.equal(encrypt_images_reference(x, key), expected)
    assert torch.equal(encrypt_images(x, key), expected)


def test_permutation_key_encrypts_uint8_exactly():
    key = generate_key(32, 4, kind="permutation", seed=0)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    enc = encrypt_images(x, key)
    assert enc.dtype == torch.uint8 and torch.equal(decrypt_images(enc, key), x)
    assert torch.equal(enc.float(), encrypt_images(x.float(), key))


def test_transform_accepts_single_images():
    key = generate_key(32, 8, kind="orthogonal", seed=0)
    x = torch.rand(3, 32, 32)
    t = EncryptImages(key)
    assert torch.equal(t(x), encrypt_images(x[None], key)[0])
    assert key.fingerprint in repr(t) and "tensor" not in repr(t)


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_inputs_raise_specific_errors():
    key = generate_key(32, 8, kind="orthogonal", seed=0)
    with pytest.raises(KeyMismatchError, match="3 channels but the key was made for 1"):
        encrypt_images(torch.rand(1, 3, 32, 32), generate_key(32, 8, channels=1, seed=0))
    with pytest.raises(KeyMismatchError, match="images are 64x64 but the key was made for 32x32"):
        encrypt_images(torch.rand(1, 3, 64, 64), key)
    with pytest.raises(KeyMismatchError, match="not even divisible by the block size 8"):
        encrypt_images(torch.rand(1, 3, 30, 30), key)
    with pytest.raises(TypeError, match="integer dtype torch.uint8"):
        encrypt_images(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), key)
    with pytest.raises(ValueError, match="add a batch dimension"):
        encrypt_images(torch.rand(3, 32, 32), key)


def test_key_model_mismatch_and_non_vit():
    import timm

    model = vit_zoo.make("small32_p8")
    with pytest.raises(KeyMismatchError, match="patch size is \\(8, 8\\) but the key's block size is 4"):
        encrypt_model(model, generate_key(32, 4, seed=0))
    with pytest.raises(KeyMismatchError, match="image_size=\\(32, 32\\)"):
        encrypt_model(model, generate_key(64, 8, seed=0))
    with pytest.raises(KeyMismatchError, match="channels=3"):
        encrypt_model(model, generate_key(32, 8, channels=1, seed=0))
    with pytest.raises(NotAViTError, match="no ViT patch embedding"):
        encrypt_model(timm.create_model("resnet10t", pretrained=False, num_classes=10), generate_key(32, 8))
    with pytest.raises(NotAViTError):
        encrypt_model(torch.nn.Linear(3, 3), generate_key(32, 8))


@pytest.mark.parametrize("kind", ["permutation", "orthogonal"])
def test_derived_tensors_live_on_the_key_and_die_with_it(kind):
    """E_a^-1 on the device (or the gather index) is cached on the key, not in a module-level cache."""
    import gc
    import weakref

    key = generate_key(32, 4, kind=kind, seed=9)
    x = torch.rand(1, 3, 32, 32)
    first = encrypt_images(x, key)
    cached = [v for v in key._derived.values() if isinstance(v, torch.Tensor)]
    assert cached, "nothing was cached on the key"
    refs = [weakref.ref(t) for t in cached]
    assert torch.equal(encrypt_images(x, key), first)  # the cached path gives the same result
    del key, cached
    gc.collect()
    assert all(r() is None for r in refs), "a derived tensor outlived its key"


# -- misuse is named, never silent ---------------------------------------------------------------------
def test_encrypting_a_model_twice_or_folding_after_encrypting_is_refused():
    from fedvit_utils.model_encryption import fold_normalization, is_encrypted

    model = vit_zoo.make("small32_p8")
    key = _key_for(model, "orthogonal")
    enc = encrypt_model(model, key)
    assert is_encrypted(enc) and not is_encrypted(model)
    with pytest.raises(ValueError, match=f"already encrypted \\(key {key.fingerprint}\\)"):
        encrypt_model(enc, _key_for(model, "orthogonal", seed=2))
    with pytest.raises(ValueError, match="fold the normalization into the plain model"):
        fold_normalization(enc, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="std and scale non-zero"):
        fold_normalization(model, (0.5,) * 3, (0.5, 0.0, 0.5))


def test_bad_pixels_and_layouts_are_named():
    key = generate_key(32, 8, kind="orthogonal", seed=0)
    x = torch.rand(2, 3, 32, 32)
    x[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        encrypt_images(x, key)
    with pytest.raises(KeyMismatchError, match="channels-last.*permute\\(0, 3, 1, 2\\)"):
        encrypt_images(torch.rand(2, 32, 32, 3), key)
    with pytest.raises(TypeError, match="complex dtype"):
        encrypt_images(torch.rand(2, 3, 32, 32, dtype=torch.complex64), key)
