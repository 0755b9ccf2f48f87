# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Secret keys and model encryption
#
# After the last integration every client draws its own secret key (Sec. 3.2): a block permutation
# $l_e$ (Eq. 4) defining $\mathbf{E}_b$ (Eq. 5–6) and an invertible $L \times L$ matrix
# $\mathbf{E}_a$ (Eq. 2). It encrypts its copy of the integrated model — patch embedding
# $\hat{\mathbf{E}} = \mathbf{E}_a \mathbf{E}$ (Eq. 3), position embedding
# $\hat{\mathbf{E}}_{pos} = \mathbf{E}_b \mathbf{E}_{pos}$ (Eq. 8) — and its test images (Eq. 12).
# Eq. (14) says the encrypted model on encrypted images computes exactly what the plain model computes
# on plain images. We check that on every client's test split, in float32.
#
# Key files are written owner-only (0600) into the run's `keys/` folder, which git ignores, and are
# never replaced: rerunning this notebook loads them. Nothing here prints a key; tables show an
# 8-digit fingerprint.

# %% tags=["parameters"]
profile = None  # type: str|None  smoke | quick | cpu | paper, or a YAML file; None: $FEDVIT_PROFILE, else quick
run_dir = None  # type: str|None  run folder; None: runs/<profile>
data_root = None  # type: str|None  data folder; None: $FEDVIT_DATA, else the default (docs/reproducibility.md#data)
partition_seed = None  # type: int|None  seed of the client partition; None: the profile's
training_seed = None  # type: int|None  seed of model initialisation and batch order; None: the profile's
key_seed = None  # type: int|None  seed of the clients' demo keys (a published seed makes a public key)
progress = None  # type: bool|None  progress bars; None: shown in JupyterLab, not under papermill or nbval

# %%
from IPython.display import display

from fedvit_utils.evaluation import verify_encryption
from fedvit_utils.study.parameters import open_run

run = open_run("03_keys_and_model_encryption", globals())  # checks every parameter, loads the profile, opens the run

# %%
for name in run.profile.datasets:
    data = run.load_data(name)
    model = run.trained_model(name, "federated")
    keys = run.create_keys(name, model)
    check = verify_encryption(model, data.test.images, data.test.labels, data.splits.test, keys,
                              run.predictor(model))
    run.write_encryption_check(name, check)
    print(keys[0])  # shape and fingerprint only: a SecretKey never prints its matrix or permutation
    display(check)
