"""Which screen precision the engine uses. Results are exact whatever it is (the error bound
widens with lower precision; the fp32 refinement and the float64 rerank decide); this only
decides speed."""

from __future__ import annotations

import torch

from ..errors import InvalidParameter
from ..hardware import cpu_has_fast_bf16, cpu_has_fast_int8
from .metrics import Metric

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}
# What `precision=` (and `--precision` of the kNN commands) may say.
SCREEN_PRECISIONS = ("auto", *PRECISIONS)


# When int8 pays: thresholds set from runs on an earlier 2-core AVX-512 VNNI CPU without AMX
# whose results were not committed, so they are a rule of thumb, not a measurement of the
# machine at hand (choosing by measurement is the issue "Speed that follows the hardware").
# The reasoning: below ~512 dimensions the GEMM is too small a share of the work for int8 to
# pay; and the int8 window holds tens of candidates a query, each refined in fp32, which on
# small bases costs about what the int8 screen saves. `lookalike bench --precision int8`
# and `--precision fp32` measure both on any machine.
INT8_MIN_DIM = 512
INT8_MIN_ROWS = 50_000


def screen_dtype(precision: str, device: torch.device, metric: Metric, d: int | None = None,
                 nb: int | None = None) -> torch.dtype:
    """'fp32', 'bf16', 'int8', or 'auto': on CUDA bf16; on CPUs with AMX or AVX-512 BF16,
    bf16; on CPUs with int8 dot-product units (VNNI, AMX-INT8) int8 for bases of at least
    50,000 rows of at least 512 dimensions (`d`, `nb`); else fp32. Metrics screened by cdist
    (manhattan, chebyshev) screen in float64.
    """
    if precision not in SCREEN_PRECISIONS:
        raise InvalidParameter(f"unknown precision {precision!r}; choose {', '.join(SCREEN_PRECISIONS)}")
    if not metric.gemm:
        return torch.float32
    if precision != "auto":
        return PRECISIONS[precision]
    if device.type == "cuda":
        return torch.bfloat16
    if cpu_has_fast_bf16():
        return torch.bfloat16
    if (cpu_has_fast_int8() and d is not None and INT8_MIN_DIM <= d < 2**31 // 127**2
            and nb is not None and nb >= INT8_MIN_ROWS):
        return torch.int8
    return torch.float32
