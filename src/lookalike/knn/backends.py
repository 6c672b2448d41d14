"""Backends behind `NearestNeighbors`, chosen in one place.

Each backend says whether it can serve a metric on a device (`is_usable_for`) and answers
`fit` and `kneighbors` on arrays. Heavy libraries are imported inside the backend that
needs them, so a missing one only removes that backend.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
import torch

from ..hardware import cpu_flags, resolve_device
from .blocks import SearchStats
from .engine import knn
from .refine import refines
from .screen import PreparedBase
from .metrics import Metric


class Backend:
    name = "backend"
    metrics: tuple[str, ...] = ("euclidean", "sqeuclidean", "cosine", "inner_product", "manhattan", "chebyshev")
    gpu_only = False
    module: str | None = None

    def installed(self) -> bool:
        return self.module is None or importlib.util.find_spec(self.module) is not None

    def is_usable_for(self, metric: Metric, device: torch.device) -> bool:
        if not self.installed() or metric.name not in self.metrics:
            return False
        return device.type == "cuda" or not self.gpu_only

    def config(self) -> str:
        return self.name

    def fit(self, X: np.ndarray, metric: Metric, device: torch.device, working_memory: float | None) -> Any:
        raise NotImplementedError

    def kneighbors(self, state: Any, Xq: np.ndarray, k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def drop_excluded(D: np.ndarray, I: np.ndarray, exclude: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From k + 1 results per row, drop the index `exclude[row]` (the query itself); a row
    where it is absent (a tie pushed it out) drops its last result instead."""
    keep = I != np.asarray(exclude)[:, None]
    keep[keep.all(1), -1] = False
    return D[keep].reshape(len(I), k), I[keep].reshape(len(I), k)


def _drop_self(D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From k + 1 results of a base searched against itself, drop each row's own index."""
    return drop_excluded(D, I, np.arange(len(I)), k)


class LookalikeBackend(Backend):
    """lookalike's exact engine: screen, bound, float64 rerank."""

    name = "lookalike"

    def __init__(self, precision: str = "auto"):
        self.precision = precision
        self.screen_dtype: torch.dtype | None = None  # chosen at fit, when the dimension is known
        self.last_stats: SearchStats | None = None

    def config(self) -> str:
        dtype = self.precision if self.screen_dtype is None else str(self.screen_dtype).removeprefix("torch.")
        refine = " + fp32 refine" if self.screen_dtype is not None and refines(self.screen_dtype) else ""
        return f"lookalike engine, {dtype} screen{refine} + float64 rerank"

    def fit(self, X, metric, device, working_memory):
        from .precision import screen_dtype

        self.screen_dtype = screen_dtype(self.precision, device, metric, X.shape[1], X.shape[0])
        return PreparedBase(X, metric.name, device=device, screen_dtype=self.screen_dtype,
                            working_memory=working_memory)

    def kneighbors(self, state, Xq, k, exclude_self):
        self.last_stats = SearchStats()
        return knn(Xq, state, k, exclude_self=exclude_self, stats=self.last_stats)


class SklearnBackend(Backend):
    name = "sklearn"
    module = "sklearn"
    metrics = ("euclidean", "sqeuclidean", "cosine", "manhattan", "chebyshev")

    def config(self) -> str:
        return "scikit-learn NearestNeighbors(algorithm='brute', n_jobs=-1)"

    def fit(self, X, metric, device, working_memory):
        from sklearn.neighbors import NearestNeighbors as SkNN

        return SkNN(algorithm="brute", metric=metric.name, n_jobs=-1).fit(X)

    def kneighbors(self, state, Xq, k, exclude_self):
        D, I = state.kneighbors(None if exclude_self else Xq, n_neighbors=k)
        return D.astype(np.float32), I.astype(np.int64)


class FaissBackend(Backend):
    """FAISS flat (brute-force) indexes on the CPU."""

    name = "faiss"
    module = "faiss"

    @staticmethod
    def configure_blas() -> str:
        """faiss-cpu's bundled OpenBLAS misdetects some AVX-512 CPUs and runs ~4x slow; name
        the core type for it before it loads, unless the user already chose one."""
        if "OPENBLAS_CORETYPE" not in os.environ and "avx512f" in cpu_flags():
            os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
        return os.environ.get("OPENBLAS_CORETYPE", "auto-detected")

    def config(self) -> str:
        return f"faiss IndexFlat (L2/IP/L1/Linf), OPENBLAS_CORETYPE={self.configure_blas()}"

    def fit(self, X, metric, device, working_memory):
        self.configure_blas()
        import faiss

        X = np.ascontiguousarray(X, dtype=np.float32)
        d = X.shape[1]
        if metric.name in ("euclidean", "sqeuclidean"):
            index = faiss.IndexFlatL2(d)
        elif metric.name in ("inner_product", "cosine"):
            index = faiss.IndexFlatIP(d)
            if metric.name == "cosine":
                X = _unit_rows(X)
        else:
            index = faiss.IndexFlat(d, faiss.METRIC_L1 if metric.name == "manhattan" else faiss.METRIC_Linf)
        index.add(X)
        return index, metric

    def kneighbors(self, state, Xq, k, exclude_self):
        index, metric = state
        Xq = np.ascontiguousarray(Xq, dtype=np.float32)
        if metric.name == "cosine":
            Xq = _unit_rows(Xq)
        D, I = index.search(Xq, k + 1 if exclude_self else k)
        if metric.name == "euclidean":  # FAISS returns squared L2
            D = np.sqrt(np.maximum(D, 0))
        elif metric.name == "cosine":
            D = 1.0 - D
        if exclude_self:
            D, I = _drop_self(D, I, k)
        return D.astype(np.float32), I.astype(np.int64)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.where(norms > 0, norms, 1)).astype(np.float32)


class TorchBackend(Backend):
    """What a user writes by hand: torch.cdist (or a matmul) and topk, in query blocks."""

    name = "torch"

    def config(self) -> str:
        return "torch cdist/mm + topk, float32"

    def fit(self, X, metric, device, working_memory):
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device), metric, working_memory

    def kneighbors(self, state, Xq, k, exclude_self):
        xb, metric, working_memory = state
        q_all = torch.from_numpy(np.ascontiguousarray(Xq, dtype=np.float32)).to(xb.device)
        step = max(1, int((working_memory or 1024) * 2**20 // (len(xb) * 4 * 2)))
        Ds, Is = [], []
        largest = metric.name == "inner_product"
        for lo in range(0, len(q_all), step):
            q = q_all[lo : lo + step]
            if metric.name in ("inner_product", "cosine"):
                if metric.name == "cosine":
                    q = torch.nn.functional.normalize(q, dim=1)
                    s = 1 - q @ torch.nn.functional.normalize(xb, dim=1).T
                else:
                    s = q @ xb.T
            else:
                p = {"manhattan": 1.0, "chebyshev": float("inf")}.get(metric.name, 2.0)
                s = torch.cdist(q, xb, p=p)
                if metric.name == "sqeuclidean":
                    s = s**2
            if exclude_self:
                r = torch.arange(lo, lo + len(q), device=s.device)
                s[r - lo, r] = -float("inf") if largest else float("inf")
            D, I = torch.topk(s, k, dim=1, largest=largest)
            Ds.append(D.cpu())
            Is.append(I.cpu())
        return torch.cat(Ds).numpy().astype(np.float32), torch.cat(Is).numpy().astype(np.int64)


class CumlBackend(Backend):
    """RAPIDS cuML NearestNeighbors, brute force on the GPU (the tutorial's GPU library)."""

    name = "cuml"
    module = "cuml"
    gpu_only = True
    metrics = ("euclidean", "sqeuclidean", "cosine", "inner_product", "manhattan", "chebyshev")

    def config(self) -> str:
        return "cuML NearestNeighbors(algorithm='brute')"

    def fit(self, X, metric, device, working_memory):
        from cuml.neighbors import NearestNeighbors as CuNN

        name = {"manhattan": "l1", "inner_product": "inner_product"}.get(metric.name, metric.name)
        return CuNN(algorithm="brute", metric=name).fit(np.ascontiguousarray(X, dtype=np.float32)), metric

    def kneighbors(self, state, Xq, k, exclude_self):
        model, metric = state
        D, I = model.kneighbors(np.ascontiguousarray(Xq, dtype=np.float32), n_neighbors=k + int(exclude_self))
        D, I = np.asarray(D), np.asarray(I).astype(np.int64)
        if exclude_self:
            D, I = _drop_self(D, I, k)
        return D.astype(np.float32), I


class CuvsBackend(Backend):
    """NVIDIA cuVS brute force on the GPU."""

    name = "cuvs"
    module = "cuvs"
    gpu_only = True
    metrics = ("euclidean", "sqeuclidean", "cosine", "inner_product")

    def config(self) -> str:
        return "cuVS brute_force"

    def fit(self, X, metric, device, working_memory):
        import cupy as cp
        from cuvs.neighbors import brute_force

        name = {"euclidean": "sqeuclidean"}.get(metric.name, metric.name)
        return brute_force.build(cp.asarray(X, dtype=cp.float32), metric=name), metric

    def kneighbors(self, state, Xq, k, exclude_self):
        import cupy as cp
        from cuvs.neighbors import brute_force

        index, metric = state
        D, I = brute_force.search(index, cp.asarray(Xq, dtype=cp.float32), k + int(exclude_self))
        D, I = cp.asnumpy(cp.asarray(D)), cp.asnumpy(cp.asarray(I)).astype(np.int64)
        if metric.name == "euclidean":
            D = np.sqrt(np.maximum(D, 0))
        if exclude_self:
            D, I = _drop_self(D, I, k)
        return D.astype(np.float32), I


BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (LookalikeBackend, SklearnBackend, FaissBackend, TorchBackend, CumlBackend, CuvsBackend)
}
# `auto` takes the first usable one. lookalike's engine comes first: it is the only backend
# whose neighbour sets are exact by construction, and `lookalike bench` measures it fastest.
AUTO_ORDER = ("lookalike", "cuvs", "cuml", "faiss", "torch", "sklearn")


def select(name: str, metric: Metric, device: str | torch.device) -> Backend:
    """The backend `name` ('auto' for the best usable one), ready for `metric` on `device`."""
    dev = resolve_device(device)
    if name == "auto":
        for candidate in AUTO_ORDER:
            backend = BACKENDS[candidate]()
            if backend.is_usable_for(metric, dev):
                return backend
        raise RuntimeError(f"internal: no backend serves metric {metric.name!r} on {dev}")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    backend = BACKENDS[name]()
    if not backend.installed():
        raise ValueError(f"backend {name!r} is not installed (pip install {backend.module})")
    if not backend.is_usable_for(metric, dev):
        need = "a CUDA device" if backend.gpu_only and dev.type != "cuda" else f"one of {backend.metrics}"
        raise ValueError(f"backend {name!r} cannot serve metric {metric.name!r} on {dev}: it needs {need}")
    return backend


def available(device: str | torch.device = "cpu") -> list[str]:
    """Backends installed and usable on `device`."""
    dev = resolve_device(device)
    return [n for n, b in BACKENDS.items() if b().installed() and (dev.type == "cuda" or not b.gpu_only)]
