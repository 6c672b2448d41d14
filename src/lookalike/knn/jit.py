"""Compiled loops for the engine's CPU stages (numba).

Stages that torch runs as many small operations -- a gather, a dot product and an error
bound per candidate pair, a selection per query -- cost more in dispatch, temporaries and
passes over memory than in arithmetic at the sizes most searches have. Their CPU kernels are
compiled once with numba (cached on disk, `cache=True`) and run on torch's thread count.

`enabled()` says whether they are used: numba is a dependency, but an environment without it,
or `LOOKALIKE_JIT=0`, takes the torch path of each stage, which computes the same results
(tests run both). A GPU search always takes the torch path.
"""

from __future__ import annotations

import os
import threading

import torch

try:  # pragma: no cover - exercised by whichever environment runs the tests
    import numba

    # parallel kernels are called from several threads at once (the service): only a threadsafe
    # layer (OpenMP or TBB) takes that; numba's own `workqueue` would abort the process
    if numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "threadsafe"
except ImportError:  # pragma: no cover
    numba = None

__all__ = ["enabled", "load", "njit", "threads"]


def enabled(device: torch.device | str = "cpu") -> bool:
    """Whether the compiled kernels serve a search on `device` (the CPU only)."""
    return (numba is not None and torch.device(device).type == "cpu"
            and os.environ.get("LOOKALIKE_JIT", "1").strip() != "0")


def load() -> None:
    """Initialise numba's CPU target now: the imports of its implementations that its first
    compilation (or first load of a cached kernel) makes, about 0.26 s once per process. A
    benchmark counts it with the library's import (as FAISS's loading of its compiled code), not
    in the first fit; nothing else needs to call it."""
    if numba is not None:
        from numba.core.registry import cpu_target

        cpu_target.target_context.refresh()


def njit(*, parallel: bool = False, fastmath: bool = False):
    """`numba.njit` with the engine's settings: compiled on first call and cached on disk,
    releasing the GIL (the service searches from several threads). Without numba the
    decorated function stays plain Python, never called (`enabled()` is False)."""
    def wrap(fn):
        if numba is None:
            return fn
        try:
            return numba.njit(cache=True, nogil=True, parallel=parallel, fastmath=fastmath)(fn)
        except RuntimeError:  # no place to cache (code without a file): compiled anew in each process
            return numba.njit(nogil=True, parallel=parallel, fastmath=fastmath)(fn)
    return wrap


_threads = threading.local()  # the count this thread last gave numba (numba's count is per thread)


def threads(tasks: int | None = None) -> None:
    """Run parallel kernels on as many threads as torch uses (set before each parallel call:
    torch's count may change, e.g. `torch.set_num_threads` in a server), and on no more than
    the call's `tasks` (the iterations of its parallel loop): a loop of one task runs on the
    calling thread alone instead of waking a thread that has nothing to do and waiting for it
    (on a VM whose idle vCPUs sleep, a search of one query after a pause of a second took 12 ms
    instead of 0.4 ms). numba is only asked when the count differs from the one this thread
    last set (asking costs about 7 us, and a search of one query calls this five times)."""
    if numba is not None:
        want = torch.get_num_threads()
        n = max(1, min(want, numba.config.NUMBA_NUM_THREADS, tasks if tasks is not None else 1 << 30))
        if getattr(_threads, "n", None) != n:
            if numba.get_num_threads() != n:
                numba.set_num_threads(n)
            _threads.n = n
            if torch.get_num_threads() != want:
                # numba's first call launches its OpenMP threads, which sets the OpenMP thread
                # count torch reads too (the same libgomp) back to all the cores: a server's
                # one-thread stages ran torch on every core after their first search
                torch.set_num_threads(want)
