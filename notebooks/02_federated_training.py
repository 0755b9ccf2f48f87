# ---
# jupyter:
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
# round, so re-running this notebook resumes (or, if finished, just reloads) the run.

# %% tags=["parameters"]
profile = "smoke"  # parameter set: smoke (tests) | quick (study default) | cpu | paper
run_dir = None  # run folder; None -> runs/<profile>
data_root = None  # dataset folder; None -> $FEDVIT_DATA (ImageFolder tree or torchvision CIFAR files)
partition_seed = 0  # seed of the client partition
training_seed = 0  # seed of model initialisation and batch order
key_seed = 0  # seed of the clients' demo keys (a published seed makes a public key)
progress = True  # tqdm progress bars

# %%
from IPython.display import display

from fedvit_utils import baseline, experiment, plotting, records, server

s = experiment.setup(profile, run_dir, data_root, partition_seed, training_seed, key_seed)
cfg, run, figures, tasks, hardware = s.cfg, s.run, s.figures, s.tasks, s.hardware

# %%
for task in tasks:
    fl_dir = server.run_federated(task, progress=progress)
    base_dir = baseline.run_centralized(task, progress=progress)
    fl, base = records.load_history(fl_dir), records.load_history(base_dir)
    fig = plotting.accuracy_curves(fl, base, "Accuracy per round · " + experiment.run_label(cfg, task, hardware))
    fig.savefig(figures / f"accuracy_curves_{task.dataset}.png", dpi=120)
    display(fig)
    display(fl[(fl["model"] == "global") & (fl["client"].astype(str) == "all")][["round", "accuracy", "loss"]])
