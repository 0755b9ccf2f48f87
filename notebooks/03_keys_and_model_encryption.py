# ---
# jupyter:
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
# Key files are written owner-only (0600) into the run's `keys/` folder, which git ignores. Nothing
# here prints a key; tables show an 8-digit fingerprint.

# %% tags=["parameters"]
profile = "smoke"  # parameter set: smoke (tests) | quick (study default) | cpu | paper
run_dir = None  # run folder; None -> runs/<profile>
data_root = None  # dataset folder; None -> $FEDVIT_DATA (ImageFolder tree or torchvision CIFAR files)
partition_seed = 0  # seed of the client partition
training_seed = 0  # seed of model initialisation and batch order
key_seed = 0  # seed of the clients' demo keys (a published seed makes a public key)

# %%
from IPython.display import display

from fedvit_utils import baseline, experiment

s = experiment.setup(profile, run_dir, data_root, partition_seed, training_seed, key_seed)
cfg, tasks = s.cfg, s.tasks

# %%
for task in tasks:
    model = baseline.load_trained(task, "federated")
    keys = experiment.keys_for_clients(task, model)
    check = experiment.encryption_check(task, model, keys)
    experiment.write_json(task.out_dir / "encryption_check.json", {
        "profile": cfg.name, "dataset": task.dataset, **task.seeds(), "key_kind": cfg.key_kind,
        "clients": check.to_dict(orient="records")})
    print(keys[0])  # shape and fingerprint only: a SecretKey never prints its matrix or permutation
    display(check)
