"""What the encryption hides (fedvit_utils.security): measures, visual security, key space, wrong keys; saving."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from matplotlib.figure import Figure
from torch import nn

from fedvit_utils.data import photographs, sample_images, to_unit_float
from fedvit_utils.evaluation import accuracy, exact_predictor
from fedvit_utils.keys import KEY_KINDS
from fedvit_utils.profiles import ProfileError, load_profile
from fedvit_utils.security.measures import (
    PSNR_CAP,
    Normalization,
    block_accuracy,
    image_quality,
    key_error,
    score_decryption,
    summarize_draws,
)
from fedvit_utils.security.visual import key_space, n_known_pairs_needed, visual_security
from fedvit_utils.security.wrong_keys import permutation_key_leakage, summarize_wrong_keys, wrong_key_accuracy
from fedvit_utils.study.reports import save_figure, save_table, to_markdown


@pytest.fixture(scope="module")
def cifar(cifar_test):
    s = sample_images(cifar_test, 12, seed=0)
    return to_unit_float(s.images), s.labels


# -- small measures ---------------------------------------------------------------------------------
def test_image_quality_identical_and_different():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    psnr, ssim = image_quality(x, x.clone())
    assert np.all(np.isinf(psnr)) and np.allclose(ssim, 1.0)
    psnr, ssim = image_quality(x, (x + 0.1).clamp(0, 1))
    assert np.all((psnr > 15) & (psnr < 30)) and np.all(ssim < 1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        image_quality(x, x[:, :, :8])
    with pytest.raises(TypeError, match="floats"):
        image_quality((x * 255).to(torch.uint8), x)


def test_key_error_and_block_accuracy():
    a = np.eye(3)
    assert key_error(a, a) == 0.0
    assert key_error(2 * a, a) == pytest.approx(1.0)
    assert block_accuracy(np.array([0, 2, 1]), np.array([0, 1, 2])) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shape"):
        key_error(np.eye(2), np.eye(3))


# -- 1. visual security -----------------------------------------------------------------------------
def test_visual_security_table(cifar):
    x, _ = cifar
    t = visual_security(x, 8, "CIFAR-10 test (JPEG q75)")
    assert len(t) == 3 * len(KEY_KINDS) + 1
    assert {"data", "image_size", "patch_size", "kind", "part", "psnr_mean", "ssim_mean"} <= set(t.columns)
    assert (t["image_size"] == "32x32").all() and (t["data"] == "CIFAR-10 test (JPEG q75)").all()
    full = t[t["part"] == "E_b + E_a"].set_index("kind")
    # Structure is gone for every kind: SSIM near zero, and no better than an unrelated image by PSNR.
    ref = t[t["kind"] == "none"].iloc[0]
    assert (full["ssim_mean"].abs() < 0.15).all()
    assert (full["psnr_stretched_mean"] < ref["psnr_mean"] + 3).all()
    # The block permutation is the same part in every kind, so "E_b only" rows agree exactly.
    eb = t[t["part"] == "E_b only"]
    assert np.allclose(eb["psnr_mean"], eb["psnr_mean"].iloc[0])


def test_visual_security_on_photographs_separates_parts():
    ph = to_unit_float(photographs(size=64))
    t = visual_security(ph, 16, "skimage photographs", kinds=("orthogonal",))
    rows = t.set_index("part")
    # Dense mixing destroys more than moving intact blocks around does.
    assert rows.loc["E_a only", "ssim_stretched_mean"] < rows.loc["E_b only", "ssim_stretched_mean"]


# -- 2. key space -----------------------------------------------------------------------------------
def test_key_space_numbers():
    t = key_space(32, 4).set_index("kind")
    assert t.loc["orthogonal", "N"] == 64 and t.loc["orthogonal", "L"] == 48
    assert t.loc["permutation", "log10_block_permutations"] == pytest.approx(math.log10(math.factorial(64)))
    assert t.loc["permutation", "log10_total"] == pytest.approx(
        math.log10(math.factorial(64)) + math.log10(math.factorial(48))
    )
    assert math.isinf(t.loc["gaussian", "log10_total"])
    assert t.loc["orthogonal", "E_a_real_parameters"] == 48 * 47 // 2
    assert t.loc["gaussian", "E_a_real_parameters"] == 48 * 48
    # The rank threshold of a dense key: k N > L.
    assert n_known_pairs_needed(64, 48) == 1
    assert n_known_pairs_needed(16, 192) == 13
    assert key_space(224, 16).set_index("kind").loc["orthogonal", "known_pairs_kN_over_L"] == 4
    with pytest.raises(ValueError, match="not divisible"):
        key_space(30, 4)


# -- 3. wrong keys ----------------------------------------------------------------------------------
def _quadrant_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c = which 16x16 quadrant of a 32x32 image is brighter: solvable only with positions."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 3, 32, 32, generator=g) * 0.3
    for i, c in enumerate(labels.tolist()):
        r0, c0 = 16 * (c // 2), 16 * (c % 2)
        x[i, :, r0 : r0 + 16, c0 : c0 + 16] += 0.5
    return x, labels


@pytest.fixture(scope="module")
def quadrant_model():
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=32, patch_size=8,
                          embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0)
    with torch.no_grad():
        m.pos_embed.normal_(0, 0.5)  # trained-model magnitude: positions are learned in a few steps
    x, y = _quadrant_data(512, 0)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    m.train()
    for _ in range(150):
        idx = torch.randint(0, 512, (64,))
        loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.mark.parametrize("kind", ["orthogonal", "permutation"])
def test_wrong_keys_drop_towards_a_constant_guess_right_key_matches_plain(quadrant_model, kind):
    x, y = _quadrant_data(256, 1)
    predict = exact_predictor(nn.Identity(), 256, torch.device("cpu"))
    detail = wrong_key_accuracy(quadrant_model, x, y, predict, "synthetic quadrants", kinds=(kind,), n_keys=3)
    s = summarize_wrong_keys(detail).set_index("case")
    plain = s.loc["plain model, plain images", "accuracy_mean"]
    assert plain > 0.95, "the test model did not learn the task"
    # Eq. (14): same key gives the plain model's accuracy for every key.
    assert s.loc["encrypted model, same key", "accuracy_min"] == pytest.approx(plain)
    assert s.loc["encrypted model, another client's key", "keys"] == 3
    chance = float(torch.bincount(y).max()) / len(y)  # a constant guess
    assert (detail["chance"] == chance).all() and (detail.loc[detail["kind"] != "-", "kind"] == kind).all()
    for case in ("encrypted model, another client's key", "encrypted model, plain images",
                 "plain model, encrypted images"):
        assert s.loc[case, "accuracy_mean"] < 0.6, case  # far from the right key's accuracy
    # Keys appear only as fingerprints (8 hex digits).
    assert all(len(f) == 8 for f in (set(detail["model_key"]) | set(detail["image_key"])) - {"-"})


def test_summarize_wrong_keys_standard_errors():
    acc = [0.2, 0.3, 0.4, 0.3]
    detail = pd.DataFrame(dict(data="d", image_size="32x32", patch_size=8, kind="permutation", case="c",
                               accuracy=acc, n_images=1000, chance=0.1))
    row = summarize_wrong_keys(detail).iloc[0]
    assert row["keys"] == 4 and row["accuracy_mean"] == pytest.approx(0.3)
    se = np.std(acc, ddof=1) / 2
    assert row["se_over_keys"] == pytest.approx(se)
    assert row["se_binomial"] == pytest.approx(math.sqrt(0.3 * 0.7 / 1000))
    assert row["se_above_chance"] == pytest.approx(0.2 / se)
    same = summarize_wrong_keys(detail.assign(accuracy=0.3)).iloc[0]
    assert same["se_over_keys"] == 0 and math.isnan(same["se_above_chance"])


def test_permutation_key_leakage_separates_its_parts(quadrant_model):
    # The class is which quadrant is brighter: block brightness in place solves it, moved blocks do not.
    x, y = _quadrant_data(256, 3)
    predict = exact_predictor(nn.Identity(), 256, torch.device("cpu"))
    t = summarize_wrong_keys(permutation_key_leakage(quadrant_model, x, y, predict, "synthetic quadrants",
                                                     n_keys=2)).set_index("case")
    moved = t.loc["blocks moved (E_b only)", "accuracy_mean"]
    assert t.loc["values shuffled inside each block, in place (E_a only)", "accuracy_mean"] > moved + 0.3
    assert t.loc["each block replaced by its mean value, in place", "accuracy_mean"] > moved + 0.3
    assert t.loc["blocks moved (E_b only)", "keys"] == 2


def test_wrong_key_accuracy_runs_through_the_given_predictor(quadrant_model):
    x, y = _quadrant_data(64, 2)
    plain_predict = exact_predictor(nn.Identity(), 32, torch.device("cpu"))
    calls = []

    def predict(model, batch, transform=None):
        calls.append(transform)
        return plain_predict(model, batch, transform)

    d = wrong_key_accuracy(quadrant_model, x, y, predict, "synthetic", kinds=("orthogonal", "gaussian"), n_keys=2)
    assert len(calls) == 1 + 2 * 2 * 4  # plain, then per kind and key: same, another, model on plain, plain on enc
    assert sum(t is not None for t in calls) == 2 * 2 * 3  # encryption is the predictor's transform
    plain = d.loc[d["case"] == "plain model, plain images", "accuracy"].item()
    assert plain == accuracy(plain_predict(quadrant_model, x), y)
    with pytest.raises(ValueError, match="at least two keys"):
        wrong_key_accuracy(quadrant_model, x, y, predict, "synthetic", n_keys=1)
    with pytest.raises(ValueError, match="labels"):
        accuracy(plain_predict(quadrant_model, x), y[:3])


# -- attack scoring and the notebook's settings ----------------------------------------------------
def test_normalization_and_decryption_scores():
    norm = Normalization((0.5, 0.4, 0.3), (0.5, 0.25, 0.2))
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(norm.undo(norm.apply(x)), x)
    assert torch.allclose(norm.apply(x)[:, 1], (x[:, 1] - 0.4) / 0.25)
    grid = (x * 255).round() / 255  # decoded files lie on the 8-bit grid
    off = grid.clone()
    off[1] += 0.4 / 255  # within half a level everywhere: identical once rounded
    off[2, 0, 0, 0] += 1 / 255  # one level off in one value
    psnr, identical = score_decryption(grid, off)
    assert identical.tolist() == [True, True, False]
    assert psnr[0] == psnr[1] == PSNR_CAP
    assert psnr[2] == pytest.approx(10 * math.log10(192 * 255**2))  # one error of 1/255 among 192 values
    psnr, identical = score_decryption(x, x + 0.1 / 255)  # off the grid: compared as floats
    assert identical.all() and psnr.max() < PSNR_CAP


def test_summarize_draws_counts_exact_draws():
    t = pd.DataFrame(dict(kind=["a", "a", "a", "b"], exact=[True, False, True, False],
                          blocks_placed=[1.0, 0.5, 1.0, 1.0], psnr_mean=[100.0, 20.0, 100.0, 30.0],
                          psnr_min=[100.0, 12.0, 100.0, 25.0], n_identical=[4, 0, 4, 0], n_unseen=4))
    s = summarize_draws(t, ["kind"]).set_index("kind")
    assert s.loc["a", "exact"] == "2/3" and s.loc["a", "all_blocks_placed"] == 2 and s.loc["b", "exact"] == "0/1"
    assert s.loc["a", "psnr_worst_image"] == 12.0 and s.loc["a", "psnr_mean"] == pytest.approx(220 / 3)
    assert s.loc["a", "images_identical"] == 8 and s.loc["a", "images"] == 12


@pytest.mark.parametrize("security, name", [
    (dict(dataset="cifar100"), "dataset"),  # not one of the smoke profile's datasets
    (dict(n_keys=1), "n_keys"),
    (dict(known_pairs=[]), "known_pairs"),
    (dict(known_pairs=[5], n_images=8, n_unseen=4), "n_images"),
    (dict(jigsaw_ciphertexts=[0]), "jigsaw_ciphertexts"),
    (dict(extraction_widths=[0]), "extraction_widths"),
    (dict(photo_known_pairs=[3]), "photo_known_pairs"),
    (dict(known_plaintext_draws=0), "known_plaintext_draws"),
    (dict(cloud_queries=[]), "cloud_queries"),
    (dict(cloud_queries=[1]), "cloud_queries"),
    (dict(cloud_public_images=2), "cloud_public_images"),
    (dict(cloud_keys=0), "cloud_keys"),
    (dict(cloud_geometry_queries=[1]), "cloud_geometry_queries"),
    (dict(cloud_geometry_queries=[]), "cloud_geometry_queries"),
    (dict(cloud_geometry=[30, 4]), "cloud_geometry"),
    (dict(cloud_geometry=[224]), "cloud_geometry"),
    (dict(cloud_geometry_public_images=3), "cloud_geometry_public_images"),
    (dict(cloud_geometry_keys=0), "cloud_geometry_keys"),
])
def test_security_settings_that_cannot_run_are_refused(security, name):
    with pytest.raises(ProfileError, match=f"security.{name}="):
        load_profile("smoke", security=security)


def test_security_settings_name_the_dataset_and_study_sizes():
    assert load_profile("smoke").security.dataset is None
    assert load_profile("paper", security=dict(dataset="cifar100")).security.dataset == "cifar100"
    quick = load_profile("quick").security
    assert quick.known_plaintext_draws >= 20 and quick.n_keys >= 5 and 12 in quick.known_pairs
    assert quick.cloud_keys >= 5 and quick.cloud_geometry_keys >= 5 and max(quick.cloud_geometry_queries) >= 1000
    assert quick.cloud_geometry == [224, 16]


# -- saving -----------------------------------------------------------------------------------------
def test_save_table_and_figure_write_csv_markdown_and_png(tmp_path):
    table = pd.DataFrame({"kind": ["orthogonal", "a|b"], "psnr": [1.23456789, math.inf], "n": [2.0, 10.0]})
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    csv, md = save_table(table, tmp_path / "figs", "t", caption="Table t")
    png = save_figure(fig, tmp_path / "figs", "f")
    assert {p.name for p in (csv, md, png)} == {"t.csv", "t.md", "f.png"}
    assert pd.read_csv(csv)["kind"].tolist() == ["orthogonal", "a|b"]
    text = md.read_text()
    assert text.splitlines()[0] == "Table t" and text.splitlines()[2] == "| kind | psnr | n |"
    assert "a\\|b" in text and "1.235" in text and "| inf |" in text and "| 10 |" in text
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(TypeError, match="DataFrame"):
        save_table({"a": 1}, tmp_path, "t")
    with pytest.raises(TypeError, match="Figure"):
        save_figure("not a figure", tmp_path, "f")
    assert to_markdown(table).count("\n") == 4
