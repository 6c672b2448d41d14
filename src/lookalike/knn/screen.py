"""Stages 1-2 of the engine: rows prepared for the screen, screened, and the error bound of
their screen scores.

A `Screen` is one metric at one precision: it prepares rows (centred, normalised, cast or
quantised), scores query rows against base rows (a GEMM, or a float64 cdist), and bounds how
far any score can be from the exact one. `PreparedBase` is a base made ready once, what
`fit` keeps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SearchError
from .blocks import as_tensor, budget_bytes, from_numpy, ranges
from .metrics import Metric, get_metric

UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8,
                 torch.float16: 2.0**-11}


def int8_dots(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Exact int32 dot products of int8 rows, a (m, d) against b (n, d) -> (m, n).

    torch._int_mm (VNNI/AMX on the CPU) returns garbage for d == 1 (torch 2.13, measured);
    that case is a plain outer product.
    """
    if a.shape[1] == 1:
        return torch.mul(a.int(), b.int().T, out=out)
    return torch._int_mm(a, b.T, out=out) if out is not None else torch._int_mm(a, b.T)


@dataclass
class Rows:
    """Rows ready for the screen, with the per-row figures the error bound needs."""

    data: torch.Tensor                 # screen operand: float32/bf16/fp16, int8, or float64 (cdist)
    l2: torch.Tensor                   # float64 L2 norm of the prepared rows (L1 where p == 1)
    sq: torch.Tensor | None = None     # float32 squared L2 norm (centred metrics)
    qerr: torch.Tensor | None = None   # float64 L2 norm of the quantisation error (int8 screens)
    scale: torch.Tensor | None = None  # float32 quantisation step (int8 screens)

    def __getitem__(self, sl: slice) -> Rows:
        return Rows(*(None if v is None else v[sl] for v in (self.data, self.l2, self.sq, self.qerr, self.scale)))


@dataclass
class Extent:
    """Largest per-row figures over a base, for bounds that hold for every candidate."""

    l2: float = 0.0
    qerr: float = 0.0

    def update(self, rows: Rows) -> None:
        self.l2 = max(self.l2, float(rows.l2.max()))
        if rows.qerr is not None:
            self.qerr = max(self.qerr, float(rows.qerr.max()))


class Screen:
    """How one metric is screened at one precision: operands, scores, and their error bound.

    Precisions: float32; bfloat16/float16 (fp32 accumulation, output rounded to the type);
    int8 (rows quantised with their own step, exact int32 accumulation: VNNI/AMX units run it
    about 3x faster than fp32 on the CPU).
    """

    def __init__(self, metric: Metric, d: int, dtype: torch.dtype, mean: torch.Tensor | None):
        self.metric, self.d, self.mean = metric, d, mean
        self.dtype = dtype if metric.gemm else torch.float64
        self.int8 = self.dtype == torch.int8
        if self.int8 and d * 127 * 127 >= 2**31:
            raise SearchError(f"an int8 screen needs d <= {(2**31 - 1) // 127**2} (int32 sums); d is {d}: "
                              "use fp32 or bf16")
        u32 = UNIT_ROUNDOFF[torch.float32]
        u_in = UNIT_ROUNDOFF[dtype] if dtype in (torch.bfloat16, torch.float16) else 0.0
        self.u_out = u_in  # a low-precision GEMM also rounds its output to its own type
        if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
            u_in = 2.0**-11  # CUDA may run fp32 GEMMs in TF32 (10-bit mantissa) when allowed
        self.gamma = d * u32 / (1 - d * u32)  # fp32 accumulation over d terms
        # relative error of each prepared element: centring or normalising, then the cast
        u_prep = u32 if metric.centred else (2 * u32 + self.gamma if metric.normalised else 0.0)
        self.u_c = u_prep + u_in + u_prep * u_in

    def prepare(self, x: torch.Tensor) -> Rows:
        """Raw rows -> centred / normalised, then cast or quantised for the screen."""
        if not self.metric.gemm:
            x = x.double()
            return Rows(x, self.norms(x))
        x = x.float()
        if self.metric.centred:
            x = x - self.mean
        elif self.metric.normalised:
            norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            x = x / torch.where(norms > 0, norms, 1.0)
        l2 = torch.linalg.vector_norm(x, dim=1)
        sq = l2 * l2 if self.metric.centred else None
        if not self.int8:
            return Rows(x.to(self.dtype), l2.double(), sq)
        scale = x.abs().amax(dim=1) / 127.0
        scale = torch.where(scale > 0, scale, 1.0)
        q = torch.round(x / scale[:, None]).clamp_(-127, 127)
        # |x - s q|, exactly known here; fp32 rounding of s q and of the difference: 2u |x|
        u32 = UNIT_ROUNDOFF[torch.float32]
        qerr = torch.linalg.vector_norm(x - q * scale[:, None], dim=1).double() * (1 + self.gamma)
        qerr += 2 * u32 * l2.double()
        return Rows(q.to(torch.int8), l2.double(), sq, qerr, scale)

    def norms(self, x: torch.Tensor) -> torch.Tensor:
        """Row norms for the bound (L1 for manhattan, p == 1), float64."""
        if self.metric.p == 1:
            return x.abs().sum(1).double()
        return torch.linalg.vector_norm(x, dim=1).double()

    def scores(self, q: Rows, b: Rows, out: torch.Tensor | None = None) -> torch.Tensor:
        """Screen scores (smaller is better) of query rows `q` against base rows `b`.

        `out`, a reused (len(q), len(b)) float32 buffer, saves allocating (and page-faulting)
        a fresh block of scores for every GEMM.
        """
        m = self.metric
        if not m.gemm:
            return torch.cdist(q.data, b.data, p=m.p)
        if self.int8:  # exact int32 dot products, then dots = sx * sy * D
            # the int32 sums land in the float buffer's own memory and are converted in place
            # (each element from itself), then scaled: 2.4x faster than one mixed-type torch.mul
            dots = int8_dots(q.data, b.data, out=None if out is None else out.view(torch.int32))
            dots = out.copy_(dots) if out is not None else dots.float()
            dots.mul_(b.scale[None, :])
            if m.centred:
                return torch.addcmul(b.sq[None, :], q.scale[:, None], dots, value=-2.0, out=dots)
            return dots.mul_(q.scale[:, None]).neg_()
        if q.data.dtype != torch.float32:  # bf16/fp16 GEMM: fp32 accumulation, output in q's type
            dots = (q.data @ b.data.T).float()
            return b.sq - 2 * dots if m.centred else -dots
        if m.centred:
            return torch.addmm(b.sq, q.data, b.data.T, beta=1.0, alpha=-2.0, out=out)
        return torch.mm(q.data, b.data.T, out=out).neg_()

    def bound(self, q: Rows, base: Extent) -> torch.Tensor:
        """Per query, the largest error any of its screen scores can carry (float64)."""
        m, u32 = self.metric, UNIT_ROUNDOFF[torch.float32]
        slack = 1.5  # covers the second-order terms left out below
        qn, ymax = q.l2, base.l2
        if not m.gemm:
            if m.p == math.inf:
                return torch.zeros_like(qn)  # differences and maxima of float32 inputs are exact in float64
            g64 = self.d * UNIT_ROUNDOFF[torch.float64] / (1 - self.d * UNIT_ROUNDOFF[torch.float64])
            return slack * 2 * g64 * (qn + ymax)
        cross = (2 * self.u_c + self.gamma + 3 * u32 + self.u_out) * qn * ymax
        if self.int8:
            # with x = x^ + e (x^ = sx qx, the quantised row; e its known error):
            # |x.y - x^.y^| = |ex.y + x.ey - ex.ey| <= |ex||y| + |x||ey| + |ex||ey|; x^.y^ =
            # sx sy D with D exact in int32, then fp32 rounding of the scaling
            quant = q.qerr * ymax + qn * base.qerr + q.qerr * base.qerr
            cross = cross + quant * (1 + 4 * u32)
        if m.centred:  # |y|^2 - 2 x.y: the cross term twice, the squared norm (fp32 sum) once
            return slack * (2 * cross + (2 * self.u_c + self.gamma + 2 * u32) * ymax**2)
        return slack * cross

    def limit(self, radius: float, q: Rows) -> torch.Tensor:
        """Per query, the exact screen score of a base row at distance `radius` (float64):
        rows within the radius (inner products: at least it) score no more."""
        m = self.metric
        if m.centred:  # score |y-m|^2 - 2 (x-m).(y-m) = |x-y|^2 - |x-m|^2
            return (radius if m.squared else radius**2) - q.l2**2
        if m.normalised:  # score -cos = distance - 1
            return torch.full_like(q.l2, radius - 1.0)
        if m.gemm:  # score -x.y
            return torch.full_like(q.l2, -radius)
        return torch.full_like(q.l2, radius)  # cdist: the distance itself


PREPARE_BYTES = 1 << 22  # fp32 rows centred or quantised at a time: their temporaries stay this small


def prepare_rows(screen: Screen, x: np.ndarray, device: torch.device, extent: Extent | None = None) -> Rows:
    """`screen.prepare` of all rows of `x`, a few MiB at a time, into arrays allocated once:
    the temporaries of centring and quantising never grow with the number of rows."""
    out: Rows | None = None
    for lo, hi in ranges(len(x), max(1, PREPARE_BYTES // (4 * max(1, screen.d)))):
        part = screen.prepare(as_tensor(x[lo:hi], device))
        if extent is not None:
            extent.update(part)
        if out is None:
            out = Rows(*(None if v is None else v.new_empty((len(x), *v.shape[1:])) for v in part.__dict__.values()))
        for name, v in part.__dict__.items():
            if v is not None:
                getattr(out, name)[lo:hi] = v
    if out is None:  # no rows
        return screen.prepare(as_tensor(x, device))
    return out


class PreparedBase:
    """A base made ready for the screen once, so that every search reuses it.

    With `materialise=False` (memory maps larger than the working memory) only the mean is
    kept, and each search prepares base blocks as it streams through them.
    """

    def __init__(self, xb: np.ndarray, metric: str | Metric = "euclidean", *, device: str | torch.device = "cpu",
                 screen_dtype: torch.dtype = torch.float32, working_memory: float | None = None,
                 materialise: bool | None = None):
        self.xb = xb
        self.metric = get_metric(metric)
        self.device = torch.device(device)
        self.nb, self.d = xb.shape
        self.working_memory = working_memory
        self.block = max(1, min(self.nb, 8192, int(self.budget / 4 // max(1, self.d * 8))))
        mean = self._mean() if self.metric.centred else None
        self.screen = Screen(self.metric, self.d, screen_dtype, mean)
        if materialise is None:
            materialise = not isinstance(xb, np.memmap)
        self.rows: Rows | None = None
        self.extent = Extent()
        self._raw: torch.Tensor | None = None
        if materialise:
            self.rows = prepare_rows(self.screen, xb, self.device, self.extent)
        # |prepared row| for every row; a streamed base fills it in as its blocks go by
        self.l2 = self.rows.l2 if self.rows is not None else torch.zeros(self.nb, dtype=torch.float64,
                                                                           device=self.device)

    @property
    def budget(self) -> float:
        """The working memory in bytes."""
        return budget_bytes(self.working_memory)

    def _mean(self) -> torch.Tensor:
        """Mean row of the base. Any centre keeps distances; a good one keeps norms small."""
        total = torch.zeros(self.d, dtype=torch.float64, device=self.device)
        for lo, hi in ranges(self.nb, self.block):
            total += as_tensor(self.xb[lo:hi], self.device).sum(0).double()
        return (total / max(1, self.nb)).float()

    def _prepare_block(self, lo: int, hi: int) -> Rows:
        rows = self.screen.prepare(as_tensor(self.xb[lo:hi], self.device))
        self.extent.update(rows)
        self.l2[lo:hi] = rows.l2
        return rows

    def raw_rows(self) -> torch.Tensor:
        """The base as given, as a tensor on the device: shared memory on the CPU, a copy
        (made once) on a GPU."""
        if self.device.type == "cpu":
            return from_numpy(self.xb)
        if self._raw is None:
            self._raw = as_tensor(self.xb, self.device)
        return self._raw

    def blocks(self, bb: int) -> Iterator[tuple[int, int, Rows]]:
        """(lo, hi, screen rows) for consecutive base blocks of `bb` rows."""
        for lo, hi in ranges(self.nb, bb):
            yield lo, hi, (self.rows[lo:hi] if self.rows is not None else self._prepare_block(lo, hi))

    def block_sizes(self, nq: int) -> tuple[int, int]:
        """(query rows, base rows) per block: a block of scores and its top-k workspace in
        half the working memory, a block of base rows in the other half."""
        elem = 1 if self.screen.int8 else torch.finfo(self.screen.dtype).bits // 8
        bb = max(1, min(self.nb, 8192, int(self.budget / 2 // max(1, self.d * (4 + elem)))))
        # 2048 x 8192 scores (64 MiB) keep the GEMM efficient; larger blocks only make the
        # passes over the scores (mask, top-k) slower.
        qb = max(1, min(nq, 2048, int(self.budget / 2 // (bb * 4 * 3))))
        return qb, bb

