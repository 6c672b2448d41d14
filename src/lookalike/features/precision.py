"""The CNN's precision: bf16 where the hardware runs it fast and features stay close to fp32."""

from __future__ import annotations

import torch

from ..errors import ModelError
from ..hardware import cpu_has_fast_bf16

# What `--precision` may say for feature extraction (the kNN screen has its own list in
# `lookalike.knn.precision.SCREEN_PRECISIONS`).
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device, bf16_safe: bool = True) -> torch.dtype:
    """'auto' -> bf16 where it is fast (CUDA, AMX/AVX-512 BF16 CPUs) and keeps the model's
    features within cosine 0.999 of fp32 (`bf16_safe`), else fp32."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ModelError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if not bf16_safe:
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
