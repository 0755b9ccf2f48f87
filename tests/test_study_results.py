"""Results of the smoke study, asserted from the files the notebooks wrote (not from cell text).

pytest runs this after nbval has executed the notebooks in notebooks/ (the root conftest moves it to the end),
into the temporary FEDVIT_RUNS folder set by the root conftest; the root conftest also keeps what nbval
received from each notebook as $FEDVIT_RUNS/nbval/*.ipynb. Run alone, this file runs the study
itself first (papermill, as `make study` does) and checks the executed notebooks papermill wrote.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import struct

import nbformat
import pandas as pd
import pytest

from fedvit_utils import paths
from fedvit_utils.keys import SecretKey
from fedvit_utils.study import runner

# calls that make a figure; each must leave at least one image/png in its cell's outputs
FIGURE_CALLS = {"save_figure", "encryption_explorer"}


@pytest.fixture(scope="module")
def run():
    folder = paths.runs_dir() / "smoke"
    if not (folder / "security.json").exists():  # the notebooks did not run in this session
        runner.run_study("smoke", run_dir=folder, publish=False, progress=False)
    return folder


@pytest.fixture(scope="module")
def executed(run):
    """The executed notebooks of this session: nbval's (make test), else papermill's (this file alone)."""
    folder = paths.runs_dir() / "nbval"
    if not folder.is_dir():
        folder = run / "notebooks"
    found = {nb.stem: nbformat.read(nb, as_version=4) for nb in sorted(folder.glob("[0-9][0-9]_*.ipynb"))}
    assert sorted(found) == [nb.stem for nb in runner.notebooks()], f"not every notebook ran into {folder}"
    return found


def _figure_calls(source: str) -> int:
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)]
    return sum(getattr(c.func, "attr", getattr(c.func, "id", None)) in FIGURE_CALLS for c in calls)


def test_every_figure_is_shown_inline(executed):
    """A cell that makes a figure shows it as a real PNG (not "<Figure size 640x360 with 2 Axes>")."""
    for name, nb in executed.items():
        for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            wanted = _figure_calls(cell.source)
            pngs = [base64.b64decode(o.data["image/png"]) for o in cell.outputs if "image/png" in o.get("data", {})]
            assert len(pngs) >= wanted, f"{name} code cell {i}: {wanted} figure calls, {len(pngs)} images"
            for png in pngs:
                width, height = struct.unpack(">II", png[16:24])
                assert png[:4] == b"\x89PNG" and width > 100 and height > 100, f"{name} code cell {i}"
            text = [o.data.get("text/plain", "") for o in cell.outputs if "data" in o]
            assert not any("<Figure size" in t for t in text), f"{name} code cell {i} shows a Figure's repr"
    assert sum(_figure_calls(c.source) for nb in executed.values() for c in nb.cells if c.cell_type == "code") >= 10


def test_executed_notebooks_are_quiet_and_small(executed):
    """No error, nothing on stderr (warnings), no flood of progress text, and a small notebook 02."""
    for name, nb in executed.items():
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
        assert not stderr, f"{name} wrote to stderr: {stderr[:3]}"
        assert sum(o.output_type == "stream" for o in outputs) <= 20, f"{name}: too many stream outputs"
    size = len(nbformat.writes(executed["02_federated_training"]))
    assert size < 200_000, f"executed 02 is {size} bytes"


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


def test_no_key_material_left_the_keys_folder(run, executed):
    keys = run / "keys"
    assert (keys.stat().st_mode & 0o077) == 0, "keys/ must be owner-only"
    files = sorted(keys.rglob("*.key"))
    assert len(files) == 10 and all((f.stat().st_mode & 0o077) == 0 for f in files)
    keys = [SecretKey.load(f) for f in files]
    orders = [" " + " ".join(map(str, k.block_permutation.tolist())) + " " for k in keys]
    entries = [f"{v:.8f}" for k in keys for v in k.matrix.ravel()[:4]]  # E_a entries as numpy prints them
    for name, nb in executed.items():
        text = nbformat.writes(nb)
        numbers = " " + " ".join(re.findall(r"\d+", text)) + " "  # every integer, however it was formatted
        assert not [o for o in orders if o in numbers], f"{name} shows a client's block permutation"
        assert not [e for e in entries if e in text], f"{name} shows a client's E_a"
        if name != "00_how_it_works":  # 00 shows demo keys from a published seed, on purpose
            assert not re.search(r"\.(block_permutation|inverse_matrix|matrix)\b", text), name


def test_table1_spread_counts_every_identical_prediction(run):
    doc = json.loads((run / "table1_spread.json").read_text())
    (row,) = doc["rows"]  # CIFAR-10 only: CIFAR-100 was not run
    assert row["runs"] == 1 and row["identical_predictions"] == "100 of 100"
    assert row["integrated_model_encrypted_mean"] == row["integrated_model_plain_mean"]


def test_the_cloud_answers_as_the_plain_model(run):
    """Notebook 08: predictions served on encrypted images equal the plain model's on plain images (Eq. 14)."""
    table = pd.read_csv(paths.figures_dir(run) / "cloud_predictions.csv")
    assert len(table) == 2 and (table["images"] > 0).all()
    assert (table["identical to plain model on plain images"] == table["images"]).all()
