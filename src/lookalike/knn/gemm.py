"""The fp32 screen's GEMM on the CPU: torch's BLAS (MKL), or NumPy's (OpenBLAS) when asked.

torch's CPU wheels multiply float32 matrices with MKL, NumPy's with OpenBLAS. On an AMD EPYC
with AVX-512 (2 cores) OpenBLAS took less CPU time than MKL on one thread (0.67x at 1,000 x
20,000 x 256; 0.29x against MKL's `addmm` at d = 64), but whole searches on both cores were
slower with it in wall time at every size measured (d = 64: 64 against 36 ms; the demo's
search: 18 against 10 ms; k = 1,000: 0.55 against 0.42 s), and a process that had run
OpenBLAS's thread pool once, even only to time it, searched more slowly afterwards with MKL as
well (its threads and torch's OpenMP threads then compete for the two cores: the demo's search
18 to 26 ms against 10 to 11). So no measurement is made in the process: torch's BLAS is the
default, and `LOOKALIKE_GEMM=numpy` takes OpenBLAS for whoever measures it faster on their
machine (`benchmarks/scaling.py` runs under either).

Both compute the same thing: rows times -2 (exact: a power of two), then one float32 GEMM
(sums of products rounded as a BLAS rounds them, bounded by `Screen.bound`'s gamma_d), then
`|y|^2` added (one float32 rounding, counted there as for `addmm`).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import InvalidParameter

PROVIDERS = ("torch", "numpy")


def provider() -> str:
    """The GEMM provider of fp32 screens on the CPU: `LOOKALIKE_GEMM`'s, else torch's."""
    forced = os.environ.get("LOOKALIKE_GEMM", "") or "torch"
    if forced not in PROVIDERS:
        raise InvalidParameter(f"LOOKALIKE_GEMM={forced!r}: use {' or '.join(PROVIDERS)}")
    return forced


def centred_scores(q: torch.Tensor, b: torch.Tensor, sq: torch.Tensor, out: torch.Tensor | None,
                   name: str) -> torch.Tensor:
    """`sq - 2 q b^T` (float32, CPU) into `out` (or a new tensor) with provider `name`."""
    if name == "torch":
        return torch.addmm(sq, q, b.T, beta=1.0, alpha=-2.0, out=out)
    out = out if out is not None else torch.empty((len(q), len(b)), dtype=torch.float32)
    np.matmul((q * -2.0).numpy(), b.numpy().T, out=out.numpy())
    return out.add_(sq)


def negated_dots(q: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None, name: str) -> torch.Tensor:
    """`-q b^T` (float32, CPU) into `out` (or a new tensor) with provider `name`."""
    if name == "torch":
        return torch.mm(q, b.T, out=out).neg_()
    out = out if out is not None else torch.empty((len(q), len(b)), dtype=torch.float32)
    np.matmul(torch.neg(q).numpy(), b.numpy().T, out=out.numpy())
    return out
