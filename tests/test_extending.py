"""The recipes of EXTENDING.md, each done exactly as written there: a key kind, a strategy, a dataset, a notebook.

Every registration is undone after its test, so the other test files see only the project's own kinds,
strategies and datasets.
"""

from __future__ import annotations

import math

import jupytext
import numpy as np
import pytest
import test_notebooks
import torch
from PIL import Image

from fedvit_utils import datasets, keys, paths
from fedvit_utils.data import load_dataset
from fedvit_utils.datasets import DatasetSpec, register_dataset
from fedvit_utils.encryption import decrypt_images, encrypt_images, encrypt_images_reference
from fedvit_utils.evaluation import verify_encryption
from fedvit_utils.federated import checkpoints, strategies
from fedvit_utils.federated.server import run_federated
from fedvit_utils.federated.strategies import FedAvgStrategy, register_strategy
from fedvit_utils.keys import KeyKind, SecretKey, register_key_kind
from fedvit_utils.models import build_model
from fedvit_utils.profiles import ProfileError, load_profile
from fedvit_utils.security.visual import key_space
from fedvit_utils.study import parameters, runner
from fedvit_utils.study.run import StudyRun

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- 1. a new key kind -------------------------------------------------------------------------------
class SignedPermutationKind(KeyKind):
    """E_a a signed permutation: pixels move and some change sign; orthogonal, so E_a^-1 = E_a^T exactly."""

    name = "signed_permutation"
    orthogonal = True

    def draw(self, rng, length, max_condition):
        matrix = np.zeros((length, length))
        matrix[np.arange(length), rng.permutation(length)] = rng.choice([-1.0, 1.0], size=length)
        return matrix, None

    def parts(self, matrix, pixel_permutation):
        return None, matrix.T.copy()

    def space(self, length):
        return (math.lgamma(length + 1) + length * math.log(2)) / math.log(10), 0, "L! 2^L signed permutations"


@pytest.fixture
def signed_permutation():
    kind = register_key_kind(SignedPermutationKind())
    yield kind
    del keys.KEY_KIND_REGISTRY[kind.name]


def test_a_new_key_kind_passes_eq14_through_the_study(signed_permutation, tmp_path, cifar_root):
    profile = load_profile("smoke", key_kind="signed_permutation")  # profiles accept the registered name
    run = StudyRun.open(profile, tmp_path / "run", cifar_root)
    run.preflight()
    data = run.write_partition("cifar10")
    model = build_model(profile, data.num_classes)  # Eq. 14 holds for any weights
    client_keys = run.create_keys("cifar10", model)  # drawn, saved 0600, and loaded back on a rerun
    assert {k.kind for k in client_keys} == {"signed_permutation"}
    assert run.create_keys("cifar10", model) == client_keys

    check = verify_encryption(model, data.test.images, data.test.labels, data.splits.test, client_keys,
                              run.predictor(model))
    assert len(check) == profile.num_clients and (check["identical_predictions"] == 1.0).all()
    assert check["max_abs_logit_diff"].max() < 1e-4

    key = client_keys[0]
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(encrypt_images(x, key), encrypt_images_reference(x, key), atol=1e-12)
    assert torch.equal(decrypt_images(encrypt_images(x, key), key), x)  # a signed permutation is exact
    key.save(tmp_path / "one.key")
    assert SecretKey.load(tmp_path / "one.key") == key
    assert "signed_permutation" in set(key_space(32, 8)["kind"])


def test_an_unregistered_key_kind_is_refused_by_name():
    with pytest.raises(ProfileError, match="key_kind='signed_permutation'.*choose from"):
        load_profile("smoke", key_kind="signed_permutation")


# -- 2. a new aggregation strategy -------------------------------------------------------------------
class HalfStepFedAvg(FedAvgStrategy):
    """FedAvg with a server learning rate of 0.5: the global model moves half way to the clients' mean."""

    name = "fedavg_half_step"

    def integrate(self, mean):
        current = self.model.state_dict()  # the global weights of this round
        self.model.load_state_dict({k: current[k] + 0.5 * (v - current[k]) if v.is_floating_point() else v
                                    for k, v in mean.items()})


@pytest.fixture
def half_step():
    cls = register_strategy(HalfStepFedAvg)
    yield cls
    del strategies.STRATEGIES[cls.name]


def _one_round(tmp_path, cifar_root, aggregation):
    run = StudyRun.open(load_profile("smoke", aggregation=aggregation, rounds=1), tmp_path / aggregation, cifar_root)
    out = run.dataset_dir("cifar10") / "federated"
    run_federated(run.profile, run.write_partition("cifar10"), out, run.device, progress=False)
    return run.profile, checkpoints.load_model_state(out)


def test_a_new_strategy_runs_a_federated_training(half_step, tmp_path, cifar_root):
    profile, half = _one_round(tmp_path, cifar_root, "fedavg_half_step")
    _, full = _one_round(tmp_path, cifar_root, "fedavg")
    start = build_model(profile, 10).state_dict()  # the same initial weights (training_seed)
    for k, v in half.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, start[k] + 0.5 * (full[k] - start[k]), atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(half[k], full[k]) for k in half)


# -- 3. a new dataset --------------------------------------------------------------------------------
@pytest.fixture
def shapes_dataset(tmp_path):
    spec = register_dataset(DatasetSpec("shapes", num_classes=2))
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for label, name in enumerate(("dark", "light")):
            folder = tmp_path / "data" / "shapes" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 128, (32, 32, 3)) + 128 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:04d}.png")
    yield spec, tmp_path / "data"
    del datasets.DATASETS[spec.name]


def test_a_new_dataset_is_registered_loaded_and_trained_on(shapes_dataset, tmp_path):
    spec, root = shapes_dataset
    train = load_dataset("shapes", "train", root)
    assert train.images.shape == (12, 3, 32, 32) and train.classes == ["dark", "light"]
    profile = load_profile("smoke", datasets=["shapes"], num_clients=2, train_per_client=4, test_per_client=2,
                           max_per_class=None, rounds=1)
    run = StudyRun.open(profile, tmp_path / "run", root)
    data = run.write_partition("shapes")
    assert data.num_classes == spec.num_classes == 2
    out = run_federated(profile, data, run.dataset_dir("shapes") / "federated", run.device, progress=False)
    assert checkpoints.load_model_state(out)["head.weight"].shape[0] == 2


# -- 4. a new notebook -------------------------------------------------------------------------------
def new_notebook_script() -> str:
    """notebook_scripts/08_my_study.py as the recipe writes it: parameters cell, open_run, package calls only."""
    params = "\n".join(f"{p.name} = {p.default!r}  # type: {p.type}  as in every study notebook"
                       for p in parameters.COMMON)
    return (
        "# %% [markdown]\n# # 8. My study\n#\n# One figure from the package, saved into the run.\n\n"
        f'# %% tags=["parameters"]\n{params}\n\n'
        "# %%\nfrom fedvit_utils import data\nfrom fedvit_utils.study import figures\n"
        "from fedvit_utils.study.parameters import open_run\n\n"
        'run = open_run("08_my_study", globals())\n\n'
        '# %%\nimage = data.photographs(["astronaut"], size=32)[0]\n'
        'run.save_figure(figures.figure2(image, block_size=8, seed=0), "my_study")\n'
    )


@pytest.fixture
def my_study(tmp_path, monkeypatch):
    nbdir, scriptdir = tmp_path / "notebooks", tmp_path / "notebook_scripts"
    nbdir.mkdir()
    scriptdir.mkdir()
    script = scriptdir / "08_my_study.py"
    script.write_text(new_notebook_script())
    notebook = jupytext.read(script)  # `jupytext --to ipynb notebook_scripts/08_my_study.py`
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(notebook, nbdir / "08_my_study.ipynb")
    jupytext.write(jupytext.read(nbdir / "08_my_study.ipynb"), script, fmt="py:percent")  # paired: same cells
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(paths, "NOTEBOOK_SCRIPTS_DIR", scriptdir)
    return nbdir / "08_my_study.ipynb"


def test_a_new_notebook_passes_the_checks_every_study_notebook_passes(my_study):
    assert runner.notebooks() == [my_study]  # the runner finds it by its number
    test_notebooks.test_source_notebook_is_clean_and_paired(my_study)
    test_notebooks.test_parameters_are_declared_typed_and_checked_first(my_study)
    test_notebooks.test_study_notebooks_only_call_the_package(my_study)


@pytest.mark.slow
def test_a_new_notebook_runs_in_the_study(my_study, tmp_path, cifar_root):
    out = runner.run_study("smoke", run_dir=tmp_path / "run", data=cifar_root, publish=False, progress=False,
                           only=["08"])
    assert (out / "figures" / "my_study.png").stat().st_size > 0
    assert (out / "notebooks" / "08_my_study.ipynb").exists()
