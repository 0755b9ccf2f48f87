# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Security: what the encryption hides, and what breaks it
#
# The paper claims the scheme protects test images. Here we measure how much, for every key kind:
# 1. **Visual security** — PSNR/SSIM of encrypted against plain images.
# 2. **Key space** — and why its size alone says little.
# 3. **Wrong keys** — another client's key, no key on either side.
# 4. **Known plaintext** — recovering $\mathbf{E}_a^{-1}$ and the block permutation from $k$ known pairs.
# 5. **Key extraction from weights** — every FedAvg participant holds the plain integrated model; with one
#    client's encrypted model, $\hat{\mathbf{E}} = \mathbf{E}_a\mathbf{E}$ (Eq. 3) gives $\mathbf{E}_a$
#    and $\hat{\mathbf{E}}_{pos} = \mathbf{E}_b\mathbf{E}_{pos}$ (Eq. 8) gives the permutation.
# 6. **Ciphertext only** — a greedy jigsaw solver on block-permuted images.
#
# Sizes and the seed of this notebook's demo keys come from the profile's `security` settings; the
# wrong-key study uses the trained model of notebook 2 and the clients' keys of notebook 3.

# %% tags=["parameters"]
profile = None  # type: str|None  smoke | quick | cpu | paper, or a YAML file; None: $FEDVIT_PROFILE, else quick
run_dir = None  # type: str|None  run folder; None: runs/<profile>
data_root = None  # type: str|None  data folder; None: $FEDVIT_DATA, else the project's default (README, Data)
partition_seed = None  # type: int|None  seed of the client partition; None: the profile's
training_seed = None  # type: int|None  seed of model initialisation and batch order; None: the profile's
key_seed = None  # type: int|None  seed of the clients' demo keys (a published seed makes a public key)
progress = True  # type: bool  progress bars (widgets in JupyterLab); the study runner passes False

# %%
import pandas as pd
from IPython.display import Markdown, display

from fedvit_utils import data, models
from fedvit_utils.security import jigsaw, key_extraction, known_plaintext, visual, wrong_keys
from fedvit_utils.study import figures
from fedvit_utils.study.parameters import open_run

run = open_run("06_security", globals())  # checks every parameter, loads the profile, opens the run
settings = run.profile.security
name = run.profile.datasets[0]
model = run.trained_model(name, "federated").cpu()
p = models.patch_size(model)
sample = run.sample("test", settings.n_images, settings.seed)
cifar_label = f"CIFAR-10 test ({run.data_label(sample)})"
cifar = data.to_unit_float(sample.images)
photos = data.to_unit_float(data.photographs())

# %% [markdown]
# ## 1–2. Visual security and key space

# %%
visual_tables = [visual.visual_security(cifar, p, cifar_label, seed=settings.seed),
                 visual.visual_security(photos, 16, "photographs (scikit-image)", seed=settings.seed)]
space = [visual.key_space(32, p), visual.key_space(224, 16)]
display(*visual_tables, *space, Markdown(visual.KEY_SPACE_NOTE))

# %% [markdown]
# ## 3. Wrong keys (the trained integrated model, client keys of notebook 3)

# %%
test = run.load_data(name)
idx = test.client_test_indices()[0]
wrong = wrong_keys.wrong_key_accuracy(model, test.test.images[idx], test.test.labels[idx], run.keys(name),
                                      run.predictor(model), cifar_label)
wrong_summary = wrong_keys.summarize_wrong_keys(wrong)
wrong_summary

# %% [markdown]
# ## 4. Known-plaintext attack

# %%
curve = known_plaintext.known_plaintext_curve(cifar, p, cifar_label, settings.known_pairs, n_unseen=settings.n_unseen,
                                              seed=settings.seed)
photo_curve = known_plaintext.known_plaintext_curve(photos, 16, "photographs 224x224", settings.photo_known_pairs,
                                                    n_unseen=1, seed=settings.seed)
display(curve, photo_curve)

# %% [markdown]
# ## 5–6. Key extraction from the weights; ciphertext-only jigsaw

# %%
extraction = key_extraction.key_extraction_report(model, cifar, cifar_label,
                                                  f"{run.profile.model} {run.profile.model_kwargs}",
                                                  seed=settings.seed)
puzzle = jigsaw.jigsaw_report(cifar, p, cifar_label, seed=settings.seed)
display(extraction, puzzle.describe())

# %%
for table_name, table in {"security_visual": pd.concat(visual_tables), "security_key_space": pd.concat(space),
                          "security_wrong_keys": wrong_summary,
                          "security_known_plaintext": pd.concat([curve, photo_curve]),
                          "security_key_extraction": extraction, "security_jigsaw": puzzle}.items():
    run.save_table(table, table_name)
run.write_record("security", {"security_seed": settings.seed, "wrong_keys": wrong_summary.to_dict(orient="records"),
                              "known_plaintext": curve.to_dict(orient="records"),
                              "key_extraction": extraction.to_dict(orient="records")})
display(run.save_figure(figures.known_plaintext_figure(curve), "security_known_plaintext_cifar"))
run.save_figure(figures.key_kind_gallery({f"CIFAR-10 #{i}": (sample.images[i], p) for i in range(min(4, len(sample)))},
                                         seed=settings.seed, label=run.label()), "security_encrypted_cifar")
