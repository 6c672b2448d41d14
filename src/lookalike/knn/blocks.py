"""What every stage of the engine shares: block ranges, zero-copy tensors, the working-memory
budget, and the record of what one search did."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

# Default working memory in MiB, as scikit-learn's `working_memory`. It bounds the blocks
# of scores and of base rows held at once. It does not count the inputs, the prepared
# copies of queries and base (materialised by `PreparedBase`), or the outputs.
WORKING_MEMORY_MIB = 1024
# The largest magnitude searched: float32's range, in which distances are screened and returned.
MAX_VALUE = float(np.finfo(np.float32).max)


# A block of scores up to this size is written into a buffer that each thread keeps between
# searches: a fresh block costs page faults and zeroing, measured at more than the GEMM that
# fills it (1,000 x 20,000 float32 scores: 45 ms of faults against 28 ms of GEMM at d = 64).
# It also bounds the small-size path's query blocks (`PreparedBase.query_block`): on the
# tutorial's shape (int8 screen, 90,000 rows of 2,048-d) blocks of 372 queries (128 MiB)
# searched 744 queries in 0.44 s against 0.48 s in blocks of 186 (64 MiB); 497 (the working
# memory's limit) gained nothing more. A thread's buffer uses memory only as far as the
# largest block it has held (a service's searches of a few queries touch little of it).
SCRATCH_MIB = 128
_scratch = threading.local()


def scratch(n: int, device: torch.device) -> torch.Tensor:
    """A float32 buffer of `n` elements for a block of scores: on the CPU and up to
    `SCRATCH_MIB`, this thread's own, kept between calls (its contents are overwritten by
    the next call); else a fresh one. The kept buffer is made at its full size at once: the
    memory is only reserved, and a page is given (faulted in) when first written, so a
    thread's buffer costs only as much as the largest block it has held, and a search whose
    blocks are larger than the last one's faults in only the pages past it (a buffer made
    anew to grow, as before, faulted its whole size in again: 134 MB, about 70 ms, when the
    bench's warm-up of 256 queries was followed by query blocks of 335)."""
    cap = SCRATCH_MIB * 2**20 // 4
    if device.type != "cpu" or n > cap:
        return torch.empty(n, device=device)
    buf = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = torch.empty(cap)
    return buf[:n]


def budget_bytes(working_memory: float | None) -> float:
    """The working memory in bytes (`WORKING_MEMORY_MIB` when None)."""
    return (working_memory or WORKING_MEMORY_MIB) * 2**20


@dataclass
class SearchStats:
    """What one search did: time per stage, candidates in the screen's windows, pairs reranked
    in float64 (after the fp32 refinement of a bf16 or int8 window where torch reranks: a GPU,
    `LOOKALIKE_JIT=0`), queries that fell back."""

    screen_dtype: str = "float32"
    screen_choice: str = ""  # why that screen, in words (with precision 'auto': the calibration's prediction)
    # "one block" (the small-size path: every score in one block), "query blocks" (the same,
    # one query block after another: each one's scores against the whole base in one block),
    # or "blocks" (base blocks through a running `Window`)
    path: str = ""
    prepare_s: float = 0.0
    screen_s: float = 0.0
    refine_s: float = 0.0
    rerank_s: float = 0.0
    fallback_s: float = 0.0
    candidates: int = 0
    reranked: int = 0
    fallbacks: int = 0
    blocks: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "blocks"} | {"block_shape": self.blocks}


def ranges(n: int, step: int) -> Iterator[tuple[int, int]]:
    """(lo, hi) of consecutive blocks of `step` out of `n`."""
    for lo in range(0, n, step):
        yield lo, min(lo + step, n)


def from_numpy(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Share `x`'s memory without copying; read-only arrays (memory maps) are only ever read.
    A tensor is returned as it is."""
    if isinstance(x, torch.Tensor):
        return x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(np.ascontiguousarray(x))


def as_tensor(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """`x` on `device`, float64 kept, any other float type as float32 (a tensor already
    there in that type is not copied)."""
    t = from_numpy(x)
    return t.to(device=device, dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
