"""Backends behind `NearestNeighbors`, chosen in one place (`select`).

A backend is built with its options (metric, device, working memory, precision), says whether
it can serve a metric on a device (`is_usable_for`), and answers `fit`, `kneighbors` and
`radius_neighbors` on arrays. What `fit` leaves is in attributes ending in `_`, which the
estimator exposes. Heavy libraries are imported inside the backend that needs them, so a
missing one only removes that backend.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np
import torch

from ..errors import InvalidParameter
from ..hardware import cpu_flags, resolve_device
from .blocks import SearchStats
from .engine import knn
from .metrics import METRICS, Metric, get_metric
from .precision import screen_choice
from .radius import radius_search
from .refine import check_representable, refines
from .scaling import float32_scale, rescaled
from .screen import PreparedBase


class Backend:
    """One way to search; subclasses set `name`, `module` (the library to import),
    `gpu_only`, `metrics` (the names they serve) and fill in `fit` and `kneighbors`.

    Parameters
    ----------
    metric : str or Metric
    device : torch device of the search ('cpu', 'cuda', ...).
    working_memory : MiB for blocks (None: the engine's default).
    precision : screen precision; only backends that screen (lookalike) use it, the others
        compute in float32.

    `radius_neighbors` runs on lookalike's exact engine, on the backend's device, unless the
    backend has its own (scikit-learn's); `radius_backend` names the engine that answers it
    (the estimator's `radius_backend_`): for FAISS and torch an fp32 base prepared once, on
    first use. A backend that cannot run on the device asked for is refused by `select`
    (`cpu_only`, `gpu_only`), never run elsewhere.

    `exact`: the neighbour sets are those of a float64 brute force, ties to the lower index
    (lookalike's engine); the others compute in float32, and may swap a neighbour for a point
    within their float32 error of the k-th distance (`lookalike.knn.verify`).
    `fit_includes` says what `fit` does for each (what a timed fit measures); the library's
    import is not part of it (`load`).

    Libraries that compute in float32 get rows scaled by a power of two (exact) when their
    magnitudes would overflow or underflow float32's squares (`scale_`; cosine rows each by
    their own), and their distances back unscaled; a result that is still not finite, or an
    index out of range, is refused (`InvalidParameter`), never returned.
    """

    name = "backend"
    module: str | None = None
    gpu_only = False
    cpu_only = False
    exact = False
    fit_includes = "a reference to the base"
    metrics: tuple[str, ...] = tuple(METRICS)
    records_stats = False  # fills in a SearchStats
    radius_backend = "lookalike"
    scales = True  # rows are scaled into float32's comfortable range before the library sees them
    scale_ = 1.0  # fitted: the power of two the base (and every query) is multiplied by
    screen_dtype_: torch.dtype | None = None  # fitted: the engine's screen precision (lookalike only)
    prepared_base_: PreparedBase | None = None  # fitted: the base made ready for the engine (lookalike only)
    screen_choice_: str | None = None  # fitted: why the engine screens in that precision (lookalike only)

    def __init__(self, metric: str | Metric = "euclidean", *, device: str | torch.device = "cpu",
                 working_memory: float | None = None, precision: str = "auto"):
        self.metric = get_metric(metric)
        self.device = torch.device(device)
        self.working_memory = working_memory
        self.precision = precision
        self._radius_base: PreparedBase | None = None

    @classmethod
    def installed(cls) -> bool:
        return cls.module is None or importlib.util.find_spec(cls.module) is not None

    @classmethod
    def load(cls) -> None:
        """Import the library (and configure it), so that a timed `fit` measures the fit alone."""
        if cls.module is not None:
            importlib.import_module(cls.module)

    @classmethod
    def runs_on(cls, device: torch.device) -> bool:
        """Whether this backend computes on `device` (never quietly on another one)."""
        return not cls.gpu_only if device.type != "cuda" else not cls.cpu_only

    @classmethod
    def is_usable_for(cls, metric: Metric, device: torch.device) -> bool:
        return cls.installed() and metric.name in cls.metrics and cls.runs_on(device)

    @property
    def config(self) -> str:
        """How this backend runs, in words."""
        return self.name

    def fit(self, X: np.ndarray) -> Backend:
        self.xb_ = X
        self._radius_base = None
        if not self.scales:
            return self._fit(X)
        self.scale_ = float32_scale(self.metric, X)
        return self._fit(rescaled(self.metric, X, self.scale_))

    def _fit(self, X: np.ndarray) -> Backend:
        raise NotImplementedError

    def kneighbors(self, Xq: np.ndarray, k: int, exclude_self: bool,
                   stats: SearchStats | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(D, I) of shape (nq, k); `Xq` is the base itself when `exclude_self`. `stats` is
        filled in by backends that record their stages (`records_stats`)."""
        D, I = self._kneighbors(rescaled(self.metric, Xq, self.scale_), k, exclude_self)
        D = np.asarray(D, dtype=np.float64) / self.scale_**self.metric.power
        check_representable(self.metric, D[np.isfinite(D)])  # distances float32 cannot hold: said so
        with np.errstate(over="ignore"):
            D32 = D.astype(np.float32)
        if not (np.isfinite(D32).all() and ((I >= 0) & (I < len(self.xb_))).all()):
            raise InvalidParameter(
                f"backend {self.name!r} computes in float32 and cannot search these values (up to "
                f"{max(np.abs(Xq).max(), np.abs(self.xb_).max()):.3g} in magnitude): its distances overflow or its "
                "indices are missing; use backend='lookalike', exact for any value float32 holds")
        return D32, I

    def _kneighbors(self, Xq: np.ndarray, k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
        """The library's (D, I) for rows scaled as the base was."""
        raise NotImplementedError

    def radius_neighbors(self, Xq: np.ndarray, radius: float, exclude_self: bool,
                         sort_results: bool) -> tuple[np.ndarray, np.ndarray]:
        """Object arrays of shape (nq,) of distances and indices within `radius`."""
        if self._radius_base is None:
            self._radius_base = PreparedBase(self.xb_, self.metric, device=self.device,
                                             working_memory=self.working_memory)
        return radius_search(Xq, self._radius_base, radius, exclude_self=exclude_self, sort_results=sort_results)


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
    """lookalike's exact engine: screen, bound, float64 rerank; radius search on the same base."""

    name = "lookalike"
    records_stats = True
    exact = True
    fit_includes = ("the engine's preparation of the base: centring (or normalising), scaling, and the cast or "
                    "int8 quantisation to the screen precision, with row norms")
    scales = False  # the engine scales rows itself, exactly, and reranks in float64

    @classmethod
    def load(cls) -> None:
        """numba's CPU target initialised (its once-a-process imports, ~0.26 s: the library's
        load, as FAISS's import loads its compiled code); each kernel is still loaded from the
        disk cache by the first fit or search that runs it."""
        from . import jit

        jit.load()

    @property
    def config(self) -> str:
        if self.screen_dtype_ is None:
            return f"lookalike engine, {self.precision} screen + float64 rerank"
        base = self.prepared_base_  # queries of the base's type assumed (float16 ones would be refined too)
        refine = " + fp32 refine" if refines(self.screen_dtype_, self.device, base.xb, base.xb) else ""
        out = f"lookalike engine, {str(self.screen_dtype_).removeprefix('torch.')} screen{refine} + float64 rerank"
        if self.precision == "auto" and self.screen_choice_:
            out += f" (auto: {self.screen_choice_})"
        return out

    def _fit(self, X):
        self.screen_dtype_, self.screen_choice_ = screen_choice(self.precision, self.device, self.metric,
                                                                X.shape[1], X.shape[0], sample=X)
        self.prepared_base_ = PreparedBase(X, self.metric, device=self.device, screen_dtype=self.screen_dtype_,
                                           working_memory=self.working_memory)
        self._recast: dict[torch.dtype, PreparedBase] = {}  # other screens, prepared on first use
        self._recast_lock = threading.Lock()
        self._probe_lock = threading.Lock()  # one probe at a time (the service searches from several threads)
        return self

    def kneighbors(self, Xq, k, exclude_self, stats=None):
        among = self._probe_among(len(Xq), k, exclude_self)
        if among:
            return self._probed(Xq, k, among, stats)
        base, why = self.base_for(len(Xq), k)
        if stats is not None:
            stats.screen_choice = why
        return knn(Xq, base, k, exclude_self=exclude_self, stats=stats)

    def _probe_among(self, nq: int, k: int, exclude_self: bool) -> tuple[str, ...]:
        """The screens a large `auto` search should time on its first queries before it runs
        (`calibrate.probe_wanted`); () when it should not (then `base_for` decides)."""
        from .calibrate import cached, probe_wanted

        fitted = self.prepared_base_
        if self.precision != "auto" or not self.metric.gemm or fitted.rows is None or exclude_self:
            return ()
        cal = cached(self.device, self.metric, fitted.d)
        if cal is None:
            return ()
        among = self._among(cal, k)
        return among if probe_wanted(cal, fitted.nb, nq, k, among) else ()

    def _among(self, cal, k: int) -> tuple[str, ...]:
        """The screens a search at `k` chooses among: those whose rows are no larger than the
        fitted one's (a search adds copies of the base no larger than the fitted one: bf16's
        and fp16's are the same size); every calibrated screen
        past the k the model measured (`calibrate.beyond_model`), where a low-precision fit can
        be many times slower than fp32 and only a probe tells (the copy it chooses is kept)."""
        from .calibrate import CANDIDATES, beyond_model
        from .screen import row_bytes

        size = row_bytes(self.prepared_base_.screen.dtype)
        return tuple(n for n, dt in CANDIDATES.items()
                     if n in cal.lines and (row_bytes(dt) <= size or beyond_model(k)))

    def _probed(self, Xq, k: int, among: tuple[str, ...], stats: SearchStats | None):
        """A large `auto` search that times each screen `among` on its first
        `calibrate.probe_queries` queries (after an untimed warm-up of a few, which pays any
        first-call costs; `PROBE_ROUNDS` rounds, the screens in turn, the best of each kept,
        unless the first round took more than `PROBE_ROUNDS_S`), keeps the fastest screen's
        results for them, records the choice (`calibrate.record_probe`) and searches the other
        queries on that screen. The copies of the base made for the screens not chosen are
        dropped."""
        import time

        from .calibrate import CANDIDATES, PROBE_ROUNDS, PROBE_ROUNDS_S, cached, probe_queries, record_probe

        fitted = self.prepared_base_
        head = Xq[:probe_queries(len(Xq), k, self.device)]
        times, found = {}, {}
        with self._probe_lock:
            bases = {name: self._prepared(CANDIDATES[name]) for name in among}
            for base in bases.values():
                knn(head[:8], base, k)  # untimed: buffers, compiled kernels
            for _ in range(PROBE_ROUNDS):  # the screens in turn, each round; the best time of each kept
                for name, base in bases.items():
                    st = SearchStats()
                    t0 = time.perf_counter()
                    out = knn(head, base, k, stats=st)
                    t = time.perf_counter() - t0
                    if t < times.get(name, float("inf")):
                        times[name], found[name] = t, (*out, st)
                if sum(times.values()) > PROBE_ROUNDS_S:  # a long probe is measured once
                    break
            choice = record_probe(self.device, self.metric, fitted.d, fitted.nb, len(Xq), k, times, len(head),
                                  {name: found[name][2].candidates for name in times})
            for name in among:
                if name != choice:
                    with self._recast_lock:
                        self._recast.pop(CANDIDATES[name], None)
        D0, I0, st0 = found[choice]
        st = stats if stats is not None else SearchStats()
        for f in ("prepare_s", "screen_s", "refine_s", "rerank_s", "fallback_s", "candidates", "reranked",
                  "fallbacks"):
            setattr(st, f, getattr(st, f) + getattr(st0, f))
        cal = cached(self.device, self.metric, fitted.d)
        st.screen_choice = cal.explain(fitted.nb, len(Xq), among, k) if cal is not None else choice
        if len(Xq) <= len(head):
            st.screen_dtype, st.path, st.blocks = st0.screen_dtype, st0.path, st0.blocks
            return D0, I0
        D1, I1 = knn(Xq[len(head):], self._prepared(CANDIDATES[choice]), k, stats=st)
        return np.concatenate([D0, D1]), np.concatenate([I0, I1])

    def base_for(self, nq: int, k: int = 1) -> tuple[PreparedBase, str]:
        """The prepared base a search of `nq` queries runs on, and why, in words.

        With `precision='auto'` the calibration that chose the fitted screen (for
        `PLAN_QUERIES` queries) chooses again for `nq`: a few queries read the whole base for
        little arithmetic, and a screen of smaller rows can then be faster. The choice is made
        among the screens whose rows are no larger than the fitted one's, so that memory grows
        by at most the smaller copies (bf16: half the base, int8: a quarter); such a copy is
        cast from the fitted rows on first use and kept. Past the k the model measured
        (`calibrate.beyond_model`), every screen is a candidate (`_among`), and a large search
        there is probed (`_probed`). A streamed (memory-mapped) base, and
        a precision given explicitly, keep the fitted screen.

        Past `calibrate.K_MEASURED` neighbours the calibration (measured at k = 10) says
        nothing of a bf16 or int8 window, which then holds the many rows whose coarse scores
        tie with the k-th (measured: 78x FAISS's time at k = 1000 with bf16): such a search
        takes the fp32 screen, cast from the fitted rows or, when those are smaller, prepared
        from the base on first use (a copy of the base's size, kept).
        """
        from .calibrate import CANDIDATES, K_MEASURED, cached

        fitted = self.prepared_base_
        if self.precision != "auto" or not self.metric.gemm or fitted.rows is None:
            return fitted, self.screen_choice_ or ""
        if k > K_MEASURED:
            return self._prepared(torch.float32), (f"fp32 screen: k = {k:,} is past the {K_MEASURED} neighbours up to "
                                                   "which the calibration measured the low-precision screens' windows")
        cal = cached(self.device, self.metric, fitted.d)
        if cal is None:  # LOOKALIKE_CALIBRATION=0 and another process's memory: keep what fit chose
            return fitted, self.screen_choice_ or ""
        among = self._among(cal, k)
        dtype = CANDIDATES[cal.choice(fitted.nb, nq, among, k)]
        why = cal.explain(fitted.nb, nq, among, k)
        return self._prepared(dtype), why

    def _prepared(self, dtype: torch.dtype) -> PreparedBase:
        """The base prepared for a screen at `dtype`: the fitted one, or another made on first use and kept."""
        fitted = self.prepared_base_
        if dtype == fitted.screen.dtype:
            return fitted
        with self._recast_lock:
            if dtype not in self._recast:
                self._recast[dtype] = (fitted.recast(dtype) if fitted.screen.dtype == torch.float32 else
                                       PreparedBase(fitted.xb, self.metric, device=self.device, screen_dtype=dtype,
                                                    working_memory=self.working_memory))
            return self._recast[dtype]

    def radius_neighbors(self, Xq, radius, exclude_self, sort_results):
        return radius_search(Xq, self.prepared_base_, radius, exclude_self=exclude_self, sort_results=sort_results)


class SklearnBackend(Backend):
    name = "sklearn"
    module = "sklearn"
    cpu_only = True
    fit_includes = "scikit-learn's input validation and a float32 copy of the base (brute force stores it)"

    @classmethod
    def load(cls) -> None:
        importlib.import_module("sklearn.neighbors")
    metrics = tuple(n for n, m in METRICS.items() if m.sklearn)
    radius_backend = "sklearn"

    @property
    def config(self) -> str:
        import sklearn

        return (f"scikit-learn {sklearn.__version__} NearestNeighbors(algorithm='brute', "
                f"metric={self.metric.sklearn!r}, n_jobs=-1), imported before the timed fit")

    def _fit(self, X):
        from sklearn.neighbors import NearestNeighbors as SkNN

        self.model_ = SkNN(algorithm="brute", metric=self.metric.sklearn, n_jobs=-1).fit(X)
        return self

    def _kneighbors(self, Xq, k, exclude_self):
        D, I = self.model_.kneighbors(None if exclude_self else Xq, n_neighbors=k)
        return D.astype(np.float32), I.astype(np.int64)

    def radius_neighbors(self, Xq, radius, exclude_self, sort_results):
        unit = self.scale_**self.metric.power
        D, I = self.model_.radius_neighbors(None if exclude_self else rescaled(self.metric, Xq, self.scale_),
                                            radius=radius * unit, sort_results=sort_results)
        if unit != 1.0:
            for i, d in enumerate(D):
                D[i] = d / unit
        return D, I


class FaissBackend(Backend):
    """FAISS flat (brute-force) indexes on the CPU."""

    name = "faiss"
    module = "faiss"
    cpu_only = True  # faiss-cpu; a GPU FAISS would be a backend of its own
    fit_includes = "copying the base into an IndexFlat (cosine: rows made unit length first)"

    @classmethod
    def load(cls) -> None:
        cls.configure_blas()  # before faiss loads its OpenBLAS
        super().load()

    @staticmethod
    def configure_blas() -> str:
        """faiss-cpu's bundled OpenBLAS misdetects some AVX-512 CPUs and runs ~4x slow; name
        the core type for it before it loads, unless the user already chose one."""
        if "OPENBLAS_CORETYPE" not in os.environ and "avx512f" in cpu_flags():
            os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
        return os.environ.get("OPENBLAS_CORETYPE", "auto-detected")

    @property
    def config(self) -> str:
        import faiss

        t = faiss.cvar.distance_compute_blas_threshold
        how = ("BLAS GEMM for every batch" if t <= 1 else "SIMD loop, never BLAS" if t >= 2**30
               else f"BLAS GEMM for batches of {t} queries or more, SIMD loop below")
        blas = f", distance_compute_blas_threshold={t} ({how})" if self.metric.gemm else ""
        return (f"faiss {faiss.__version__} IndexFlat{self.metric.faiss}, {faiss.omp_get_max_threads()} OpenMP "
                f"threads, OPENBLAS_CORETYPE={self.configure_blas()} (set before faiss loaded){blas}")

    def _fit(self, X):
        self.configure_blas()
        import faiss

        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.metric.normalised:
            X = _unit_rows(X)
        self.index_ = faiss.IndexFlat(X.shape[1], getattr(faiss, f"METRIC_{self.metric.faiss}"))
        self.index_.add(X)
        return self

    def _kneighbors(self, Xq, k, exclude_self):
        m = self.metric
        Xq = np.ascontiguousarray(Xq, dtype=np.float32)
        if m.normalised:
            Xq = _unit_rows(Xq)
        D, I = self.index_.search(Xq, k + 1 if exclude_self else k)
        if m.normalised:  # inner products of unit rows
            D = 1.0 - D
        elif m.p == 2:
            D = m.from_squared_l2(D)
        if exclude_self:
            D, I = _drop_self(D, I, k)
        return D.astype(np.float32), I.astype(np.int64)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.where(norms > 0, norms, 1)).astype(np.float32)


class TorchBackend(Backend):
    """What a careful user writes by hand in torch: float32 on the device, under
    `torch.inference_mode()`, queries in blocks whose scores fit the working memory; squared
    L2 as |b|^2 - 2 q.b (one addmm, base norms computed at fit; |q|^2 and the root added to
    the k kept only), cosine as a GEMM of unit rows, inner products as a GEMM, manhattan and
    chebyshev by `torch.cdist`; then `torch.topk`."""

    name = "torch"
    fit_includes = "the base as a float32 tensor on the device, its squared norms (L2) or unit rows (cosine)"

    @property
    def config(self) -> str:
        m = self.metric
        how = ("|b|^2 - 2 q.b by addmm" if m.p == 2 else "unit rows, mm" if m.normalised else "mm" if m.p is None
               else "torch.cdist")
        threads = f", {torch.get_num_threads()} threads" if self.device.type == "cpu" else ""
        return (f"torch {torch.__version__} float32 on {self.device}{threads}: {how} + topk, inference_mode, "
                f"query blocks within {self.working_memory or 1024:g} MiB of scores")

    def _fit(self, X):
        with torch.inference_mode():
            xb = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(self.device)
            if self.metric.normalised:
                xb = torch.nn.functional.normalize(xb, dim=1)
            self.xb_t_ = xb
            self.xb_sq_ = (xb * xb).sum(1) if self.metric.p == 2 else None
        return self

    @torch.inference_mode()
    def _kneighbors(self, Xq, k, exclude_self):
        m, xb = self.metric, self.xb_t_
        q_all = torch.from_numpy(np.ascontiguousarray(Xq, dtype=np.float32)).to(xb.device)
        step = max(1, int((self.working_memory or 1024) * 2**20 // (len(xb) * 4 * 2)))
        Ds, Is = [], []
        for lo in range(0, len(q_all), step):
            q = q_all[lo : lo + step]
            if m.p == 2:  # the smallest |b|^2 - 2 q.b are the nearest
                s = torch.addmm(self.xb_sq_[None, :], q, xb.T, alpha=-2)
            elif m.p is None:
                s = -(torch.nn.functional.normalize(q, dim=1) @ xb.T) if m.normalised else q @ xb.T
            else:
                s = torch.cdist(q, xb, p=m.p)
            if exclude_self:
                r = torch.arange(lo, lo + len(q), device=s.device)
                s[r - lo, r] = -float("inf") if m.largest_first else float("inf")
            D, I = torch.topk(s, k, dim=1, largest=m.largest_first)
            if m.p == 2:
                D = (D + (q * q).sum(1, keepdim=True)).clamp_min_(0)
                D = D if m.squared else D.sqrt_()
            elif m.normalised:
                D = 1 + D
            Ds.append(D.cpu())
            Is.append(I.cpu())
        return torch.cat(Ds).numpy().astype(np.float32), torch.cat(Is).numpy().astype(np.int64)


class CumlBackend(Backend):
    """RAPIDS cuML NearestNeighbors, brute force on the GPU (the tutorial's GPU library)."""

    name = "cuml"
    module = "cuml"
    gpu_only = True
    fit_includes = "copying the base to the GPU"

    @property
    def config(self) -> str:
        return "cuML NearestNeighbors(algorithm='brute')"

    def _fit(self, X):
        from cuml.neighbors import NearestNeighbors as CuNN

        self.model_ = CuNN(algorithm="brute", metric=self.metric.cuml).fit(np.ascontiguousarray(X, dtype=np.float32))
        return self

    def _kneighbors(self, Xq, k, exclude_self):
        D, I = self.model_.kneighbors(np.ascontiguousarray(Xq, dtype=np.float32), n_neighbors=k + int(exclude_self))
        D, I = np.asarray(D), np.asarray(I).astype(np.int64)
        if exclude_self:
            D, I = _drop_self(D, I, k)
        return D.astype(np.float32), I


class CuvsBackend(Backend):
    """NVIDIA cuVS brute force on the GPU."""

    name = "cuvs"
    module = "cuvs"
    gpu_only = True
    fit_includes = "copying the base to the GPU and building the brute-force index"
    metrics = tuple(n for n, m in METRICS.items() if m.cuvs)

    @property
    def config(self) -> str:
        return "cuVS brute_force"

    def _fit(self, X):
        import cupy as cp
        from cuvs.neighbors import brute_force

        self.index_ = brute_force.build(cp.asarray(X, dtype=cp.float32), metric=self.metric.cuvs)
        return self

    def _kneighbors(self, Xq, k, exclude_self):
        import cupy as cp
        from cuvs.neighbors import brute_force

        D, I = brute_force.search(self.index_, cp.asarray(Xq, dtype=cp.float32), k + int(exclude_self))
        D, I = cp.asnumpy(cp.asarray(D)), cp.asnumpy(cp.asarray(I)).astype(np.int64)
        if self.metric.p == 2:  # cuVS's sqeuclidean serves both L2 metrics
            D = self.metric.from_squared_l2(D)
        if exclude_self:
            D, I = _drop_self(D, I, k)
        return D.astype(np.float32), I


BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (LookalikeBackend, SklearnBackend, FaissBackend, TorchBackend, CumlBackend, CuvsBackend)
}
# `auto` takes the first usable one. lookalike's engine comes first on every device because
# it is the only backend whose neighbour sets are exact by construction: a choice of
# exactness, not of speed. No measurement on a GPU backs a speed ranking against cuVS or
# cuML (benchmarks/gpu.py measures it where a GPU is at hand); on the CPU, `lookalike bench`
# says per workload which is faster (docs/benchmarks.md). Name a backend to choose another.
AUTO_ORDER = ("lookalike", "cuvs", "cuml", "faiss", "torch", "sklearn")


def select(name: str, metric: str | Metric, device: str | torch.device = "auto", *,
           working_memory: float | None = None, precision: str = "auto") -> Backend:
    """The backend `name` ('auto' for the best usable one), built for `metric` on `device`
    with its options, not yet fitted. `device='auto'` is CUDA when present, except for a
    library that runs on the CPU only (scikit-learn, faiss-cpu), which it runs there: only a
    device asked for by name is refused."""
    metric = get_metric(metric)
    cls = BACKENDS.get(name)
    cpu_only = cls is not None and cls.cpu_only
    dev = resolve_device("cpu" if cpu_only and str(device) == "auto" else device)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidParameter(f"no CUDA device {dev}: this machine has {torch.cuda.device_count()}")
    options = {"device": dev, "working_memory": working_memory, "precision": precision}
    if name == "auto":
        for candidate in AUTO_ORDER:
            if BACKENDS[candidate].is_usable_for(metric, dev):
                return BACKENDS[candidate](metric, **options)
        raise RuntimeError(f"internal: no backend serves metric {metric.name!r} on {dev}")
    if cls is None:
        raise InvalidParameter(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    if not cls.installed():
        raise InvalidParameter(f"backend {name!r} is not installed (pip install {cls.module})")
    if not cls.runs_on(dev):
        need = "a CUDA device" if cls.gpu_only else "the CPU: use device='cpu'"
        raise InvalidParameter(f"backend {name!r} cannot run on {dev}: it runs on {need}")
    if not cls.is_usable_for(metric, dev):
        raise InvalidParameter(f"backend {name!r} cannot serve metric {metric.name!r} on {dev}: it needs one of "
                               f"{cls.metrics}")
    return cls(metric, **options)


def available(device: str | torch.device = "cpu") -> list[str]:
    """Backends installed and usable on `device`."""
    dev = resolve_device(device)
    return [n for n, b in BACKENDS.items() if b.installed() and b.runs_on(dev)]
