"""Where a benchmark result comes from: the machine, the libraries, the commit, the date,
the command and how loaded the machine was. Every JSON under docs/bench/ carries it, so that
a figure in the docs can be traced to the run that made it (`benchmarks/docs.py`)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# The CPU features that decide which kernels run (what the docs' machine line names).
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
         "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
LIBRARIES = ("numpy", "scipy", "torch", "faiss-cpu", "scikit-learn", "keras", "tensorflow-cpu", "onnxruntime",
             "openvino", "cupy-cuda12x", "cuml", "cuvs")
CONDITIONS = ("shared machine (other jobs ran beside it): every variant in its own process, repeats "
              "interleaved (A, B, A, B), the best time of each kept; compare ratios within one run")


def machine() -> dict:
    """The machine: CPU model and the flags that matter, cores, memory, threads; and, for
    older readers, the flags as booleans."""
    import torch

    from ..hardware import cpu_flags, cpu_model

    flags = cpu_flags()
    try:
        memory_gib = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    return {"cpu": cpu_model(), "cpu_model": cpu_model(), "cpu_flags": [f for f in FLAGS if f in flags],
            "cores": os.cpu_count(), "memory_gib": memory_gib, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags, "avx512f": "avx512f" in flags,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def libraries() -> dict:
    """Versions of the libraries a benchmark may run (those installed)."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def commit() -> dict:
    """The git commit of the source tree that ran, and whether it had uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if head.returncode:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def provenance(command: list[str] | str | None = None) -> dict:
    """Commit, date (UTC), command and the load average now; call again at the end for
    `load_after` (see `finish`)."""
    cmd = command if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
    now = time.time()
    return {**commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "started_unix": round(now, 1),
            "command": cmd if isinstance(cmd, str) else " ".join(cmd),
            "load_before": _load(), "conditions": CONDITIONS}


def finish(record: dict) -> dict:
    """`record` (from `provenance`) with the load average at the end and the run's length."""
    return record | {"load_after": _load(), "wall_s": round(time.time() - record["started_unix"], 1)}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
