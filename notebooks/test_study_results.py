"""Results of the smoke study, asserted from the files the notebooks wrote (not from cell text).

pytest runs this after nbval has executed the notebooks in this folder (file order), into the
temporary FEDVIT_RUNS folder set by the root conftest. Run alone, it runs the study itself first.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fedvit_utils import paths
from fedvit_utils.study import runner


@pytest.fixture(scope="module")
def run():
    folder = paths.runs_dir() / "smoke"
    if not (folder / "security.json").exists():  # the notebooks did not run in this session
        runner.run_study("smoke", run_dir=folder, publish=False, progress=False)
    return folder


def test_central_promise_holds_on_every_client(run):
    check = json.loads((run / "cifar10" / "encryption_check.json").read_text())
    assert len(check["clients"]) == 10
    for client in check["clients"]:
        assert client["identical_predictions"] == 1.0
        assert client["max_abs_logit_diff"] <= 1e-4
        assert client["acc_encrypted"] == client["acc_plain"]
    assert len({c["key_fingerprint"] for c in check["clients"]}) == 10, "one independent key per client"
    assert {"partition_seed", "training_seed"} <= set(check)


def test_table1_has_both_columns_and_the_paper_beside_them(run):
    doc = json.loads((run / "table1.json").read_text())
    rows = {r["dataset"]: r for r in doc["rows"]}
    c10 = rows["CIFAR-10"]
    assert 0.0 <= c10["integrated_model_encrypted"] <= 1.0 and 0.0 <= c10["baseline"] <= 1.0
    assert c10["integrated_model_encrypted"] == c10["integrated_model_plain"]
    assert c10["paper_integrated"] == 0.977 and c10["paper_baseline"] == 0.978
    assert rows["CIFAR-100"]["status"].startswith("not run here")
    assert "smoke" in doc["label"] and "JPEG" in doc["label"]
    table = pd.read_csv(run / "figures" / "table1.csv")
    assert table["dataset"].tolist() == ["CIFAR-10", "CIFAR-100"]


def test_training_recorded_every_round_with_seeds(run):
    for which in ("federated", "centralized"):
        metrics = json.loads((run / "cifar10" / which / "metrics.json").read_text())
        assert metrics["partition_seed"] == 0 and metrics["training_seed"] == 0
        assert (run / "cifar10" / which / "model.pt").exists()
    history = pd.read_csv(run / "cifar10" / "federated" / "history.csv")
    assert sorted(history["round"].unique()) == [1, 2]


def test_figures_and_security_tables_were_written(run):
    figures = {f.name for f in (run / "figures").iterdir()}
    expected = {"figure2_encrypted_images.png", "key_kinds_gallery.png", "accuracy_curves_cifar10.png",
                "partition_iid_cifar10.png", "table1.md", "security_known_plaintext.csv",
                "security_key_extraction.csv", "security_wrong_keys.csv", "security_visual.csv"}
    assert expected <= figures
    security = json.loads((run / "security.json").read_text())
    right = [r for r in security["wrong_keys"] if r["case"] == "encrypted model, same key"]
    plain = [r for r in security["wrong_keys"] if r["case"] == "plain model, plain images"]
    assert right[0]["accuracy_mean"] == pytest.approx(plain[0]["accuracy_mean"])


def test_no_key_material_left_the_keys_folder(run):
    keys = run / "keys"
    assert (keys.stat().st_mode & 0o077) == 0, "keys/ must be owner-only"
    for f in keys.rglob("*.key"):
        assert (f.stat().st_mode & 0o077) == 0
    executed = run / "notebooks"
    for nb in executed.glob("*.ipynb"):
        text = nb.read_text()
        assert "block_permutation" not in text and "inverse_matrix" not in text


def test_table1_spread_counts_every_identical_prediction(run):
    doc = json.loads((run / "table1_spread.json").read_text())
    (row,) = doc["rows"]  # CIFAR-10 only: CIFAR-100 was not run
    assert row["runs"] == 1 and row["identical_predictions"] == "100 of 100"
    assert row["integrated_model_encrypted_mean"] == row["integrated_model_plain_mean"]
