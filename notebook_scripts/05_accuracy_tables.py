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
# # 5. Table 1: integrated model on encrypted images vs the baseline
#
# "Integrated model": each client's encrypted copy of the FedAvg model on that client's encrypted test
# images — the check notebook 3 recorded. "Baseline": the centrally trained model of notebook 2 on plain
# test images. We add the integrated model on plain images and the share of test images whose
# prediction is identical between the plain and the encrypted path (Eq. 14 promises 100%), with the
# paper's numbers beside ours. Our model and data differ from the paper's unless the profile is
# `paper`: see the label.

# %% tags=["parameters"]
profile = None  # type: str|None  smoke | quick | cpu | paper, or a YAML file; None: $FEDVIT_PROFILE, else quick
run_dir = None  # type: str|None  run folder; None: runs/<profile>
data_root = None  # type: str|None  data folder; None: $FEDVIT_DATA, else the default (docs/reproducibility.md#data)
partition_seed = None  # type: int|None  seed of the client partition; None: the profile's
training_seed = None  # type: int|None  seed of model initialisation and batch order; None: the profile's
key_seed = None  # type: int|None  seed of the clients' demo keys (a published seed makes a public key)
progress = None  # type: bool|None  progress bars; None: shown in JupyterLab, not under papermill or nbval

# %%
import pandas as pd

from fedvit_utils.study import table1
from fedvit_utils.study.parameters import open_run

run = open_run("05_accuracy_tables", globals())  # checks every parameter, loads the profile, opens the run

# %%
rows, per_client = [], []
for name in run.profile.datasets:
    data = run.load_data(name)
    clients = run.encryption_check(name)
    rows.append(table1.table1_row(table1.DATASET_NAMES[name], clients, run.baseline_accuracy(data)))
    per_client.append(clients.assign(dataset=name))
if "cifar100" not in run.profile.datasets:
    rows.append(table1.not_run_row("CIFAR-100", "no offline copy on this machine (run profile paper with internet)"))
table = pd.DataFrame(rows)
label = run.label(data)
run.save_table(pd.concat(per_client), "table1_per_client", f"Per-client accuracy · {label}")
run.write_record("table1", {"label": label, "rows": table.to_dict(orient="records")})
run.save_table(table, "table1", f"Table 1 · {label}")
