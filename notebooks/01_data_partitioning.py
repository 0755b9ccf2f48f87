# ---
# jupyter:
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
# (`<run>/<dataset>/partition.json`, with per-client class counts) and plot the class counts.
# For comparison, a label-skewed (Dirichlet, non-IID) split of the same training images.

# %% tags=["parameters"]
profile = "smoke"  # parameter set: smoke (tests) | quick (study default) | cpu | paper
run_dir = None  # run folder; None -> runs/<profile>
data_root = None  # dataset folder; None -> $FEDVIT_DATA (ImageFolder tree or torchvision CIFAR files)
partition_seed = 0  # seed of the client partition
training_seed = 0  # seed of model initialisation and batch order
key_seed = 0  # seed of the clients' demo keys (a published seed makes a public key)
dirichlet_alpha = 0.5  # Dirichlet concentration of the non-IID illustration; smaller is more skewed

# %%
from IPython.display import display

from fedvit_utils import experiment, partition

s = experiment.setup(profile, run_dir, data_root, partition_seed, training_seed, key_seed)
cfg, run, figures, tasks, hardware = s.cfg, s.run, s.figures, s.tasks, s.hardware

# %%
for task in tasks:
    counts = partition.class_counts(task.client_train, task.train.labels.numpy(), task.num_classes)
    title = f"IID partition, {cfg.train_per_client} training images per client · " + experiment.run_label(
        cfg, task, hardware)
    fig = partition.plot_class_counts(counts, task.train.classes, title)
    fig.savefig(figures / f"partition_iid_{task.dataset}.png", dpi=120)
    display(fig)

# %%
for task in tasks:
    skewed = partition.partition(task.train.labels.numpy(), cfg.num_clients, "dirichlet",
                                 cfg.train_per_client, dirichlet_alpha, partition_seed)
    counts = partition.class_counts(skewed, task.train.labels.numpy(), task.num_classes)
    title = f"Dirichlet alpha={dirichlet_alpha} (non-IID, illustration) · " + experiment.run_label(
        cfg, task, hardware)
    fig = partition.plot_class_counts(counts, task.train.classes, title)
    fig.savefig(figures / f"partition_dirichlet_{task.dataset}.png", dpi=120)
    display(fig)
