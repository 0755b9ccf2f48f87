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
# # 4. Encrypted images — the paper's Figure 2
#
# Sec. 3.3 encrypts a test image block by block: split it into $p \times p$ blocks, permute the blocks
# with $\mathbf{E}_b$ (Eq. 9), flatten each block and multiply it by $\mathbf{E}_a^{-1}$ (Eq. 12).
# For Figure 2 the paper draws $\mathbf{E}_a$ like $\mathbf{E}_b$ — a permutation matrix — so the
# encrypted image is a valid image whose pixels are shuffled inside each block.
#
# Here: a real photograph at 224×224 with 16×16 blocks (the paper's setting), then every key kind on
# the photograph and on a CIFAR-10 test image at the block size of this profile's model. Dense keys
# give real-valued images, min–max scaled for display. The keys drawn here are demo keys from a
# published seed and are never saved. This notebook needs no training.
# At the end, an explorer redraws an image, its encryption and its decryption as you change the key
# kind, block size, image and seed (live in JupyterLab; a still picture in executed notebooks).

# %% tags=["parameters"]
profile = None  # type: str|None  smoke | quick | cpu | paper, or a YAML file; None: $FEDVIT_PROFILE, else quick
run_dir = None  # type: str|None  run folder; None: runs/<profile>
data_root = None  # type: str|None  data folder; None: $FEDVIT_DATA, else the default (docs/reproducibility.md#data)
partition_seed = None  # type: int|None  seed of the client partition; None: the profile's
training_seed = None  # type: int|None  seed of model initialisation and batch order; None: the profile's
key_seed = None  # type: int|None  seed of the clients' demo keys (a published seed makes a public key)
progress = None  # type: bool|None  progress bars; None: shown in JupyterLab, not under papermill or nbval
figure_seed = 0  # type: int  seed of the demo keys for the pictures (not secret, never saved)
photo_name = "astronaut"  # type: str  scikit-image photograph: astronaut | coffee | chelsea
photo_block = 16  # type: int  block size for the photograph (the paper's Figure 2 uses 16)
cifar_index = 0  # type: int  which CIFAR-10 test image to show

# %%
from fedvit_utils import data, models
from fedvit_utils.study import explore, figures
from fedvit_utils.study.parameters import open_run

run = open_run("04_encrypted_images", globals())  # checks every parameter, loads the profile, opens the run
photo = data.photographs([photo_name])[0]
cifar_block = models.profile_geometry(run.profile)[1]  # the profile's ViT patch size

# %%
run.save_figure(figures.figure2(photo, photo_block, figure_seed, label=f"{photo_name} (scikit-image) · {run.label()}"),
                "figure2_encrypted_images")

# %%
cifar = run.sample("test", cifar_index + 1, seed=figure_seed).images[cifar_index]
run.save_figure(figures.key_kind_gallery(
    {photo_name: (photo, photo_block), "CIFAR-10 test image (JPEG copy)": (cifar, cifar_block)},
    seed=figure_seed, label=run.label()), "key_kinds_gallery")

# %% [markdown]
# ## Explore: key kind, block size, image, seed
# A permutation key only moves pixels (the encrypted image is a valid image); orthogonal and gaussian
# keys mix every value of a block, so the encrypted image is real-valued and scaled for display. The
# decryption with the same key gives the plain image back (up to float rounding).

# %%
explore.encryption_explorer({"CIFAR-10 test image": cifar, photo_name: photo}, block_sizes=(4, 8, 16), block_size=8,
                            seed=figure_seed, label=run.label())
