"""Notebook 08's scenario: two clients of a study run use the model server as the paper's cloud (Fig. 1).

Every step returns a table or a figure, so the notebook only calls these: what each client keeps, what it sends,
what the server stores and sees (the encrypted embeddings; the queries decoded as the server decodes them), the
predictions against the plain model's (Eq. 14), and one client querying another client's model.
"""

from __future__ import annotations

import atexit
from dataclasses import dataclass, field

import pandas as pd
import torch
from matplotlib.figure import Figure
from safetensors.torch import load as load_tensors

from fedvit_utils.data import Preprocess
from fedvit_utils.evaluation import predict
from fedvit_utils.study.run import StudyRun

from .client import KeyHolder, ServerClient
from .server import LocalService
from .store import ModelStore
from .wire import Architecture, decode_images, encode_images, encode_model


@dataclass
class CloudScenario:
    """The run's integrated model, two clients with the run's keys, and a server (started here or given)."""

    run: StudyRun
    dataset: str
    model: torch.nn.Module
    clients: list[KeyHolder]
    test_images: list[torch.Tensor]
    test_labels: list[torch.Tensor]
    service: LocalService | None = None
    store: ModelStore | None = None
    sent: dict[str, dict[str, bytes]] = field(default_factory=dict)

    @classmethod
    def open(cls, run: StudyRun, server_url: str | None = None, clients: int = 2, images: int = 16) -> CloudScenario:
        """Load notebook 02's model and 03's keys; start a loopback server unless `server_url` names one."""
        dataset = run.profile.datasets[0]
        model = run.trained_model(dataset).cpu().eval()
        keys = run.keys(dataset)[:clients]
        data = run.load_data(dataset)
        service = store = None
        if server_url is None:
            folder = run.folder / "cloud"
            service = LocalService(folder / "store", log=folder / "serve.log")
            server_url = service.start()
            # Stopped by close() at the notebook's end, and at the kernel's exit if a cell failed before it.
            atexit.register(service.stop)
            store = ModelStore(folder / "store")
        server = ServerClient(server_url)
        holders = [KeyHolder(f"{run.profile.name}-client-{i:02d}", key, server) for i, key in enumerate(keys)]
        idx = data.client_test_indices()
        return cls(run, dataset, model, holders, [data.test.images[idx[i][:images]] for i in range(len(holders))],
                   [data.test.labels[idx[i][:images]] for i in range(len(holders))], service, store)

    def kept(self) -> pd.DataFrame:
        """What each client keeps and never sends: its key (fingerprint only), the plain model, its images."""
        params = sum(p.numel() for p in self.model.parameters())
        return pd.DataFrame([{"client": h.client_id, "key kind": h.key.kind, "key fingerprint": h.key.fingerprint,
                              "block order (N)": h.key.num_blocks, "matrix E_a (L x L)": h.key.block_length,
                              "plain model parameters": params, "plain test images": len(x)}
                             for h, x in zip(self.clients, self.test_images, strict=True)])

    def upload(self) -> pd.DataFrame:
        """Each client encrypts its copy of the integrated model (Eq. 3, 8) and uploads it; what went over the wire."""
        architecture = Architecture.of_profile(self.run.profile, int(self.model.get_classifier().out_features))
        rows = []
        for h in self.clients:
            body = encode_model(h.encrypted_model(self.model), architecture)
            record = h.server.upload(h.client_id, body, replace=True)  # rerunning the notebook replaces its own
            self.sent.setdefault(h.client_id, {})["model"] = body
            rows.append({"client": h.client_id, "bytes sent": len(body), "tensors": len(load_tensors(body)),
                         "architecture": architecture.to_json(), "stored as (sha256)": record["sha256"][:16]})
        return pd.DataFrame(rows)

    def stored(self) -> pd.DataFrame:
        """The server's store folder: every file, its size (nothing else is kept)."""
        if self.store is None:
            return pd.DataFrame([{"file": "(the given server's store is not on this machine)", "bytes": None}])
        files = sorted(p for p in self.store.root.rglob("*") if p.is_file() and not p.name.startswith("."))
        return pd.DataFrame([{"file": str(p.relative_to(self.store.root)), "bytes": p.stat().st_size} for p in files])

    def embeddings_figure(self) -> Figure:
        """The patch embedding (first filters) and position-embedding similarity, plain and as each client sent it."""
        bodies = [load_tensors(self.sent[h.client_id]["model"]) for h in self.clients]
        plain = {k: v.detach() for k, v in self.model.state_dict().items()}
        columns = [("plain (client only)", plain)] + [(f"{h.client_id} (server)", b)
                                                      for h, b in zip(self.clients, bodies, strict=True)]
        fig = Figure(figsize=(3.2 * len(columns), 6.2), layout="constrained")  # not pyplot: shown once, by the caller
        axes = fig.subplots(2, len(columns))
        prefix = getattr(self.model, "num_prefix_tokens", 1)
        for col, (title, state) in enumerate(columns):
            w = state["patch_embed.proj.weight"]
            rows = w.reshape(w.shape[0], -1)[:32]
            limit = float(rows.abs().max())
            axes[0, col].imshow(rows.numpy(), aspect="auto", cmap="coolwarm", vmin=-limit, vmax=limit)
            axes[0, col].set_title(f"{title}\npatch embedding rows", fontsize=9)
            pos = state["pos_embed"][0, prefix:]
            pos = pos / pos.norm(dim=1, keepdim=True)
            axes[1, col].imshow((pos @ pos.T).numpy(), cmap="viridis", vmin=-1, vmax=1)
            axes[1, col].set_title("position embedding cosine similarity", fontsize=9)
            for ax in axes[:, col]:
                ax.set_xticks([])
                ax.set_yticks([])
        fig.suptitle("The model as the client holds it and as the server receives it (Eq. 3, Eq. 8); the plain "
                     "model's weights are not sent\n(normalization is folded into the sent patch embedding)",
                     fontsize=10)
        return fig

    def query(self) -> pd.DataFrame:
        """Each client queries its own model with its encrypted test images; served vs plain predictions (Eq. 14)."""
        rows = []
        plain_path = Preprocess.for_model(self.model)
        for h, x, y in zip(self.clients, self.test_images, self.test_labels, strict=True):
            body = encode_images(h.encrypt(x))
            self.sent[h.client_id]["query"] = body
            served = torch.tensor(h.server.predict(h.client_id, body)["predictions"])
            plain = predict(self.model, x, plain_path, exact=True).argmax(1)
            rows.append({"client": h.client_id, "images": len(x), "dtype on the wire": h.encrypt(x[:1]).dtype,
                         "identical to plain model on plain images": int((served == plain).sum()),
                         "accuracy served": float((served == y).float().mean()),
                         "accuracy plain": float((plain == y).float().mean())})
        return pd.DataFrame(rows)

    def queries_figure(self, n: int = 6) -> Figure:
        """Plain test images (client only) above the same images as the server decodes them from the query body."""
        fig = Figure(figsize=(1.6 * n, 3.4 * len(self.clients)), layout="constrained")
        axes = fig.subplots(2 * len(self.clients), n)
        for row, (h, x) in enumerate(zip(self.clients, self.test_images, strict=True)):
            # exactly what the server parses: the images as the client sent them, at the model's input size
            seen = decode_images(self.sent[h.client_id]["query"], (x.shape[1], *h.preprocess.input_size))
            for i in range(n):
                axes[2 * row, i].imshow(x[i].permute(1, 2, 0).numpy())
                shown = seen[i] - seen[i].amin()
                axes[2 * row + 1, i].imshow((shown / shown.amax().clamp_min(1e-9)).permute(1, 2, 0).numpy())
            axes[2 * row, 0].set_ylabel(f"{h.client_id}\nplain (kept)", fontsize=8)
            axes[2 * row + 1, 0].set_ylabel(f"{h.key.kind} key\nas received", fontsize=8)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle("Queries: what the client holds (top) and what the server receives (bottom, rescaled)",
                     fontsize=10)
        return fig

    def cross_query(self) -> pd.DataFrame:
        """Client 0's encrypted images sent to client 1's model: answered like any query, but wrong."""
        a, b = self.clients[0], self.clients[1]
        x, y = self.test_images[0], self.test_labels[0]
        answer = a.server.predict(b.client_id, self.sent[a.client_id]["query"])
        served = torch.tensor(answer["predictions"])
        plain = predict(self.model, x, Preprocess.for_model(self.model), exact=True).argmax(1)
        return pd.DataFrame([{"images of": a.client_id, "sent to the model of": b.client_id,
                              "answered": "yes (HTTP 200)", "identical to plain predictions":
                              f"{int((served == plain).sum())}/{len(x)}",
                              "accuracy": float((served == y).float().mean()),
                              "accuracy on its own model": float((plain == y).float().mean())}])

    def close(self) -> None:
        """Stop the server this scenario started (none if it was given `server_url`)."""
        if self.service is not None:
            self.service.stop()
            self.service = None

