"""The `paper` profile's code path end to end, with only the sizes shrunk.

A YAML profile with ``base: paper``: a ViT built at 224x224 with patch 16 from a local checkpoint file
(written here; stands in for ImageNet weights), CIFAR resized 32 -> 224 by the model's own
preprocessing, CIFAR-10 from the offline JPEG copy and CIFAR-100 from torchvision's files (made here),
FedAvg with the paper's optimizer and batch. Only depth, width, clients, images and rounds are small,
so every notebook runs in seconds. Table 1 must come out with both dataset rows filled.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
import yaml
from cifar_files import write_cifar

from fedvit_utils.federated import checkpoints
from fedvit_utils.study.runner import notebooks, run_study

SHRUNK = dict(embed_dim=48, depth=1, num_heads=2)


@pytest.fixture(scope="module")
def miniature(tmp_path_factory, cifar_root):
    """Run every notebook on a paper-shaped profile; returns (run folder, checkpoint state, profile file)."""
    tmp = tmp_path_factory.mktemp("paper-miniature")
    data = tmp / "data"
    data.mkdir()
    (data / "cifar10").symlink_to(cifar_root)  # <data>/cifar10/{train,test}/<class>/*.jpg
    write_cifar(data, "cifar100", {"train": 2, "test": 2})  # <data>/cifar-100-python/
    torch.manual_seed(0)
    imagenet_like = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=1000, **SHRUNK)
    with torch.no_grad():
        imagenet_like.pos_embed.add_(1.0)  # a mark that training from this file keeps and a fresh init lacks
    torch.save(imagenet_like.state_dict(), tmp / "vit_b16_imagenet.pth")
    profile = tmp / "paper-miniature.yaml"
    profile.write_text(yaml.safe_dump({
        "base": "paper", "checkpoint_path": str(tmp / "vit_b16_imagenet.pth"), "model_kwargs": SHRUNK,
        "download": False, "num_clients": 2, "train_per_client": 100, "test_per_client": 100, "max_per_class": 20,
        "rounds": 1, "eval_batch_size": 50,
        # Smoke-sized security study (the paper profile's own sizes take minutes at 224x224, L = 768).
        "security": {"n_images": 6, "known_pairs": [0, 1], "known_plaintext_draws": 1, "n_unseen": 2,
                     "photo_known_pairs": [], "wrong_key_images": 20, "n_keys": 2, "extraction_widths": [],
                     "prior_images": 10, "position_keys": 1, "jigsaw_images": 1, "jigsaw_ciphertexts": [2]},
    }))
    run = run_study(str(profile), run_dir=tmp / "run", data=data, publish=False, progress=False)
    return run, imagenet_like.state_dict()


def test_every_notebook_ran_at_paper_shapes(miniature):
    run, _ = miniature
    executed = {p.name for p in (run / "notebooks").glob("*.ipynb")}
    assert executed == {nb.name for nb in notebooks()}
    check = json.loads((run / "cifar100" / "encryption_check.json").read_text())
    assert all(c["identical_predictions"] == 1.0 and c["max_abs_logit_diff"] <= 1e-4 for c in check["clients"])
    for dataset in ("cifar10", "cifar100"):
        keys = sorted((run / "keys" / dataset).glob("*.key"))
        assert len(keys) == 2, f"one key per client for {dataset}"


def test_table1_has_both_dataset_rows(miniature):
    run, _ = miniature
    rows = {r["dataset"]: r for r in json.loads((run / "table1.json").read_text())["rows"]}
    assert set(rows) == {"CIFAR-10", "CIFAR-100"}
    for row in rows.values():
        assert row["status"] == "run" and row["n_test"] == 200
        assert row["identical_predictions"] == 1.0
        assert row["integrated_model_encrypted"] == row["integrated_model_plain"]
        assert 0.0 <= row["baseline"] <= 1.0
    assert rows["CIFAR-100"]["paper_integrated"] == 0.851


def test_the_model_started_from_the_local_checkpoint_at_224(miniature):
    run, imagenet_like = miniature
    trained = checkpoints.load_model_state(run / "cifar10" / "federated")
    assert trained["pos_embed"].shape == (1, 197, 48)  # 14 x 14 patches of 16 at 224, plus the class token
    assert trained["head.weight"].shape == (10, 48)  # the ImageNet head was replaced for CIFAR-10
    # One round at lr 1e-3 moves the position embedding little; a fresh init (std 0.02) is 1.0 away.
    assert (trained["pos_embed"] - imagenet_like["pos_embed"]).abs().max() < 0.1


def test_the_security_study_ran_at_the_model_input_size(miniature):
    run, _ = miniature
    security = json.loads((run / "security.json").read_text())
    assert security["dataset"] == "cifar10" and "32x32 resized to 224x224 (bicubic" in security["images"]
    for table in ("key_extraction", "position_embedding", "wrong_keys"):
        assert {r["image_size"] for r in security[table]} == {"224x224"}, table
    extraction = {r["kind"]: r for r in security["key_extraction"]}
    assert extraction["permutation"]["exact"] == "2/2"  # D = 48 < L = 768: column matching still reads the key
    assert extraction["orthogonal"]["exact_keys"] == 0
