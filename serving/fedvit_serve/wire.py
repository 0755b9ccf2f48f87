"""What crosses the wire: safetensors bodies (never pickle), the allowlist of ViT architectures, and their checks.

An upload is one safetensors file: the encrypted model's tensors (Ê = E_a E, Eq. 3; Ê_pos = E_b E_pos, Eq. 8)
with the architecture as JSON in the file's metadata. A query is one safetensors file with one tensor
``images`` (B, C, H, W), uint8 or float32, already encrypted by the client (Eq. 9-13). Both are parsed by
safetensors' own reader, which only reads a JSON header and raw numbers: nothing in a body is executed.
Every refusal is a `BadRequest` whose message names the mismatch and the fix.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from fedvit_utils.models import create_vit, embeddings

FORMAT = "fedvit-serve-1"
IMAGES = "images"  # the one tensor of a query body
MAX_MODEL_BYTES = 1 << 30  # ViT-B/16 in float32 is 344 MB
MAX_QUERY_BYTES = 64 << 20
MAX_IMAGES = 256  # per request
MAX_HEADER_BYTES = 1 << 20

# timm ViTs a client may upload, and the settings it may change (type, smallest, largest).
ALLOWED_MODELS = (
    "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_base_patch32_224",
    "vit_large_patch16_224", "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
)
ALLOWED_SETTINGS: dict[str, tuple[type, float, float]] = {
    "img_size": (int, 8, 1024),
    "patch_size": (int, 2, 64),
    "embed_dim": (int, 8, 2048),
    "depth": (int, 1, 48),
    "num_heads": (int, 1, 32),
    "mlp_ratio": (float, 0.25, 16.0),
}
MAX_CLASSES = 100_000


class BadRequest(ValueError):
    """A body the server refuses; `status` is the HTTP code, the message names the mismatch and the fix."""

    status = 400


class TooLarge(BadRequest):
    """A body over the server's size limit."""

    status = 413


@dataclass(frozen=True)
class Architecture:
    """A timm ViT from the allowlist: name, class count and the allowed settings (img_size, patch_size, ...)."""

    model: str
    num_classes: int
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in ALLOWED_MODELS:
            raise BadRequest(f"model {self.model!r} is not on the server's allowlist: choose one of "
                             f"{list(ALLOWED_MODELS)}.")
        if type(self.num_classes) is not int or not 1 <= self.num_classes <= MAX_CLASSES:
            raise BadRequest(f"num_classes {self.num_classes!r} must be an integer from 1 to {MAX_CLASSES}.")
        if not isinstance(self.settings, dict):
            raise BadRequest(f"settings must be a JSON object, not {type(self.settings).__name__}.")
        for name, value in self.settings.items():
            if name not in ALLOWED_SETTINGS:
                raise BadRequest(f"setting {name!r} is not allowed: the server accepts {sorted(ALLOWED_SETTINGS)}.")
            kind, low, high = ALLOWED_SETTINGS[name]
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or (kind is int and not isinstance(value, int)) or not low <= value <= high:
                raise BadRequest(f"setting {name}={value!r} must be {kind.__name__} from {low} to {high}.")

    def to_json(self) -> str:
        """The JSON description carried in an upload's metadata."""
        return json.dumps({"format": FORMAT, "model": self.model, "num_classes": self.num_classes,
                           "settings": self.settings}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        """Parse and check an architecture description (allowlist and ranges)."""
        try:
            doc = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"the architecture description is not JSON ({exc}): send Architecture.to_json().") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BadRequest(f"the architecture description must be a JSON object with format {FORMAT!r}.")
        extra = set(doc) - {"format", "model", "num_classes", "settings"}
        if extra:
            raise BadRequest(f"unknown fields {sorted(extra)} in the architecture description.")
        return cls(doc.get("model"), doc.get("num_classes"), doc.get("settings", {}))

    @classmethod
    def of_profile(cls, profile: object, num_classes: int) -> Architecture:
        """The architecture of a fedvit profile's ViT (`profiles.Profile.model`, `.model_kwargs`)."""
        return cls(profile.model, num_classes, dict(profile.model_kwargs))

    def build(self, device: str | torch.device = "meta") -> nn.Module:
        """The ViT of this architecture, weightless on 'meta' (for shapes) unless another device is named."""
        with torch.device(device):
            return create_vit(self.model, self.num_classes, pretrained=False, **self.settings).eval()

    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) the model takes."""
        proj, _, _, grid = embeddings(self.build())
        return proj.in_channels, grid[0] * proj.kernel_size[0], grid[1] * proj.kernel_size[1]


# -- model bodies -----------------------------------------------------------------------------------
def encode_model(model: nn.Module, architecture: Architecture) -> bytes:
    """An upload body: the model's float32 tensors with the architecture in the safetensors metadata."""
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    return save_tensors(state, metadata={"architecture": architecture.to_json()})


def read_metadata(body: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors body, read from its JSON header alone (8-byte length, then JSON)."""
    if len(body) < 8:
        raise BadRequest(f"the body has {len(body)} bytes, not a safetensors file: send encode_model(...)'s bytes.")
    (length,) = struct.unpack("<Q", body[:8])
    if length > min(MAX_HEADER_BYTES, len(body) - 8):
        raise BadRequest(f"the body is not a safetensors file (header length {length} for a {len(body)}-byte body; "
                         f"a pickle or a truncated upload): send encode_model(...)'s bytes.")
    try:
        header = json.loads(body[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the safetensors header is not JSON ({exc}): the upload is damaged; send it again.") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def decode_model(body: bytes, max_bytes: int = MAX_MODEL_BYTES) -> tuple[Architecture, dict[str, torch.Tensor]]:
    """Check an upload: size, safetensors format, allowlisted architecture, each tensor's name, shape, dtype, values."""
    if not body:
        raise BadRequest("empty body: send the encrypted model as encode_model(model, architecture).")
    if len(body) > max_bytes:
        raise TooLarge(f"the upload has {len(body)} bytes, over the server's limit of {max_bytes}.")
    meta = read_metadata(body)
    if "architecture" not in meta:
        raise BadRequest("the upload's safetensors metadata has no 'architecture': send encode_model(model, arch).")
    architecture = Architecture.from_json(meta["architecture"])
    tensors = _parse(body, "upload")
    expected = architecture.build().state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise BadRequest(f"the tensors do not fit {architecture.model} {architecture.settings}: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}; upload the state_dict of the model the architecture describes.")
    for name, ref in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(ref.shape) or got.dtype != torch.float32:
            raise BadRequest(f"tensor {name!r} is {got.dtype} {tuple(got.shape)}, the architecture needs float32 "
                             f"{tuple(ref.shape)}.")
        if not bool(torch.isfinite(got).all()):
            raise BadRequest(f"tensor {name!r} has NaN or infinite values: upload a trained, finite model.")
    return architecture, tensors


def load_model(architecture: Architecture, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The served module: the architecture's ViT holding the uploaded tensors, in eval mode."""
    model = architecture.build()
    model.load_state_dict(tensors, strict=True, assign=True)  # meta parameters take the uploaded tensors
    return model.eval().requires_grad_(False)


# -- query bodies -----------------------------------------------------------------------------------
def encode_images(images: torch.Tensor) -> bytes:
    """A query body: one tensor 'images' (B, C, H, W), uint8 or float32, as the client encrypted it."""
    return save_tensors({IMAGES: images.contiguous()})


def decode_images(body: bytes, shape: tuple[int, int, int], max_bytes: int = MAX_QUERY_BYTES,
                  max_images: int = MAX_IMAGES) -> torch.Tensor:
    """Check a query against the model's (C, H, W): one 4-d uint8/float32 tensor, finite; returns float32."""
    if not body:
        raise BadRequest("empty body: send encode_images(encrypted images), one tensor 'images' (B, C, H, W).")
    if len(body) > max_bytes:
        raise TooLarge(f"the query has {len(body)} bytes, over the server's limit of {max_bytes}: send fewer images "
                       f"per request.")
    tensors = _parse(body, "query")
    if set(tensors) != {IMAGES}:
        raise BadRequest(f"the query holds tensors {sorted(tensors)[:5]}; send exactly one, named {IMAGES!r}.")
    x = tensors[IMAGES]
    c, h, w = shape
    if x.dim() != 4:
        raise BadRequest(f"images have shape {tuple(x.shape)}; send a batch (B, C, H, W) = (B, {c}, {h}, {w}).")
    if x.dtype not in (torch.uint8, torch.float32):
        raise BadRequest(f"images are {x.dtype}; send uint8 (permutation keys) or float32 (other keys).")
    if x.shape[1] != c:
        raise BadRequest(f"images have {x.shape[1]} channels, the model takes {c}: send (B, {c}, {h}, {w}).")
    if tuple(x.shape[2:]) != (h, w):
        raise BadRequest(f"images are {x.shape[2]}x{x.shape[3]}, the model takes {h}x{w}: resize on the client, then "
                         f"encrypt.")
    if not 1 <= len(x) <= max_images:
        raise BadRequest(f"{len(x)} images in one request; send 1 to {max_images}.")
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise BadRequest(f"images hold {int((~torch.isfinite(x)).sum())} NaN or infinite values: send finite pixels.")
    return x


def _parse(body: bytes, what: str) -> dict[str, torch.Tensor]:
    read_metadata(body)  # refuses non-safetensors bodies (pickles, truncations) before the parser sees them
    try:
        return load_tensors(body)
    except (SafetensorError, RuntimeError, ValueError) as exc:
        raise BadRequest(f"the {what} is not a valid safetensors file ({exc}); it may be truncated: send it "
                         f"again.") from exc

