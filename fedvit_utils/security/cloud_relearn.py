"""The curious cloud re-learns what it lacks: the plain patch and position embeddings (Eq. 1, 3, 8).

Only the patch embedding (Ê = E_a E, Eq. 3) and the patch rows of the position embedding
(Ê_pos = E_b E_pos, Eq. 8) of a client's model are encrypted; every other weight is the plain one.
So the cloud can freeze all of them, put freshly initialised embeddings in front, and train only those
on public labelled images. Nothing in this depends on a key: one training serves every client. With the
re-learned model standing in for the plain one, `key_extraction.extract_key_from_model` reads
E_a ≈ (W' ^+ Ŵ)^T off the patch weights and E_b off the position rows, as a FedAvg participant would
with the true plain model; how close that comes depends on how close the re-learned W' is to W.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..models import embeddings


def relearn_embeddings(
    encrypted_model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Module:
    """A copy of `encrypted_model` whose patch weights and patch position rows are re-learned on public data.

    `images` are normalized float (B, C, H, W) public images (what the model's pipeline feeds it), `labels`
    their classes. Every other parameter (the plain ones) stays frozen; the bias of the patch embedding is
    not touched by the key (Eq. 3) and stays too.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"got {len(images)} images and {len(labels)} labels: pass one label per public image.")
    torch.manual_seed(seed)
    model = copy.deepcopy(encrypted_model).float().eval()  # eval: no dropout in the frozen plain layers
    parts = embeddings(model)
    for param in model.parameters():
        param.requires_grad_(False)
    weight = parts.proj.weight
    with torch.no_grad():
        nn.init.trunc_normal_(weight, std=0.02)  # a fresh start: the encrypted weights would leak the key in
    weight.requires_grad_(True)
    trained = [weight]
    if parts.pos_embed is not None:
        with torch.no_grad():
            nn.init.trunc_normal_(parts.pos_embed[:, parts.prefix_rows:], std=0.02)
        parts.pos_embed.requires_grad_(True)  # prefix rows are plain; their gradient is masked below
        trained.append(parts.pos_embed)
    optimizer = torch.optim.Adam(trained, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            loss = nn.functional.cross_entropy(model(images[batch].float()), labels[batch].long())
            optimizer.zero_grad()
            loss.backward()
            if parts.pos_embed is not None:
                parts.pos_embed.grad[:, : parts.prefix_rows] = 0  # the class token's row is plain: keep it
            optimizer.step()
    return model.requires_grad_(False)
