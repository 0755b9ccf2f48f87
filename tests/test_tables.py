"""Table 1: the per-client Eq. (14) check (evaluation.verify_encryption) and the aggregated row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import vit_zoo

from fedvit_utils.evaluation import verify_encryption
from fedvit_utils.keys import client_keys
from fedvit_utils.study import reports, table1


def _predict(model, images, transform=None):
    x = images.float() / 127.5 - 1.0
    if transform is not None:
        x = transform(x)
    with torch.no_grad():
        return model(x)


def test_encrypted_path_gives_identical_predictions_per_client(tmp_path):
    model = vit_zoo.make("small32_p8")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = _predict(model, images).argmax(1)  # the plain model is right on every image
    labels[::3] = (labels[::3] + 1) % 10  # ... except a third of them
    splits = [np.arange(0, 10), np.arange(10, 20), np.arange(20, 30)]
    keys = client_keys(3, 32, 8, kind="orthogonal", seed=1)
    clients = verify_encryption(model, images, labels, splits, keys, _predict)
    assert (clients["identical_predictions"] == 1.0).all()
    assert (clients["acc_encrypted"] == clients["acc_plain"]).all()
    assert clients["max_abs_logit_diff"].max() <= 1e-4
    row = table1.table1_row("CIFAR-10", clients, baseline_accuracy=0.5)
    assert row["integrated_model_encrypted"] == pytest.approx(20 / 30)
    assert row["paper_integrated"] == 0.977 and row["n_test"] == 30
    table = pd.DataFrame([row, table1.not_run_row("CIFAR-100", "no offline copy")])
    csv, md = reports.save_table(table, tmp_path, "table1", "Table 1 (test)")
    assert pd.read_csv(csv)["dataset"].tolist() == ["CIFAR-10", "CIFAR-100"]
    assert "not run here" in md.read_text() and "0.977" in md.read_text()


def test_wrong_key_is_caught_by_the_table():
    model = vit_zoo.make("small32_p8")
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = _predict(model, images).argmax(1)
    keys = client_keys(2, 32, 8, kind="orthogonal", seed=1)
    swapped = [keys[0], keys[1]]

    def mixed_up(m, x, transform=None):  # client 1's images encrypted with client 0's key
        if transform is not None and transform.key == swapped[1]:
            transform = type(transform)(swapped[0])
        return _predict(m, x, transform)

    clients = verify_encryption(
        model, images, labels, [np.arange(10), np.arange(10, 20)], keys, mixed_up
    )
    assert clients.loc[0, "identical_predictions"] == 1.0
    assert clients.loc[1, "identical_predictions"] < 0.8


def test_key_count_must_match_clients():
    with pytest.raises(ValueError, match="one key per client"):
        verify_encryption(None, None, None, [np.arange(2)] * 3, [], _predict)


def _record(seed, acc, base, identical=1.0):
    clients = [{"n_test": 10, "identical_predictions": identical, "max_abs_logit_diff": 1e-6 * (seed + 1)}] * 2
    return {"folder": f"run{seed}", "checks": {"cifar10": {"key_seed": seed, "clients": clients}},
            "table1": {"training_seed": seed, "rows": [
                {"dataset": "CIFAR-10", "status": "run", "integrated_model_encrypted": acc,
                 "integrated_model_plain": acc, "baseline": base},
                {"dataset": "CIFAR-100", "status": "not run here: no data"}]}}


def test_spread_over_seeds_is_mean_and_sample_std_with_the_identical_count():
    spread = table1.spread_table([_record(0, 0.30, 0.40), _record(1, 0.32, 0.38), _record(2, 0.34, 0.42)])
    assert spread["dataset"].tolist() == ["CIFAR-10"]  # rows that did not run are left out
    row = spread.iloc[0]
    assert row["runs"] == 3 and row["training_key_seeds"] == "0/0, 1/1, 2/2"
    assert row["integrated_model_encrypted_mean"] == pytest.approx(0.32)
    assert row["integrated_model_encrypted_std"] == pytest.approx(0.02)  # ddof = 1
    assert row["baseline_std"] == pytest.approx(0.02)
    assert row["identical_predictions"] == "60 of 60" and row["max_abs_logit_diff"] == pytest.approx(3e-6)
    one = table1.spread_table([_record(0, 0.3, 0.4, identical=0.9)]).iloc[0]
    assert np.isnan(one["integrated_model_encrypted_std"]) and one["identical_predictions"] == "18 of 20"
