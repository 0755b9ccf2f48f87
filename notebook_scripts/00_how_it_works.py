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
# # 0. How it works: blocks, keys, and why the encrypted model sees the same thing
#
# Every step of the scheme on one small image and a tiny, untrained ViT, with the tensors in plain
# sight. Each step is done **by hand** and then compared with the package function the study uses.
# It needs no data folder and no training, and runs in seconds; start here.
#
# 1. The image is cut into $p \times p$ blocks; each block, flattened, is a vector of length
#    $L = p \cdot p \cdot c$ (Eq. 11).
# 2. A key is a block permutation $l_e$ (Eq. 4), written as the matrix $\mathbf{E}_b$ (Eq. 5–6), and an
#    invertible $L \times L$ matrix $\mathbf{E}_a$ (Eq. 2).
# 3. Encrypting an image moves block $l_e(i)$ to place $i$ (Eq. 9) and multiplies it by
#    $\mathbf{E}_a^{-1}$ (Eq. 12): $\hat{b}_i = b_{l_e(i)} \mathbf{E}_a^{-1}$.
# 4. Encrypting the model multiplies the patch embedding $\mathbf{E}$ by $\mathbf{E}_a$ (Eq. 3) and moves
#    the rows of the position embedding with $\mathbf{E}_b$ (Eq. 8).
# 5. So token $i$ of the encrypted path is $\hat{b}_i \mathbf{E}_a\mathbf{E} = b_{l_e(i)}\mathbf{E}$, carrying
#    position row $l_e(i)$: exactly token $l_e(i)$ of the plain path. The tokens are only reordered,
#    attention does not care about order, and the class token is untouched: the output is the same
#    (Eq. 14).
#
# **All keys in this notebook are demo keys** drawn from the published seed `demo_seed` below: anyone
# can rebuild them, so showing them gives nothing away. Real keys are never printed (notebook 03).

# %% tags=["parameters"]
profile = None  # type: str|None  smoke | quick | cpu | paper, or a YAML file; None: $FEDVIT_PROFILE, else quick
run_dir = None  # type: str|None  run folder; None: runs/<profile>
data_root = None  # type: str|None  data folder; None: $FEDVIT_DATA, else the default (docs/reproducibility.md#data)
partition_seed = None  # type: int|None  seed of the client partition; None: the profile's
training_seed = None  # type: int|None  seed of model initialisation and batch order; None: the profile's
key_seed = None  # type: int|None  seed of the clients' demo keys (a published seed makes a public key)
progress = None  # type: bool|None  progress bars; None: shown in JupyterLab, not under papermill or nbval

# %%
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from matplotlib.figure import Figure

from fedvit_utils import data, encryption, keys, model_encryption, models
from fedvit_utils.federated.aggregation import fedavg
from fedvit_utils.security.measures import stretch
from fedvit_utils.study import explore
from fedvit_utils.study.parameters import open_run

run = open_run("00_how_it_works", globals())  # only names the run folder the figures go to; nothing trains
demo_seed = 2024  # published: every key drawn from it is a DEMO key
size, p, c = 32, 8, 3  # image side, block (= ViT patch) side, colour channels
image = data.photographs(["chelsea"], size=size)[0]  # uint8 (3, 32, 32), from scikit-image
x = image[None].double() / 255  # a batch of one image in [0, 1]; the model input here (no normalization)
print(f"image {tuple(x.shape)}; run folder for the figures: {run.folder}")

# %% [markdown]
# ## 1. Blocks (Eq. 11)
# `split_blocks` cuts the image into $N = (32/8)^2 = 16$ blocks in row-major order and flattens each one
# channel-major, $(c, p, p)$, the order of the ViT's patch-embedding weights. Right: the $N \times L$
# matrix of blocks, one row per block.

# %%
blocks = encryption.split_blocks(x, p)  # (1, N, L)
N, L = blocks.shape[1:]
grid = size // p
fig = Figure(figsize=(8, 3.4), layout="constrained")
ax_img, ax_blocks = fig.subplots(1, 2, width_ratios=[1, 1.6])
ax_img.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
ax_img.set_xticks(np.arange(-0.5, size, p), labels=[])
ax_img.set_yticks(np.arange(-0.5, size, p), labels=[])
ax_img.grid(color="white", linewidth=1.5)
for i in range(N):
    ax_img.text(p * (i % grid) + p / 2 - 0.5, p * (i // grid) + p / 2 - 0.5, str(i), color="white", ha="center",
                va="center", fontsize=11, weight="bold")
ax_img.set_title(f"{size}x{size} image, {N} blocks of {p}x{p}", fontsize=9)
ax_blocks.imshow(blocks[0].numpy(), aspect="auto", cmap="gray", interpolation="nearest")
ax_blocks.set_xlabel(f"L = p·p·c = {L} values: red channel, then green, then blue")
ax_blocks.set_ylabel("block i")
ax_blocks.set_title("blocks flattened (Eq. 11)", fontsize=9)
run.save_figure(fig, "how_it_works_1_blocks")

# %% [markdown]
# ## 2. A (demo) key: $l_e$, $\mathbf{E}_b$ and $\mathbf{E}_a$ (Eq. 2, 4–6)
# $\mathbf{E}_b$ is $(N+1) \times (N+1)$: row 0 belongs to the class token and stays put (Eq. 6); row
# $i+1$ has its 1 in column $l_e(i)+1$. $\mathbf{E}_a$ is drawn `orthogonal` here (dense, condition
# number 1); a `permutation` key (the paper's Fig. 2) has one 1 per row and only shuffles a block's values.

# %%
key = keys.generate_key(size, p, c, "orthogonal", seed=demo_seed)  # DEMO key (published seed)
pixel_key = keys.generate_key(size, p, c, "permutation", seed=demo_seed)  # DEMO key, for comparison
l_e = key.block_permutation  # 0-based: encrypted block i is plain block l_e[i]
E_b = np.zeros((N + 1, N + 1))
E_b[0, 0] = 1  # the class token keeps its position row
E_b[1 + np.arange(N), 1 + l_e] = 1
E_a = torch.tensor(key.matrix)  # (L, L) float64
display(Markdown(f"**Demo key** (seed {demo_seed}, published, not a secret): $l_e$ = `{l_e.tolist()}`; "
                 f"cond($\\mathbf{{E}}_a$) = {key.condition_number():.3f}"))
fig = Figure(figsize=(10, 3.3), layout="constrained")
axes = fig.subplots(1, 3)
axes[0].imshow(E_b, cmap="gray_r", interpolation="nearest")
axes[0].set_title("$E_b$ (Eq. 6), (N+1) x (N+1)", fontsize=9)
im = axes[1].imshow(E_a.numpy(), cmap="RdBu_r", vmin=-0.3, vmax=0.3, interpolation="nearest")
axes[1].set_title(f"$E_a$, orthogonal, {L} x {L}", fontsize=9)
fig.colorbar(im, ax=axes[1], shrink=0.8)
rows, cols = np.nonzero(pixel_key.matrix)  # one 1 per row and per column
axes[2].scatter(cols, rows, s=2, color="black")
axes[2].set(xlim=(-0.5, L - 0.5), ylim=(L - 0.5, -0.5), aspect="equal")
axes[2].set_title(f"$E_a$, permutation key, {L} x {L} (dots: the 1s)", fontsize=9)
fig.suptitle(f"demo keys from seed {demo_seed} (public)", fontsize=8)
run.save_figure(fig, "how_it_works_2_keys")

# %% [markdown]
# ## 3. Encrypt one block by hand (Eq. 9–12) and compare with `encrypt_images`
# Encrypted block $i$ is plain block $l_e(i)$, flattened and multiplied by $\mathbf{E}_a^{-1}$ from the right.

# %%
i = 5
b = blocks[0, l_e[i]]  # Eq. 9: the plain block that lands at place i
b_hat = b @ torch.linalg.inv(E_a)  # Eq. 12: b_hat = b E_a^-1
x_hat = encryption.encrypt_images(x, key)  # the package: every block of the batch at once
from_package = encryption.split_blocks(x_hat, p)[0, i]
print(f"block {i} comes from plain block l_e({i}) = {l_e[i]}; "
      f"max |by hand - encrypt_images| = {(b_hat - from_package).abs().max():.1e}")
fig = Figure(figsize=(10, 2.8), layout="constrained")
axes = fig.subplots(1, 4)
axes[0].imshow(b.view(c, p, p).permute(1, 2, 0).numpy(), interpolation="nearest")
axes[0].set_title(f"plain block l_e({i}) = {l_e[i]}", fontsize=9)
axes[1].imshow(stretch(b_hat.view(1, c, p, p))[0].permute(1, 2, 0).numpy(), interpolation="nearest")
axes[1].set_title(f"encrypted block {i},\nby hand (scaled)", fontsize=9)
axes[2].imshow(stretch(x_hat)[0].permute(1, 2, 0).numpy(), interpolation="nearest")
axes[2].set_title("encrypt_images,\northogonal key (scaled)", fontsize=9)
axes[3].imshow(encryption.encrypt_images(x, pixel_key)[0].permute(1, 2, 0).numpy(), interpolation="nearest")
axes[3].set_title("encrypt_images, permutation\nkey: a valid image", fontsize=9)
for ax in axes:
    ax.set_axis_off()
run.save_figure(fig, "how_it_works_3_one_block")

# %% [markdown]
# ## 4. The patch embedding: $\mathbf{E}$ becomes $\hat{\mathbf{E}} = \mathbf{E}_a\mathbf{E}$ (Eq. 3)
# A tiny ViT (width $D = 32$, 2 blocks, untrained: the identity holds for any weights). Its patch
# embedding is a convolution with kernel = stride = $p$, i.e. token $= b\,\mathbf{E} + \text{bias}$ with
# $\mathbf{E}$ = the weight reshaped to $L \times D$. `encrypt_model` returns a copy with $\hat{\mathbf{E}}$.

# %%
torch.manual_seed(0)
model = models.create_vit("vit_tiny_patch16_224", 10, img_size=size, patch_size=p, embed_dim=32, depth=2,
                          num_heads=2).double().eval()
encrypted_model = model_encryption.encrypt_model(model, key)
D = model.embed_dim
E = model.patch_embed.proj.weight.detach().reshape(D, L).T  # (L, D)
E_hat = E_a @ E  # Eq. 3, by hand
E_hat_package = encrypted_model.patch_embed.proj.weight.detach().reshape(D, L).T
print(f"max |E_a E - encrypt_model's weight| = {(E_hat - E_hat_package).abs().max():.1e}")
fig = Figure(figsize=(9, 3.6), layout="constrained")
axes = fig.subplots(1, 2)
for ax, M, title in zip(axes, (E, E_hat), ("$E$ (L x D), plain model", "$\\hat{E} = E_a E$, encrypted model"),
                        strict=True):
    ax.imshow(M.numpy(), aspect="auto", cmap="RdBu_r", vmin=-0.15, vmax=0.15, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("D (embedding)")
    ax.set_ylabel("L (block values)")
run.save_figure(fig, "how_it_works_4_patch_embedding")

# %% [markdown]
# ## 5. The position embedding: rows move, $\hat{\mathbf{E}}_{pos} = \mathbf{E}_b\mathbf{E}_{pos}$ (Eq. 8)
# Row $i+1$ of the encrypted position embedding is row $l_e(i)+1$ of the plain one: the position of the
# block that now sits at place $i$. Row 0 (class token) stays.

# %%
pos = model.pos_embed.detach()[0]  # (N + 1, D)
pos_hat = encrypted_model.pos_embed.detach()[0]
print(f"max |E_b E_pos - encrypt_model's pos_embed| = {(torch.tensor(E_b) @ pos - pos_hat).abs().max():.1e}")
print("row i+1 of the encrypted position embedding comes from row:", (1 + l_e).tolist())
fig = Figure(figsize=(9, 3.6), layout="constrained")
axes = fig.subplots(1, 2)
for ax, M, title in zip(axes, (pos, pos_hat), ("$E_{pos}$, plain", "$\\hat{E}_{pos} = E_b E_{pos}$"), strict=True):
    ax.imshow(M.numpy(), aspect="auto", cmap="RdBu_r", vmin=-0.05, vmax=0.05, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("D")
    ax.set_ylabel("token (0 = class)")
for row in range(1, 4):  # the first few moved rows, labelled with their origin
    axes[1].annotate(f"from row {1 + l_e[row - 1]}", (D - 1, row), xytext=(D + 1, row), fontsize=7,
                     annotation_clip=False, va="center")
run.save_figure(fig, "how_it_works_5_position_embedding")

# %% [markdown]
# ## 6. Eq. 14 at the token level: both paths give the same tokens, reordered
# `_pos_embed` adds the class token and the position embedding to the patch tokens: what the
# transformer blocks see. The encrypted path's tokens, put back in plain order with $l_e$, are the plain
# path's tokens.

# %%
with torch.no_grad():
    tokens = model._pos_embed(model.patch_embed(x))[0]  # (N + 1, D), plain model on the plain image
    tokens_hat = encrypted_model._pos_embed(encrypted_model.patch_embed(x_hat))[0]  # encrypted on encrypted
reordered = torch.empty_like(tokens_hat)
reordered[0] = tokens_hat[0]
reordered[1 + torch.tensor(l_e)] = tokens_hat[1:]  # token i+1 of the encrypted path is token l_e(i)+1
print(f"max |plain tokens - encrypted tokens in plain order| = {(tokens - reordered).abs().max():.1e}")
# The strip left of each panel colours every row by the plain token it holds (dark: first blocks, light:
# last): a smooth ramp in plain order, scrambled where the encrypted path holds the tokens in block order l_e.
origin = torch.arange(tokens.shape[0])
origin_hat = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.tensor(l_e)])  # row i+1 holds token l_e(i)+1
fig = Figure(figsize=(10.5, 3.8), layout="constrained")
axes = fig.subplots(1, 6, width_ratios=[0.07, 1] * 3)
panels = zip(axes[0::2], axes[1::2], (tokens, tokens_hat, reordered), (origin, origin_hat, origin),
             ("plain model, plain image", "encrypted model, encrypted image\n(rows in encrypted block order)",
              "encrypted path, rows put back with $l_e$"), strict=True)
for strip, ax, M, held, title in panels:
    strip.imshow(held[:, None].numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    strip.set_xticks([])
    strip.set_title("token\nheld", fontsize=7)
    ax.imshow(M.numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("D")
    ax.set_yticks([])
axes[0].set_ylabel("row (0 = class token)")
run.save_figure(fig, "how_it_works_6_tokens")

# %% [markdown]
# ## 7. Equal logits; and what a wrong key or a plain model gives
# Self-attention treats the tokens as a set (each token carries its own position), and the classifier
# reads the class token, which never moved: the logits are equal up to float rounding. With another
# client's key, or with the plain model on encrypted images, the tokens are unrelated to the plain ones
# (cosine similarity near 0) and so are the logits.

# %%
other_key = keys.generate_key(size, p, c, "orthogonal", seed=demo_seed + 1)  # another DEMO key
x_other = encryption.encrypt_images(x, other_key)
with torch.no_grad():
    plain_logits = model(x)[0]
    paths = {
        "encrypted model, encrypted image (same key)": (encrypted_model, x_hat, True),
        "encrypted model, image encrypted with another key": (encrypted_model, x_other, False),
        "plain model, encrypted image": (model, x_hat, True),
        "encrypted model, plain image": (encrypted_model, x, False),
    }
    rows = []
    for name, (m, images, same_order) in paths.items():
        t = m._pos_embed(m.patch_embed(images))[0]
        if same_order:  # compare each token with the plain token of the same block
            t = torch.cat([t[:1], t[1:][torch.argsort(torch.tensor(l_e))]])
        cosine = torch.nn.functional.cosine_similarity(t[1:], tokens[1:], dim=1).mean().item()
        logits = m(images)[0]
        rows.append({"path": name, "mean cosine(tokens, plain tokens)": cosine,
                     "max |logit - plain logit|": (logits - plain_logits).abs().max().item(),
                     "same prediction": bool(logits.argmax() == plain_logits.argmax())})
pd.DataFrame(rows)

# %% [markdown]
# The model is untrained, so its logits are small and a wrong path can still land on the same class by
# chance; the token similarity shows what the model actually sees. Notebook 06 measures the same
# contrast as accuracy on the trained model.

# %% [markdown]
# ## 8. FedAvg by hand for two clients, beside `fedavg`
# The server averages the clients' weights, each weighted by its number of training images
# (McMahan et al. 2017): $w = \sum_k \frac{n_k}{n} w_k$.

# %%
torch.manual_seed(1)
client_a = models.create_vit("vit_tiny_patch16_224", 10, img_size=size, patch_size=p, embed_dim=32, depth=2,
                             num_heads=2).state_dict()
torch.manual_seed(2)
client_b = models.create_vit("vit_tiny_patch16_224", 10, img_size=size, patch_size=p, embed_dim=32, depth=2,
                             num_heads=2).state_dict()
n_a, n_b = 300, 100  # training images per client
by_hand = {name: (n_a * client_a[name].double() + n_b * client_b[name].double()) / (n_a + n_b)
           for name in client_a}
package = fedavg([(client_a, n_a), (client_b, n_b)])
print(f"max |by hand - fedavg| over all {len(package)} tensors = "
      f"{max((by_hand[k] - package[k].double()).abs().max().item() for k in package):.1e}")
first = "patch_embed.proj.weight"
pd.DataFrame({"client A (300 images)": client_a[first].flatten()[:4].numpy(),
              "client B (100 images)": client_b[first].flatten()[:4].numpy(),
              "by hand": by_hand[first].flatten()[:4].numpy(), "fedavg": package[first].flatten()[:4].numpy()})

# %% [markdown]
# ## 9. Explore
# Change the key kind, block size, image or seed: the explorer redraws the encrypted image and its
# decryption (live in JupyterLab; a still picture in executed notebooks). Block sizes must divide the
# image side; a gaussian $\mathbf{E}_a$ that is too ill-conditioned to invert accurately is refused.

# %%
explore.encryption_explorer({"cat 32x32": image, "astronaut 64x64": data.photographs(["astronaut"], size=64)[0]},
                            block_sizes=(2, 4, 8, 16), block_size=p, seed=0)
