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
# # 2. Federated training and the centralized baseline
#
# FedAvg (McMahan et al. 2017): each round every client trains the integrated model for one epoch on
# its own images (SGD, lr 1e-3, momentum 0.9, batch 8, cross-entropy — Sec. 4.1), and the server
# averages the clients' weights, weighted by their numbers of examples. The baseline trains the same
# model centrally on the same images for the same number of epochs. Both checkpoint after every
# round, so re-running this notebook resumes (or, if finished, just reloads) the run. The clients'
# splits come from notebook 1.

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

from fedvit_utils.study import figures
from fedvit_utils.study.parameters import open_run

run = open_run("02_federated_training", globals())  # checks every parameter, loads the profile, opens the run

# %%
for name in run.profile.datasets:
    data = run.load_data(name)
    run.train(data, progress=progress)
    fl, base = run.history(name, "federated"), run.history(name, "centralized")
    fig = figures.accuracy_curves(fl, base, f"Accuracy per round · {run.label(data)}", chance=1 / data.num_classes)
    display(run.save_figure(fig, f"accuracy_curves_{name}"))
    integrated = fl[(fl["model"] == "integrated") & (fl["data"] == "test") & (fl["scope"] == "all")]
    display(integrated[["round", "accuracy", "loss"]].set_index("round"))  # one row per round, no row numbers
