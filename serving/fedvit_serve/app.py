"""The Ray Serve deployment: one deployment serves every client's encrypted model over HTTP.

* Model multiplexing (`serve.multiplexed`): the model id is the client's id; each replica keeps a bounded LRU of
  loaded models and loads others from the store on demand. A client that sends the id also as the
  ``serve_multiplexed_model_id`` header is routed to a replica that has its model loaded.
* Dynamic batching (`serve.batch`): concurrent requests are gathered into one batch, split by model id before any
  forward pass, so a forward never mixes two clients' models (Ray splits by the header as well).
* The forward runs in full float32 (no autocast, no TF32): the encrypted model on encrypted images then gives the
  plain model's predictions on plain images (Eq. 14), which the tests check through this server.

The server never holds a key and never sees a plain image: what it receives is `wire`'s bodies.
"""

# No `from __future__ import annotations`: FastAPI resolves the route parameters' types (Request) at import.
import asyncio
import os
from dataclasses import dataclass

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from torch import nn

from fedvit_utils.devices import full_float32
from fedvit_utils.files import DamagedFile

from .store import ModelStore, UnknownModel, check_model_id
from .wire import MAX_MODEL_BYTES, MAX_QUERY_BYTES, Architecture, BadRequest, TooLarge, decode_images, load_model

MODEL_ID_HEADER = "serve_multiplexed_model_id"  # Serve's routing header for multiplexed models

api = FastAPI(title="fedvit encrypted-model server", docs_url=None, redoc_url=None, openapi_url=None)


@api.exception_handler(BadRequest)
async def _bad_request(_: Request, exc: BadRequest) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


@api.exception_handler(UnknownModel)
async def _unknown(_: Request, exc: UnknownModel) -> JSONResponse:
    return JSONResponse({"error": str(exc.args[0])}, status_code=404)


@api.exception_handler(DamagedFile)
async def _damaged(_: Request, exc: DamagedFile) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=500)


@dataclass
class ServedModel:
    """A loaded model in a replica's LRU; refreshed in place when the store holds a newer upload of its id."""

    sha256: str
    model: nn.Module
    shape: tuple[int, int, int]  # (C, H, W) the model takes


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) before reading when its declared length is over `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body has {declared} bytes, over the server's limit of {limit}.")
    body = await request.body()
    if len(body) > limit:
        raise TooLarge(f"the body has {len(body)} bytes, over the server's limit of {limit}.")
    return body


@serve.deployment(name="ModelServer", max_ongoing_requests=64)
@serve.ingress(api)
class ModelServer:
    """Upload, list and query encrypted models (routes below); see docs/serving.md for the API."""

    def __init__(self, store: str, max_models: int = 16, max_batch: int = 16, batch_wait_s: float = 0.002,
                 torch_threads: int = 0, device: str = "cpu", max_model_bytes: int = MAX_MODEL_BYTES,
                 max_query_bytes: int = MAX_QUERY_BYTES) -> None:
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self.store = ModelStore(store)
        self.device = torch.device(device)
        self._refresh = asyncio.Lock()
        self.max_model_bytes, self.max_query_bytes = max_model_bytes, max_query_bytes

        async def load(model_id: str) -> ServedModel:
            return await asyncio.to_thread(self._load, model_id)

        async def forward(items: list[tuple[str, ServedModel, torch.Tensor]]) -> list[torch.Tensor]:
            return await self._forward_batch(items)

        # Per instance, so the LRU bound and batch size are settings (the decorators otherwise fix them at import).
        self.models = serve.multiplexed(max_num_models_per_replica=max_models)(load)
        self.forward = serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=batch_wait_s)(forward)
        self.loaded: dict[str, str] = {}  # id -> sha256 loaded in this replica (for /healthz)

    def _load(self, model_id: str) -> ServedModel:
        record = self.store.record(model_id)
        architecture, tensors = self.store.load(model_id)
        if record["sha256"] != self.store.record(model_id)["sha256"]:  # replaced while reading: read again
            return self._load(model_id)
        model = load_model(architecture, tensors).to(self.device)
        self.loaded[model_id] = record["sha256"]
        return ServedModel(record["sha256"], model, architecture.input_shape())

    async def _model(self, model_id: str) -> ServedModel:
        """The id's model from the LRU, reloaded in place when the store holds a newer upload."""
        sha = (await asyncio.to_thread(self.store.record, model_id))["sha256"]  # UnknownModel -> 404
        served = await self.models(model_id)
        if served.sha256 != sha:
            async with self._refresh:
                if served.sha256 != sha:
                    fresh = await asyncio.to_thread(self._load, model_id)
                    served.model, served.shape, served.sha256 = fresh.model, fresh.shape, fresh.sha256
        return served

    async def _forward_batch(self, items: list[tuple[str, ServedModel, torch.Tensor]]) -> list[torch.Tensor]:
        groups: dict[str, list[int]] = {}
        for i, (model_id, _, _) in enumerate(items):
            groups.setdefault(model_id, []).append(i)
        out: list[torch.Tensor | None] = [None] * len(items)
        for indices in groups.values():  # one forward per model: a batch never mixes two clients' models
            served = items[indices[0]][1]
            images = torch.cat([items[i][2] for i in indices])
            logits = await asyncio.to_thread(self._run, served.model, images)
            start = 0
            for i in indices:
                n = len(items[i][2])
                out[i] = logits[start : start + n]
                start += n
        return out

    @torch.no_grad()
    def _run(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        with full_float32():
            return model(images.to(self.device)).float().cpu()

    @api.get("/healthz")
    async def health(self) -> dict:
        """Liveness, with this replica's process id and loaded model ids (for operators and the fault tests)."""
        context = serve.get_replica_context()
        return {"status": "ok", "replica": context.replica_id.unique_id, "pid": os.getpid(),
                "loaded": sorted(self.loaded)}

    @api.get("/v1/models")
    async def list_models(self) -> dict:
        """The stored model ids."""
        return {"models": await asyncio.to_thread(self.store.ids)}

    @api.post("/v1/models/{model_id}")
    async def upload(self, model_id: str, request: Request, replace: bool = False) -> JSONResponse:
        """Store an encrypted model (safetensors body, architecture in its metadata); 409 if the id is taken."""
        check_model_id(model_id)
        body = await _body(request, self.max_model_bytes)
        record = await asyncio.to_thread(self.store.put, model_id, body, replace, self.max_model_bytes)
        architecture = Architecture.from_json(record["architecture"])
        return JSONResponse({"model": model_id, "sha256": record["sha256"], "bytes": record["bytes"],
                             "input_shape": list(architecture.input_shape()),
                             "num_classes": architecture.num_classes}, status_code=201)

    @api.post("/v1/models/{model_id}/predict")
    async def predict(self, model_id: str, request: Request, logits: bool = False) -> dict:
        """Class index per encrypted image (and the logits with ?logits=true)."""
        check_model_id(model_id)
        routed = request.headers.get(MODEL_ID_HEADER)
        if routed and routed != model_id:
            raise BadRequest(f"header {MODEL_ID_HEADER}={routed!r} names another model than the path "
                             f"({model_id!r}): send the same id in both, or leave the header out.")
        body = await _body(request, self.max_query_bytes)
        served = await self._model(model_id)
        images = decode_images(body, served.shape, self.max_query_bytes)
        out = await self.forward((model_id, served, images))
        answer = {"model": model_id, "sha256": served.sha256, "predictions": out.argmax(1).tolist()}
        if logits:
            answer["logits"] = out.tolist()
        return answer


def build_app(store: str, replicas: int = 1, max_models: int = 16, max_batch: int = 16, batch_wait_s: float = 0.002,
              torch_threads: int = 0, device: str = "cpu", max_model_bytes: int = MAX_MODEL_BYTES,
              max_query_bytes: int = MAX_QUERY_BYTES) -> serve.Application:
    """The bound Serve application; max_ongoing_requests stays >= 2x the batch size (Serve warns below 1x)."""
    deployment = ModelServer.options(num_replicas=replicas, max_ongoing_requests=max(64, 2 * max_batch))
    return deployment.bind(store, max_models, max_batch, batch_wait_s, torch_threads, device, max_model_bytes,
                           max_query_bytes)
