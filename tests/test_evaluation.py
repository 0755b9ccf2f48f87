"""predict: the transform slot, exact float32 mode, and that it leaves global settings alone."""

from __future__ import annotations

import torch
import vit_zoo

from fedvit_utils.data import Preprocess
from fedvit_utils.devices import full_float32
from fedvit_utils.encryption import EncryptImages
from fedvit_utils.evaluation import metrics_from_logits, predict
from fedvit_utils.keys import generate_key
from fedvit_utils.model_encryption import encrypt_model


def test_exact_mode_restores_tf32_settings():
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("high")
    try:
        with full_float32():
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.backends.cudnn.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_predict_batches_and_applies_the_transform_after_preprocessing():
    model = vit_zoo.make("small32_p8")
    pre = Preprocess.for_model(model)
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = model(pre(images))
    torch.testing.assert_close(predict(model, images, pre, batch_size=3, exact=True), direct, rtol=0, atol=1e-6)
    key = generate_key(32, 8, kind="orthogonal", seed=0)
    enc = predict(encrypt_model(model, key), images, pre, batch_size=4, transform=EncryptImages(key), exact=True)
    assert (enc - direct).abs().max() <= 1e-4
    labels = direct.argmax(1)
    assert metrics_from_logits(predict(model, images, pre), labels)["accuracy"] == 1.0
