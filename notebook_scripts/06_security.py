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
# 7. **The cloud's view** — what a curious cloud that serves one client recovers from what it holds: the
#    client's encrypted model, n of its encrypted queries under one key, and public images of the same kind;
#    no plaintext–ciphertext pair and not the plain model.
#
# Each section states first what its attacker is assumed to see — that assumption, more than the key kind,
# decides the outcome — and then what a row of its table means.
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
    cloud_study,
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
#
# **Who sees what.** An onlooker with one encrypted image and nothing else: no key, no model, no other image.
# The first table scores each encrypted image against its plain original (PSNR, SSIM), per key kind and per key
# part (the block permutation alone, the block transform alone, both); an unrelated test image gives the level of
# "no resemblance". The second counts keys: how many block orders and block transforms there are. It is an upper
# bound on a brute-force search, and the note under it says why no attack below searches that space.

# %%
visual_tables = [visual.visual_security(images, p, label, seed=settings.seed),
                 visual.visual_security(photos, 16, "photographs (scikit-image)", seed=settings.seed)]
space = [visual.key_space(models.input_size(model), p), visual.key_space(224, 16)]
display(*visual_tables, *space, Markdown(visual.KEY_SPACE_NOTE))

# %% [markdown]
# ## 3. Wrong keys (the trained integrated model, independent demo keys of every kind)
#
# **Who sees what.** Someone who holds an encrypted model or encrypted images, but not the matching key: another
# client (its own key, the wrong one here), or a holder of the plain model fed encrypted images, or of an encrypted
# model fed plain images. No attack is run; the table asks how much the mismatched pair still classifies.
#
# **The table.** One row per key kind and case: accuracy, mean over independent keys, its range and standard error.
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
# **Who sees what.** An attacker who holds $k$ pairs (plain image, the same image encrypted) under the client's key,
# and other ciphertexts of that key to decrypt. It matches encrypted block positions to plain ones, then fits
# $\mathbf{E}_a$ by least squares (or orthogonal Procrustes) on the matched blocks; it needs neither model.
#
# **The table.** One row per key kind and $k$, over random draws: each draw is a fresh key and $k$ fresh known
# images (nested over $k$), scored on the same unseen images; "exact" = every block placed and every unseen image
# within half an 8-bit level of the original. PSNR is of the decrypted unseen images; the worst image shows the
# spread. The photographs row repeats it at 224×224 with 16×16 blocks.

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
# **Who sees what.** A FedAvg participant: it holds the plain integrated model (every client does) and one client's
# encrypted model. $\hat{\mathbf{E}} = \mathbf{E}_a\mathbf{E}$ (Eq. 3) next to $\mathbf{E}$ gives $\mathbf{E}_a$ by
# least squares (by column matching for permutation keys), and $\hat{\mathbf{E}}_{pos}$ next to $\mathbf{E}_{pos}$
# gives the block order. No image pair is needed.
#
# **The tables.** Per model and key kind: keys recovered exactly, blocks placed, PSNR of decrypted test images.
# Besides the trained model, freshly initialised ViTs of the same geometry with the widths in
# `security.extraction_widths`: with $D < L$ the weights fix $\mathbf{E}_a$ only on the row space of $\mathbf{W}$.
# For dense keys with $D < L$, `psnr_with_block_prior_*` adds the block statistics (mean, covariance) of public
# training images to what the weights give. The second table changes the position embedding (two rows equal, all
# zero, none) and shows when its rows give the block order away.

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
#
# **Who sees what.** First, ciphertexts of the block permutation alone (no $\mathbf{E}_a$), one image at a time and
# nothing else: a greedy jigsaw solver puts tiles back by how well their edges continue. Second, an attacker who
# already took $\mathbf{E}_a$ off the weights (section 5) but not the block order, and holds some of the client's
# ciphertexts: all of them share one $\mathbf{E}_b$, so each image votes on every seam.
#
# **The tables.** Blocks placed (share of positions right), images solved completely, and for the second, keys
# whose every block was placed, per number of ciphertexts used.

# %%
puzzle = jigsaw.jigsaw_report(images[: settings.jigsaw_images], p, label, seed=settings.seed)
after = position_embedding.jigsaw_after_extraction(model, sample.images, prep, label, settings.jigsaw_ciphertexts,
                                                   settings.n_unseen, n_keys=settings.n_keys, seed=settings.seed)
after_summary = position_embedding.summarize_jigsaw_after_extraction(after)
display(jigsaw.summarize_jigsaw(puzzle), after_summary)

# %% [markdown]
# ## 7. The cloud's view: one client's encrypted model and queries, public images, no pair
#
# **Who sees what.** The cloud that serves a client holds (1) the client's encrypted model: $\hat{\mathbf{E}}$,
# $\hat{\mathbf{E}}_{pos}$ and every other weight in plain; (2) $n$ of the client's encrypted queries, all under
# one key (here: the client's test images); (3) public images of the same kind with their labels (here: the
# training split, which holds none of the queries); (4) the scheme's code and settings, the key kind included.
# It holds no plaintext–ciphertext pair and not the plain model. The plain model is used below only to *score*
# what the cloud recovered. Notebook [08_cloud_inference](08_cloud_inference.ipynb) shows this cloud at work:
# the model server of [docs/serving.md](../docs/serving.md), what it stores and what it receives.
#
# **The attacks** (`security.cloud_view`, `security.cloud_relearn`). Every block of every query goes through the
# same $\mathbf{E}_a^{-1}$ (Eq. 12), so the pooled ciphertext blocks are the public block distribution seen
# through one unknown linear map, and every statistic is a constraint on it:
# - *orthogonal keys*: the eigenvectors of the ciphertext block covariance are the public ones turned by the key;
#   their signs come from the mean (or the third moment); only the leading components are kept;
# - *Gaussian keys*: whitening both sides leaves an unknown rotation, sought from the cross-block covariance or
#   the fourth-order moments (components with distinct values of those statistics are identified);
# - *permutation keys*: a quadratic assignment matches the pixel correlation matrices; the flips and turns of a
#   block that leave them unchanged, and the block order, come from the public per-position mean blocks.
# For the dense kinds the attacker picks method and number of components on its own simulation (half the public
# images, its own key), so nothing is tuned on the client's images. The block order has three candidates: the
# per-position means of the recovered blocks; the greedy jigsaw on them; and $\hat{\mathbf{E}}_{pos}$ alone, whose
# rows a trained model makes similar for nearby positions, laid on the grid by a quadratic assignment (up to the
# grid's flips and turns). The attacker keeps the one whose assembled images have the smoothest seams, which it can
# compute without the answer. Separately, with no query at all, the cloud re-learns the plain patch and position
# embeddings on public images (every other weight frozen) and reads the key off $\hat{\mathbf{E}}$ and
# $\hat{\mathbf{E}}_{pos}$ as in section 5.
#
# **The tables.** `security_cloud_view`: one row per key kind, attack and $n$, over the keys: blocks placed (own
# order; by each candidate alone; for $\hat{\mathbf{E}}_{pos}$ also with the best of its flips and turns, what it
# gives with no query at all), block content (recovered blocks in their *true* places) and whole images
# (in the attacker's order) as PSNR/SSIM against the originals, the plain model's accuracy on the recovered images,
# and the attack's seconds per key on this machine. `security_cloud_references` scores, the same way, the originals
# and two stand-ins: every block replaced by the public mean block (what knowing nothing gives), and by its own true
# mean colour. `security_cloud_key_refresh`: whether refreshing the key would split the cloud's queries, measured as
# how well two encrypted models of one client map ciphertexts of one key onto the other.

# %%
queries = run.sample("test", max(settings.cloud_queries), settings.seed, name)
public = run.sample("train", settings.cloud_public_images, settings.seed, name)
cloud_label = f"{name} test queries, {name} train as public images ({run.data_label(queries, name)})"
cloud = cloud_study.cloud_view_study(
    model, queries.images, queries.labels, public.images, public.labels, prep, run.predictor(model), cloud_label,
    settings.cloud_queries, n_keys=settings.cloud_keys, n_scored=settings.cloud_scored_images,
    relearn_images=settings.cloud_relearn_images, relearn_epochs=settings.cloud_relearn_epochs, seed=settings.seed)
cloud_summary = cloud_study.summarize_cloud_view(cloud["detail"])
refresh = cloud_study.key_refresh_transfer(model, seed=settings.seed)
caption = run.label(queries, name)
run.save_table(cloud_summary, "security_cloud_view", caption)
run.save_table(cloud["detail"], "security_cloud_view_detail", caption)
run.save_table(cloud["references"], "security_cloud_references", caption)
run.save_table(refresh, "security_cloud_key_refresh", caption)
display(cloud_summary, cloud["references"], refresh,
        run.save_figure(cloud_study.cloud_view_figure(prep.unit(queries.images[:8]), cloud["figure images"],
                                                      max(settings.cloud_queries), caption),
                        "security_cloud_recovered"))

# %% [markdown]
# ### The same attacks at the paper's geometry: 224×224 images, 16×16 blocks
#
# **Who sees what.** The same cloud, at the geometry `security.cloud_geometry` — on the study profiles the
# paper's ViT-B/16: 224×224 images, blocks of $L = 768$ values, $N = 196$ of them per image (the smoke profile
# runs it small). The client's queries are its test images resized to that size, as the paper's clients send them;
# the public images are training images resized the same way. The client also sends the three photographs under the
# same key, and the cloud decrypts them with what it found from the $n$ queries (the `extra_*` columns, and the last
# three columns of the figure). The statistics attack needs no model, and no trained model of this geometry is
# reachable offline (ViT-B/16 at 224 trains at about 0.8 images/s on 2 CPU cores), so this table has no accuracy,
# no re-learned embeddings and no order from $\hat{\mathbf{E}}_{pos}$.
#
# **The table.** `security_cloud_view_224` reads as `security_cloud_view`; `security_cloud_references_224` holds the
# stand-ins at this geometry (the suffix is the image size).

# %%
size, block = settings.cloud_geometry
far_queries = run.sample("test", max(settings.cloud_geometry_queries), settings.seed, name)
far_public = run.sample("train", settings.cloud_geometry_public_images, settings.seed, name)
far_label = (f"{name} test queries, {name} train as public images, resized to {size}x{size} "
             f"({run.data_label(far_queries, name)}); photographs (scikit-image) as further queries")
far = cloud_study.cloud_view_geometry_study(
    far_queries.images, far_public.images, prep, far_label, settings.cloud_geometry_queries, size, block,
    n_keys=settings.cloud_geometry_keys, n_scored=settings.cloud_geometry_scored_images,
    extra=data.photographs(size=size), seed=settings.seed)
run.save_table(far["detail"], f"security_cloud_view_{size}_detail", caption)
run.save_table(far["references"], f"security_cloud_references_{size}", caption)
display(run.save_table(cloud_study.summarize_cloud_view(far["detail"]), f"security_cloud_view_{size}", caption),
        far["references"],
        run.save_figure(cloud_study.cloud_view_figure(far["originals"], far["figure images"],
                                                      max(settings.cloud_geometry_queries), caption),
                        f"security_cloud_recovered_{size}"))

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
