"""The fp32 screen's GEMM on the CPU: torch's BLAS or NumPy's, whichever is faster here.

torch's CPU wheels multiply float32 matrices with MKL, NumPy's with OpenBLAS. Neither wins
everywhere: on an AMD EPYC with AVX-512 (2 cores) OpenBLAS took 0.67x MKL's time at
1,000 x 20,000 x 256 and 0.29x with MKL's `addmm` (the screen's `|y|^2 - 2 x.y`) at d = 64,
one thread, measured; on Intel CPUs MKL is often the faster. So the first fp32 screen of a
process times both on a block of its dimension class (`provider`), interleaved, the best of
three each, and keeps the faster for the process (about 40 ms of CPU, once). `LOOKALIKE_GEMM=torch|numpy` forces one.

Both compute the same thing: rows times -2 (exact: a power of two), then one float32 GEMM
(sums of products rounded as a BLAS rounds them, bounded by `Screen.bound`'s gamma_d), then
`|y|^2` added (one float32 rounding, counted there as for `addmm`).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import torch

PROVIDERS = ("torch", "numpy")
_lock = threading.Lock()
_chosen: dict[int, str] = {}  # dimension class -> provider


def _dimension_class(d: int) -> int:
    return int(min(4096, max(64, 1 << max(0, int(d) - 1).bit_length())))


def provider(d: int) -> str:
    """The GEMM provider of fp32 screens of `d` dimensions on the CPU: forced by
    `LOOKALIKE_GEMM`, else measured once per process and dimension class."""
    forced = os.environ.get("LOOKALIKE_GEMM", "")
    if forced in PROVIDERS:
        return forced
    dc = _dimension_class(d)
    with _lock:
        if dc not in _chosen:
            _chosen[dc] = _measure(dc)
        return _chosen[dc]


def _measure(d: int) -> str:
    """The faster provider on a block of 256 queries x (2^19 / d) rows x `d`, about 0.27
    GFLOP, with the pass over its scores that follows in torch (best of two, interleaved,
    after a warm-up), timed in CPU seconds of the process:
    a busy machine then lengthens both alike, where wall time would be noise."""
    rng = np.random.default_rng(0)
    q = torch.from_numpy(rng.random((256, d), dtype=np.float32))
    b = torch.from_numpy(rng.random((max(256, 2**19 // d), d), dtype=np.float32))
    sq = torch.linalg.vector_norm(b, dim=1) ** 2
    out = torch.empty((len(q), len(b)))
    best = dict.fromkeys(PROVIDERS, float("inf"))
    for rep in range(3):  # the first round warms both up and is not counted
        for name in PROVIDERS:
            t0 = time.process_time()
            centred_scores(q, b, sq, out, name).amin(1)  # and torch's next pass over the scores:
            if rep:  # a BLAS whose idle threads still spin would slow it
                best[name] = min(best[name], time.process_time() - t0)
    return min(PROVIDERS, key=lambda n: (best[n], PROVIDERS.index(n)))


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


def forget() -> None:
    """Drop this process's choices; for tests."""
    with _lock:
        _chosen.clear()
