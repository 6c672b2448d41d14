"""Which screen precision the engine uses. Results are exact whatever it is (the error bound
widens with lower precision; the fp32 refinement and the float64 rerank decide); this only
decides speed, and `auto` decides it by measuring (`calibrate.py`), never from CPU flags."""

from __future__ import annotations

import torch

from ..errors import InvalidParameter
from .metrics import Metric

# fp16: fp32 output of an fp16 GEMM, for GPUs (on the CPU it runs as fp32; `screen.half_dots`)
# int16: rows in two int8 levels, multiplied on the int8 units (`screen.Screen`)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8,
              "int16": torch.int16}
# What `precision=` (and `--precision` of the kNN commands) may say.
SCREEN_PRECISIONS = ("auto", *PRECISIONS)


def screen_choice(precision: str, device: torch.device, metric: Metric, d: int, nb: int,
                  sample=None, nq: int | None = None) -> tuple[torch.dtype, str]:
    """The screen's dtype for `nq` queries against a base of `nb` rows of `d` dimensions,
    and why, in words.

    'fp32', 'bf16', 'fp16', 'int8', 'int16' are taken as given; 'auto' is the fastest screen measured on this
    device for this metric and dimension class (`calibrate.choose`, cached per machine; it
    measures on `sample`, rows of the base, when the class has no calibration yet) for `nq`
    queries (None: the calibration's `PLAN_QUERIES`, for a base prepared before its queries
    are known).
    Metrics screened by cdist (manhattan, chebyshev) screen in float64 whatever is asked.
    """
    if precision not in SCREEN_PRECISIONS:
        raise InvalidParameter(f"unknown precision {precision!r}; choose {', '.join(SCREEN_PRECISIONS)}")
    if not metric.gemm:
        return torch.float32, f"{metric.name} is screened by cdist in float64 (no GEMM screen)"
    if precision != "auto":
        why = f"{precision} screen as asked"
        if precision == "fp16" and torch.device(device).type != "cuda":
            why += f" (on the {torch.device(device).type} an fp32 GEMM of fp16-rounded rows: no faster than fp32)"
        return PRECISIONS[precision], why
    from .calibrate import PLAN_QUERIES, choose

    return choose(torch.device(device), metric, int(d), int(nb), sample, PLAN_QUERIES if nq is None else int(nq))


def screen_dtype(precision: str, device: torch.device, metric: Metric, d: int, nb: int,
                 nq: int | None = None) -> torch.dtype:
    """The dtype of `screen_choice`."""
    return screen_choice(precision, device, metric, d, nb, nq=nq)[0]
