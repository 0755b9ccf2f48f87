# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Table 1: integrated model on encrypted images vs the baseline
#
# "Integrated model": each client's encrypted copy of the FedAvg model on that client's encrypted test
# images (keys from notebook 3). "Baseline": the centrally trained model on plain test images. We add
# the integrated model on plain images and the share of test images whose prediction is identical
# between the plain and the encrypted path (Eq. 14 promises 100%), with the paper's numbers beside
# ours. Our model and data differ from the paper's unless the profile is `paper`: see the label.

# %% tags=["parameters"]
profile = "smoke"  # parameter set: smoke (tests) | quick (study default) | cpu | paper
run_dir = None  # run folder; None -> runs/<profile>
data_root = None  # dataset folder; None -> $FEDVIT_DATA (ImageFolder tree or torchvision CIFAR files)
partition_seed = 0  # seed of the client partition
training_seed = 0  # seed of model initialisation and batch order
key_seed = 0  # seed of the clients' demo keys (a published seed makes a public key)

# %%
import pandas as pd

from fedvit_utils import baseline, experiment, tables

s = experiment.setup(profile, run_dir, data_root, partition_seed, training_seed, key_seed)
cfg, run, figures, tasks, hardware = s.cfg, s.run, s.figures, s.tasks, s.hardware

# %%
rows, per_client = [], []
for task in tasks:
    model = baseline.load_trained(task, "federated")
    clients = experiment.encryption_check(task, model, experiment.keys_for_clients(task, model))
    base_acc = experiment.baseline_accuracy(task, baseline.load_trained(task, "centralized"))
    rows.append(tables.table1_row({"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[task.dataset], clients, base_acc))
    per_client.append(clients.assign(dataset=task.dataset))
if "cifar100" not in cfg.datasets:
    rows.append(tables.not_run_row("CIFAR-100", "no offline copy on this machine (run profile paper with internet)"))
table1 = pd.DataFrame(rows)
label = experiment.run_label(cfg, tasks[0], hardware)
tables.save_table(table1, figures, "table1", f"Table 1 · {label}")
tables.save_table(pd.concat(per_client), figures, "table1_per_client", f"Per-client accuracy · {label}")
experiment.write_json(run / "table1.json", {"profile": cfg.name, "label": label, **tasks[0].seeds(),
                                            "rows": table1.to_dict(orient="records")})
table1
