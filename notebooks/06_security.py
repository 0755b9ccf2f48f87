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
# Demo keys here are drawn from `security_seed`; the wrong-key study uses the clients' keys of notebook 3.

# %% tags=["parameters"]
profile = "smoke"  # parameter set: smoke (tests) | quick (study default) | cpu | paper
run_dir = None  # run folder; None -> runs/<profile>
data_root = None  # dataset folder; None -> $FEDVIT_DATA (ImageFolder tree or torchvision CIFAR files)
partition_seed = 0  # seed of the client partition
training_seed = 0  # seed of model initialisation and batch order
key_seed = 0  # seed of the clients' demo keys (a published seed makes a public key)
security_seed = 0  # seed of the image samples and demo keys of this notebook
n_images = 8  # CIFAR-10 test images for visual security, jigsaw and key extraction
known_pairs = [0, 1, 2]  # k values of the known-plaintext curve on CIFAR-10
photo_known_pairs = [1]  # k values on the 3 photographs (224x224, 16x16 blocks); one more is decrypted
n_unseen = 4  # CIFAR images decrypted with the recovered key; needs n_images of at least max(k) plus this

# %%
from IPython.display import Markdown, display

from fedvit_utils import attacks, baseline, experiment, metrics, models, paths
from fedvit_utils.data import Preprocess

s = experiment.setup(profile, run_dir, data_root, partition_seed, training_seed, key_seed)
cfg, run, figures, task, hardware = s.cfg, s.run, s.figures, s.tasks[0], s.hardware
model = baseline.load_trained(task, "federated").cpu()
p = models.patch_size(model)
cifar_label = f"CIFAR-10 test ({experiment.DATA_NOTE})"
cifar, _ = metrics.sample_imagefolder(paths.data_root(data_root), n_images, "test", security_seed)
photos = metrics.photographs(224)

# %% [markdown]
# ## 1–2. Visual security and key space

# %%
visual = [metrics.visual_security(cifar, p, cifar_label, seed=security_seed),
          metrics.visual_security(photos, 16, "photographs (scikit-image)", seed=security_seed)]
space = [metrics.key_space(32, p), metrics.key_space(224, 16)]
display(*visual, *space, Markdown(metrics.KEY_SPACE_NOTE))

# %% [markdown]
# ## 3. Wrong keys (the trained integrated model, client keys of notebook 3)

# %%
keys = experiment.keys_for_clients(task, model)
wrong = metrics.wrong_key_accuracy(model, task.test.images[task.client_test[0]], task.test.labels[task.client_test[0]],
                                   keys, cifar_label, preprocess=Preprocess.for_model(model))
wrong_summary = metrics.summarize_wrong_keys(wrong)
wrong_summary

# %% [markdown]
# ## 4. Known-plaintext attack

# %%
curve = attacks.known_plaintext_curve(cifar, p, cifar_label, known_pairs, n_unseen=n_unseen, seed=security_seed)
photo_curve = attacks.known_plaintext_curve(photos, 16, "photographs 224x224", photo_known_pairs,
                                            n_unseen=1, seed=security_seed)
display(curve, photo_curve)

# %% [markdown]
# ## 5–6. Key extraction from the weights; ciphertext-only jigsaw

# %%
extraction = attacks.key_extraction_report(model, cifar, cifar_label, f"{cfg.model} {cfg.model_kwargs}",
                                           seed=security_seed)
jigsaw = attacks.jigsaw_report(cifar, p, cifar_label, seed=security_seed)
display(extraction, jigsaw.describe())

# %%
import pandas as pd

written = metrics.save_report(figures, tables={
    "security_visual": pd.concat(visual), "security_key_space": pd.concat(space),
    "security_wrong_keys": wrong_summary, "security_known_plaintext": pd.concat([curve, photo_curve]),
    "security_key_extraction": extraction, "security_jigsaw": jigsaw,
}, figures={
    "security_known_plaintext_cifar": attacks.known_plaintext_figure(curve),
    "security_encrypted_cifar": metrics.encryption_figure(cifar[:4], p, seed=security_seed),
})
experiment.write_json(run / "security.json", {
    "profile": cfg.name, "hardware": hardware, "security_seed": security_seed, **task.seeds(),
    "wrong_keys": wrong_summary.to_dict(orient="records"),
    "known_plaintext": curve.to_dict(orient="records"),
    "key_extraction": extraction.to_dict(orient="records")})
[str(w.name) for w in written]
