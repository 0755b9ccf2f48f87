# ---
# jupyter:
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
# published seed and are never saved.

# %% tags=["parameters"]
profile = "smoke"  # parameter set: smoke (tests) | quick (study default) | cpu | paper
run_dir = None  # run folder; None -> runs/<profile>
data_root = None  # dataset folder; None -> $FEDVIT_DATA (ImageFolder tree or torchvision CIFAR files)
partition_seed = 0  # seed of the client partition (unused here; kept so every notebook takes the same set)
training_seed = 0  # seed of model initialisation and batch order (unused here)
key_seed = 0  # seed of the clients' demo keys (unused here: the pictures use figure_seed)
figure_seed = 0  # seed of the demo keys for the pictures (not secret, never saved)
photo_name = "astronaut"  # skimage.data photograph: astronaut | coffee | chelsea
photo_block = 16  # block size for the photograph (the paper's Figure 2 uses 16)
cifar_block = 8  # block size for the CIFAR-10 image (the profile's patch size)
cifar_index = 0  # which CIFAR-10 test image to show

# %%
from fedvit_utils import data, gallery, paths, study

run = paths.run_dir(profile, run_dir)
figures = paths.run_figures(run)
label = f"profile {profile} · {study.hardware()}"
photo = gallery.photo(photo_name)

# %%
fig2 = gallery.figure2(photo, photo_block, figure_seed, label=f"{photo_name} (scikit-image) · {label}")
fig2.savefig(figures / "figure2_encrypted_images.png", dpi=150)
fig2

# %%
cifar = data.example_image(data_root, split="test", index=cifar_index)
gallery_fig = gallery.key_kind_gallery(
    {photo_name: (photo, photo_block), f"CIFAR-10 test #{cifar_index} (JPEG copy)": (cifar, cifar_block)},
    seed=figure_seed,
    label=label,
)
gallery_fig.savefig(figures / "key_kinds_gallery.png", dpi=150)
gallery_fig
