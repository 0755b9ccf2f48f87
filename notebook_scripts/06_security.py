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
# # 6. Security: what the encryption hides, and what breaks it
#
# The paper claims the scheme protects test images. Here we measure how much, for every key kind, over
# several independent keys and random draws, so that every statement comes with its odds:
# 1. **Visual security** — PSNR/SSIM of encrypted against plain images.
# 2. **Key space** — and why its size alone says little.
# 3. **Wrong keys** — another client's key, no key on either side; mean over keys and its standard error.
# 4. **Known plaintext** — recovering $\mathbf{E}_a^{-1}$ and the block permutation from $k$ known pairs,
#    over random draws of key and known images per $k$.
# 5. **Key extraction from weights** — every FedAvg participant holds the plain integrated model; with one
#    client's encrypted model, $\hat{\mathbf{E}} = \mathbf{E}_a\mathbf{E}$ (Eq. 3) gives $\mathbf{E}_a$
#    ($D \ge L$ and $D < L$) and $\hat{\mathbf{E}}_{pos} = \mathbf{E}_b\mathbf{E}_{pos}$ (Eq. 8) the permutation,
#    when the position embedding allows it.
# 6. **Ciphertext only** — a greedy jigsaw solver on block-permuted images, and on a client's ciphertexts
#    once $\mathbf{E}_a$ is known.
#
# Every study runs on the studied dataset's test images at the model's input size, resized as the model's
# preprocessing resizes them (bicubic; nothing to do for a 32×32 model), with the model's patch size as block
# size; images are encrypted after the model's normalization, as clients encrypt them. Sizes, the dataset and
# the seed of this notebook's demo keys come from the profile's `security` settings; wrong keys, key extraction
# and position embeddings use the trained integrated model of notebook 2.

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
from IPython.display import Markdown, display

from fedvit_utils import data, models
from fedvit_utils.security import (
    jigsaw,
    key_extraction,
    known_plaintext_draws,
    measures,
    position_embedding,
    visual,
    wrong_keys,
)
from fedvit_utils.study import figures
from fedvit_utils.study.parameters import open_run

run = open_run("06_security", globals())  # checks every parameter, loads the profile, opens the run
settings = run.profile.security
name = settings.dataset or run.profile.datasets[0]
model = run.trained_model(name, "federated")
p = models.patch_size(model)
prep = data.Preprocess.for_model(model)
norm = measures.Normalization.of(prep)
sample = run.sample("test", settings.n_images, settings.seed, name)
images = prep.unit(sample.images)  # [0, 1] at the model's input size
label = f"{name} test ({run.data_label(sample, name)}); {measures.resize_label(sample.images, images)}"
photos = data.to_unit_float(data.photographs())
print(label)

# %% [markdown]
# ## 1–2. Visual security and key space

# %%
visual_tables = [visual.visual_security(images, p, label, seed=settings.seed),
                 visual.visual_security(photos, 16, "photographs (scikit-image)", seed=settings.seed)]
space = [visual.key_space(models.input_size(model), p), visual.key_space(224, 16)]
display(*visual_tables, *space, Markdown(visual.KEY_SPACE_NOTE))

# %% [markdown]
# ## 3. Wrong keys (the trained integrated model, independent demo keys of every kind)
#
# Key $i$'s "another client's key" is key $i+1$. The standard error is over keys; `se_above_chance` says how
# many of them the mean lies above a constant guess (`chance`: the share of the most frequent class). The second
# table takes a permutation key apart: which of its parts leaves the plain model something to recognise.

# %%
clients = run.load_data(name)
idx = clients.all_client_test_indices()[: settings.wrong_key_images]
wrong_label = f"{name} clients' test images ({run.data_label(clients)})"
wrong = wrong_keys.wrong_key_accuracy(model, clients.test.images[idx], clients.test.labels[idx], run.predictor(model),
                                      wrong_label, n_keys=settings.n_keys, seed=settings.seed)
wrong_summary = wrong_keys.summarize_wrong_keys(wrong)
leakage = wrong_keys.permutation_key_leakage(model, clients.test.images[idx], clients.test.labels[idx],
                                             run.predictor(model), wrong_label, n_keys=settings.n_keys,
                                             seed=settings.seed)
leakage_summary = wrong_keys.summarize_wrong_keys(leakage)
display(wrong_summary, leakage_summary)

# %% [markdown]
# ## 4. Known-plaintext attack over random draws
#
# Each draw: a fresh key and $k$ fresh known images (nested over $k$), scored on the same unseen images;
# "exact" = every block placed and every unseen image within half an 8-bit level of the original.

# %%
trials = known_plaintext_draws.known_plaintext_trials(
    images, p, label, settings.known_pairs, settings.known_plaintext_draws, settings.n_unseen, norm=norm,
    seed=settings.seed)
photo_trials = known_plaintext_draws.known_plaintext_trials(
    photos, 16, "photographs 224x224 (scikit-image)", settings.photo_known_pairs, 1, 1, norm=norm,
    seed=settings.seed)
known_summary = known_plaintext_draws.summarize_known_plaintext(pd.concat([trials, photo_trials]))
display(known_summary, run.save_figure(figures.known_plaintext_figure(known_summary[known_summary["data"] == label]),
                                       "security_known_plaintext_cifar"))

# %% [markdown]
# ## 5. Key extraction from the weights ($D \ge L$ and $D < L$) and the position-embedding conditions
#
# Besides the trained model, freshly initialised ViTs of the same geometry with the widths in
# `security.extraction_widths`. For dense keys with $D < L$, `psnr_with_block_prior_*` adds the block
# statistics (mean, covariance) of public training images to what the weights give.

# %%
unseen = sample.images[len(sample) - settings.n_unseen :]
prior = run.sample("train", settings.prior_images, settings.seed, name).images
extraction = key_extraction.key_extraction_report(
    key_extraction.models_to_study(model, settings.extraction_widths, settings.seed), unseen, prep, label,
    n_keys=settings.n_keys, seed=settings.seed, prior=prior)
extraction_summary = key_extraction.summarize_key_extraction(extraction)
positions = position_embedding.position_embedding_conditions(model, unseen, prep, run.predictor(model), label,
                                                             n_keys=settings.position_keys, seed=settings.seed)
positions_summary = position_embedding.summarize_position_conditions(positions)
display(extraction_summary, positions_summary)

# %% [markdown]
# ## 6. Ciphertext only: jigsaw on block-permuted images, and on a client's ciphertexts once E_a is known

# %%
puzzle = jigsaw.jigsaw_report(images[: settings.jigsaw_images], p, label, seed=settings.seed)
after = position_embedding.jigsaw_after_extraction(model, sample.images, prep, label, settings.jigsaw_ciphertexts,
                                                   settings.n_unseen, n_keys=settings.n_keys, seed=settings.seed)
after_summary = position_embedding.summarize_jigsaw_after_extraction(after)
display(jigsaw.summarize_jigsaw(puzzle), after_summary)

# %%
tables = {"security_visual": pd.concat(visual_tables), "security_key_space": pd.concat(space),
          "security_wrong_keys": wrong_summary, "security_wrong_keys_detail": wrong,
          "security_permutation_leakage": leakage_summary,
          "security_known_plaintext": known_summary,
          "security_known_plaintext_draws": pd.concat([trials, photo_trials]),
          "security_key_extraction": extraction_summary, "security_key_extraction_detail": extraction,
          "security_position_embedding": positions_summary, "security_jigsaw": jigsaw.summarize_jigsaw(puzzle),
          "security_jigsaw_detail": puzzle,
          "security_jigsaw_after_extraction": after_summary}
for table_name, table in tables.items():
    run.save_table(table, table_name)
run.write_record("security", {"security_seed": settings.seed, "dataset": name, "images": label,
                              **{key: tables[f"security_{key}"].to_dict(orient="records")
                                 for key in ("wrong_keys", "permutation_leakage", "known_plaintext", "key_extraction",
                                             "position_embedding", "jigsaw_after_extraction")}})
run.save_figure(figures.key_kind_gallery({f"{name} #{i}": (sample.images[i], p) for i in range(min(4, len(sample)))},
                                         seed=settings.seed, label=run.label(sample, name)), "security_encrypted_cifar")
