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
# # 7. Table 1 with its spread over seeds
#
# The paper gives one number per cell of Table 1, with no seeds. Here the same profile is run with
# other training seeds (model initialisation and batch order) and key seeds, and each cell becomes a
# mean ± standard deviation over the runs, beside the count of test images whose prediction was
# identical between the encrypted and the plain path over every client of every run (Eq. 14).
# `spread_runs` lists the run folders (`make table1-spread` runs the seeds and passes them); by
# default this run alone, which gives no spread.

# %% tags=["parameters"]
profile = None  # type: str|None  smoke | quick | cpu | paper, or a YAML file; None: $FEDVIT_PROFILE, else quick
run_dir = None  # type: str|None  run folder; None: runs/<profile>
data_root = None  # type: str|None  data folder; None: $FEDVIT_DATA, else the default (docs/reproducibility.md#data)
partition_seed = None  # type: int|None  seed of the client partition; None: the profile's
training_seed = None  # type: int|None  seed of model initialisation and batch order; None: the profile's
key_seed = None  # type: int|None  seed of the clients' demo keys (a published seed makes a public key)
progress = None  # type: bool|None  progress bars; None: shown in JupyterLab, not under papermill or nbval
spread_runs = None  # type: list|None  run folders of the same profile with other seeds; None: this run only

# %%
from fedvit_utils.study import table1
from fedvit_utils.study.parameters import open_run
from fedvit_utils.study.run import read_table1_records

run = open_run("07_table1_spread", globals())  # checks every parameter, loads the profile, opens the run
records = read_table1_records(spread_runs or [run.folder])
spread = table1.spread_table(records)
run.write_record("table1_spread", {"runs": [r["folder"] for r in records], "rows": spread.to_dict(orient="records")})
run.save_table(spread, "table1_spread", f"Table 1 over {len(records)} run(s) of one profile, mean and sample "
                                        f"standard deviation · {records[0]['table1']['label']}")
