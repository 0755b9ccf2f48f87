"""Where tensors run: device choice, bf16 autocast, host-to-device copies, and a hardware label.

On CUDA: bf16 autocast (half the memory traffic, float32's range), channels_last for the patch
embedding convolution, pinned host batches and non-blocking copies. Elsewhere everything runs in
float32, so CPU runs are bit-for-bit repeatable.
"""

from __future__ import annotations

import contextlib
import os
import platform

import torch
from torch import nn


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU; anything else is passed to torch.device."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def full_float32():
    """Disable TF32 for matmuls and convolutions inside the block (restored afterwards).

    On Ampere and newer GPUs cuDNN convolutions default to TF32 (10-bit mantissa): the patch embedding
    would then differ by ~1e-3 between plain and encrypted inputs, and Eq. (14) could not be checked.
    """
    precision = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move the model to the device; channels_last on CUDA helps the patch-embedding convolution."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host batch to the device; pinned and non-blocking on CUDA so the copy overlaps compute."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def hardware() -> str:
    """One line naming this machine, for figure and table labels."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__.split('+')[0]}"
    return f"CPU {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__.split('+')[0]}"
