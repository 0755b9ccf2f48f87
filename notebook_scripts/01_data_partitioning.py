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
# # 1. Data partitioning
#
# The paper (Sec. 4.1) gives each of 10 clients 5,000 CIFAR training images and 1,000 test images.
# We draw them class-balanced (IID) with `partition_seed`, record the split in the run folder
# (`<run>/<dataset>/partition.json`, with per-client class counts) and plot the class counts. This
# notebook is the only writer of the partition; every later notebook reads it.
# For comparison, a label-skewed (Dirichlet, non-IID) split of the same training images.

# %% tags=["parameters"]
profile = None  # type: str|None  smoke | quick | cpu | paper, or a YAML file; None: $FEDVIT_PROFILE, else quick
run_dir = None  # type: str|None  run folder; None: runs/<profile>
data_root = None  # type: str|None  data folder; None: $FEDVIT_DATA, else the default (docs/reproducibility.md#data)
partition_seed = None  # type: int|None  seed of the client partition; None: the profile's
training_seed = None  # type: int|None  seed of model initialisation and batch order; None: the profile's
key_seed = None  # type: int|None  seed of the clients' demo keys (a published seed makes a public key)
progress = None  # type: bool|None  progress bars; None: shown in JupyterLab, not under papermill or nbval
dirichlet_alpha = 0.5  # type: float  Dirichlet concentration of the non-IID illustration; smaller is more skewed

# %%
from IPython.display import display

from fedvit_utils import partition
from fedvit_utils.study import figures
from fedvit_utils.study.parameters import open_run

run = open_run("01_data_partitioning", globals())  # checks every parameter, loads the profile, opens the run
datasets = [run.write_partition(name) for name in run.profile.datasets]

# %%
for data in datasets:
    counts = partition.class_counts(data.splits.train, data.train.labels.numpy(), data.num_classes)
    title = f"IID partition, {run.profile.train_per_client} training images per client · {run.label(data)}"
    display(run.save_figure(figures.class_counts_figure(counts, data.train.classes, title),
                            f"partition_iid_{data.name}"))

# %%
for data in datasets:
    p = run.profile
    skewed = partition.partition(data.train.labels.numpy(), p.num_clients, "dirichlet", p.train_per_client,
                                 dirichlet_alpha, p.partition_seed)
    counts = partition.class_counts(skewed, data.train.labels.numpy(), data.num_classes)
    title = f"Dirichlet alpha={dirichlet_alpha} (non-IID, illustration) · {run.label(data)}"
    display(run.save_figure(figures.class_counts_figure(counts, data.train.classes, title),
                            f"partition_dirichlet_{data.name}"))
