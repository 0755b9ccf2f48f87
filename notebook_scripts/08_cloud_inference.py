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
# # 8. The cloud: a model server that holds only encrypted models and sees only encrypted images
#
# The paper's purpose (Sec. 1, Fig. 1): after federated training, each client encrypts its copy of the
# integrated model with its own secret key (Eq. 3, 8) and hands it to a cloud that runs it; the client
# then sends images encrypted with the same key (Eq. 9–13) and gets the plain model's answers back
# (Eq. 14). Here the cloud is the project's model server (`serving/`, docs/serving.md): a Ray Serve
# app on loopback, started by this notebook unless `server_url` names a running one. Two clients of
# this run (notebook 02's integrated model, notebook 03's keys) upload, query, and one of them queries
# the other's model.
#
# The server is the paper's cloud, not an FL participant: it never holds the plain integrated model
# (a participant holding it could take the key off the encrypted weights, [docs/security.md](../docs/security.md)).
# What the cloud can still learn from what it stores and sees is measured in section 7 of
# [06_security](06_security.ipynb), "The cloud's view", and summarised in [docs/security.md](../docs/security.md).

# %% tags=["parameters"]
profile = None  # type: str|None  smoke | quick | cpu | paper, or a YAML file; None: $FEDVIT_PROFILE, else quick
run_dir = None  # type: str|None  run folder; None: runs/<profile>
data_root = None  # type: str|None  data folder; None: $FEDVIT_DATA, else the default (docs/reproducibility.md#data)
partition_seed = None  # type: int|None  seed of the client partition; None: the profile's
training_seed = None  # type: int|None  seed of model initialisation and batch order; None: the profile's
key_seed = None  # type: int|None  seed of the clients' demo keys (a published seed makes a public key)
progress = None  # type: bool|None  progress bars; None: shown in JupyterLab, not under papermill or nbval
server_url = None  # type: str|None  a running model server (http://host:port); None: start one on loopback here
query_images = 16  # type: int  test images each client sends

# %%
from fedvit_serve.scenario import CloudScenario
from IPython.display import display

from fedvit_utils.study.parameters import open_run

run = open_run("08_cloud_inference", globals())  # checks every parameter, loads the profile, opens the run
cloud = CloudScenario.open(run, server_url, clients=2, images=query_images)

# %% [markdown]
# ## What each client keeps
# Its secret key (shown by fingerprint only), the plain integrated model and its plain images. None of
# these leaves the client.

# %%
display(cloud.kept())

# %% [markdown]
# ## What it sends, and what the server stores
# The encrypted model as one safetensors body (tensors, and the architecture as JSON checked against
# the server's allowlist). The preprocessing is folded into the patch embedding before encryption, so
# queries are raw pixels. The store keeps the bodies as received, named by their SHA-256, and one
# checked record per client id.

# %%
display(cloud.upload())
display(cloud.stored())

# %%
run.save_figure(cloud.embeddings_figure(), "cloud_embeddings")

# %% [markdown]
# ## What the server sees of a query
# The client encrypts its images locally; the server decodes exactly the bytes below the plain
# images. A permutation key only moves pixels, so its queries stay uint8; other keys send float32.

# %%
run.save_table(cloud.query(), "cloud_predictions", f"Served predictions on encrypted images vs the plain model on "
                                                 f"plain images (Eq. 14) · {run.label()}")

# %%
run.save_figure(cloud.queries_figure(), "cloud_queries")

# %% [markdown]
# ## One client querying another client's model
# The server answers like any other query: it cannot tell that the images were encrypted with another
# key. The answers are wrong, which only the client can see.

# %%
display(cloud.cross_query())

# %%
cloud.close()  # stops the server this notebook started (none when server_url was given)
