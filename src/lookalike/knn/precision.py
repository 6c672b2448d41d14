"""Which screen precision the engine uses. Results are exact whatever it is; this only decides speed."""

from __future__ import annotations

import torch

from ..features.device import cpu_has_fast_bf16
from .metrics import Metric


def screen_dtype(precision: str, device: torch.device, metric: Metric) -> torch.dtype:
    """'fp32', 'bf16', or 'auto': bf16 where matrix units run it natively (CUDA, AMX or
    AVX-512 BF16 CPUs) and the metric is screened by a GEMM, else fp32."""
    if precision == "fp32" or not metric.gemm:
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" or cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32
