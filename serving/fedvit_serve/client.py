"""The client side of Fig. 1: it holds the key, encrypts locally, sends only the encrypted model and images.

`ServerClient` speaks the HTTP API and knows no key. `KeyHolder` is one FL client: its id, its `SecretKey` and the
plain model's preprocessing. It folds the preprocessing into the plain model (so queries are raw pixels), encrypts
that model with its key (Ê = E_a E, Eq. 3; Ê_pos = E_b E_pos, Eq. 8), uploads it, and encrypts each query batch
(Eq. 9-13) before sending it. A permutation key only moves pixels, so uint8 images stay uint8 on the wire; a dense
key mixes them, so its images go as float32. The key object is never serialised by anything here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests
import torch
from torch import nn

from fedvit_utils.data import Preprocess
from fedvit_utils.encryption import encrypt_images
from fedvit_utils.keys import SecretKey
from fedvit_utils.model_encryption import encrypt_model, fold_normalization

from .wire import Architecture, encode_images, encode_model

MODEL_ID_HEADER = "serve_multiplexed_model_id"  # lets Serve route to a replica that has the model loaded
RETRY_STATUS = (500, 502, 503, 504)  # a replica that died or is being replaced


class ServerError(RuntimeError):
    """The server refused or failed a request; `status` is the HTTP code, the message the server's reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass
class ServerClient:
    """The HTTP API of a model server (docs/serving.md); `retries` apply to predictions, which are idempotent."""

    url: str
    timeout: float = 120.0
    retries: int = 3
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.session = requests.Session()

    def _call(self, method: str, path: str, body: bytes | None = None, params: dict | None = None,
              headers: dict | None = None, retries: int = 0) -> dict:
        for attempt in range(retries + 1):
            try:
                r = self.session.request(method, self.url + path, data=body, params=params, headers=headers,
                                         timeout=self.timeout)
            except requests.ConnectionError as exc:
                if attempt == retries:
                    raise ServerError(0, f"no connection to {self.url} ({exc})") from exc
            else:
                if r.ok:
                    return r.json()
                if r.status_code not in RETRY_STATUS or attempt == retries:
                    try:
                        message = r.json().get("error") or r.json().get("detail") or r.text
                    except ValueError:
                        message = r.text
                    raise ServerError(r.status_code, str(message))
            time.sleep(self.backoff_s * (attempt + 1))
        raise AssertionError("unreachable")

    def health(self) -> dict:
        """The replica's /healthz answer."""
        return self._call("GET", "/healthz")

    def models(self) -> list[str]:
        """The stored model ids."""
        return self._call("GET", "/v1/models")["models"]

    def upload(self, model_id: str, body: bytes, replace: bool = False) -> dict:
        """Upload an encrypted model body (`wire.encode_model`); 409 if the id is taken and `replace` is False."""
        params = {"replace": "true"} if replace else None
        return self._call("POST", f"/v1/models/{model_id}", body, params)

    def predict(self, model_id: str, body: bytes, logits: bool = False) -> dict:
        """Predictions for a query body (`wire.encode_images`), retried when a replica fails."""
        params = {"logits": "true"} if logits else None
        return self._call("POST", f"/v1/models/{model_id}/predict", body, params, {MODEL_ID_HEADER: model_id},
                          self.retries)


class KeyHolder:
    """One client: uploads its encrypted copy of a plain model and queries it with its encrypted images."""

    def __init__(self, client_id: str, key: SecretKey, server: ServerClient) -> None:
        self.client_id = client_id
        self.key = key
        self.server = server
        self.preprocess: Preprocess | None = None

    def encrypted_model(self, plain_model: nn.Module) -> nn.Module:
        """The model the server gets: preprocessing folded in (raw pixels in), then Eq. 3 and 8 with this key."""
        self.preprocess = Preprocess.for_model(plain_model)
        mean, std = self.preprocess.mean.flatten().tolist(), self.preprocess.std.flatten().tolist()
        folded = fold_normalization(plain_model.cpu().eval(), tuple(mean), tuple(std), scale=1 / 255)
        return encrypt_model(folded, self.key).eval()

    def upload(self, plain_model: nn.Module, architecture: Architecture, replace: bool = False) -> dict:
        """Encrypt the plain model with this client's key and upload it under the client's id."""
        body = encode_model(self.encrypted_model(plain_model), architecture)
        return self.server.upload(self.client_id, body, replace)

    def encrypt(self, images: torch.Tensor) -> torch.Tensor:
        """Raw pixels at the model's input size, encrypted (Eq. 9-13): uint8 kept for permutation keys, else float32."""
        if self.preprocess is None:
            raise RuntimeError("encrypt the model first (encrypted_model or upload): it fixes the input size.")
        if images.dtype == torch.uint8 and tuple(images.shape[-2:]) == self.preprocess.input_size:
            pixels = images if self.key.key_kind.moves_pixels_only else images.float()  # a gather keeps uint8 exact
        else:  # resized as the plain path resizes, back on the 0..255 scale the folded model takes
            pixels = self.preprocess.unit(images) * 255.0
        return encrypt_images(pixels.contiguous(), self.key)

    def query(self, images: torch.Tensor, logits: bool = False, model_id: str | None = None) -> dict:
        """Encrypt `images` locally and ask the server (this client's model, or `model_id`'s) for predictions."""
        return self.server.predict(model_id or self.client_id, encode_images(self.encrypt(images)), logits)

    def predict(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Predicted class per image, in batches of `batch_size` requests."""
        out = [torch.tensor(self.query(images[i : i + batch_size])["predictions"])
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
