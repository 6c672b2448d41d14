"""Which screen precision the engine uses. Results are exact whatever it is (the error bound
widens with lower precision and the float64 rerank decides); this only decides speed."""

from __future__ import annotations

import torch

from ..errors import LookalikeError
from ..features.device import cpu_has_fast_bf16
from .metrics import Metric

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}


def screen_dtype(precision: str, device: torch.device, metric: Metric) -> torch.dtype:
    """'fp32', 'bf16', 'int8', or 'auto': on CUDA bf16; on CPUs with AMX or AVX-512 BF16,
    bf16; else fp32. Metrics screened by cdist (manhattan, chebyshev) screen in float64.

    int8 (VNNI: 2.9x fp32's GEMM throughput here) is exact too but not chosen by 'auto': its
    quantisation bound is wide enough on 2048-d features that most queries fall back.
    """
    if precision not in ("auto", *PRECISIONS):
        raise LookalikeError(f"unknown precision {precision!r}; choose auto, fp32, bf16 or int8")
    if not metric.gemm:
        return torch.float32
    if precision != "auto":
        return PRECISIONS[precision]
    if device.type == "cuda":
        return torch.bfloat16
    if cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32
