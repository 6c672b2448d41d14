"""Stages 1-2 of the engine: rows prepared for the screen, screened, and the error bound of
their screen scores.

A `Screen` is one metric at one precision: it prepares rows (scaled, centred, normalised,
cast or quantised), scores query rows against base rows (a GEMM, or a float64 cdist), and
bounds how far any score can be from the exact one. `PreparedBase` is a base made ready once,
what `fit` keeps.

Magnitudes: the screen works on rows scaled by a power of two, which is exact (short of
underflow, which the bound counts as an absolute error), so that the base's largest element
lies in [0.5, 1): any float32 value, 1e-45 or 3e38, screens without overflow, and so does a
float64 value within float32's range (`MAX_VALUE`; larger ones are refused). Cosine rows are
scaled one by one (the metric ignores each row's length); euclidean, sqeuclidean and inner
products share the base's scale, and a query row that this scale would carry past
`SAFE_SCALED` is screened in float64 instead (`PreparedBase.query_scales`).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidParameter, SearchError
from . import gemm, quantise
from .blocks import MAX_VALUE, SCRATCH_MIB, as_tensor, budget_bytes, from_numpy, ranges
from .scaling import COMFORT, RERANK_SCALE_EXP, pow2_of, pow2_scale
from .metrics import Metric, get_metric

UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8,
                 torch.float16: 2.0**-11}
SAFE_SCALED = 2.0**40  # scaled query elements up to this screen in fp32 without overflow (d < 2^31)
# ... and in fp16, whose largest finite value is 65,504: a scaled row up to 2^14, centred on a
# mean within 8, stays finite when cast (the base's own rows lie within 1, or within 8 for a base
# whose scale is clamped at 2^-125; centred, within twice that)
SAFE_HALF = 2.0**14
SCALE_EXP = 125  # shared scales stay within 2^-125 .. 2^125, normal float32 numbers
# Query blocks of rows this short (a GEMM of few terms a score) keep their scores within the
# CPU's caches: written and read back there, not in memory, and no new pages of the kept buffer
# to fault in. 1,000 x 20,000 int8, k = 10 (ms, the first search after one of 256 queries /
# warm): d = 64, one block 38 / 20, blocks of 104 queries (8 MiB; the rule below gives 128)
# 19 / 18; d = 256, 47 / 29 against 29 / 28 in blocks of 128. Blocks of fewer queries than
# CACHE_BLOCK_ROWS made the GEMM slower (nb = 100,000, d = 256: 175 against 141 ms in blocks
# of 64 queries), so larger bases keep theirs; and only the int8 screen takes them: torch's
# fp32 GEMM (MKL) was far slower on blocks of 128 queries (d = 256: 105 against 68 ms).
CACHE_BLOCK_D = 256
CACHE_BLOCK_BYTES = 8 * 2**20
CACHE_BLOCK_ROWS = 128


def comfortable(row_max: torch.Tensor | np.ndarray) -> bool:
    """Whether rows with these largest values square and sum in float32 with no over- or
    underflow (zero rows included), so that cosine needs no scaling of its own."""
    r = torch.as_tensor(row_max)
    return bool(((r == 0) | ((r >= 1 / COMFORT) & (r <= COMFORT))).all())


def check_magnitude(amax: float, what: str = "the data") -> None:
    """Refuse values beyond float32's range: their distances cannot be screened, nor returned."""
    if math.isnan(amax) or math.isinf(amax):
        raise InvalidParameter(f"{'NaN' if math.isnan(amax) else 'infinity'} in {what}; lookalike searches "
                               "finite values")
    if amax > MAX_VALUE:
        raise InvalidParameter(
            f"values up to {amax:.3g} in magnitude in {what}; lookalike searches values within "
            f"+-{MAX_VALUE:.3g} (float32's range): scale the data down first")


def int8_dots(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None,
              pad: bool | None = None) -> torch.Tensor:
    """Exact int32 dot products of int8 rows, a (m, d) against b (n, d) -> (m, n).

    torch._int_mm (VNNI/AMX on the CPU) returns garbage for d == 1 (torch 2.13, measured);
    that case is a plain outer product. On a GPU (or with `pad`) shapes that cuBLASLt's int8
    GEMM refuses (m <= 16, d or n not a multiple of 8) are padded with zero rows and columns,
    which add nothing to any dot product, and the (m, n) corner is kept.
    """
    m, d = a.shape
    n = b.shape[0]
    if d == 1:
        return torch.mul(a.int(), b.int().T, out=out)
    if pad if pad is not None else a.device.type == "cuda":
        # an int16 screen's operands are column views of its rows: dense copies for cuBLASLt
        a, b = a.contiguous(), b.contiguous()
        pm, pd, pn = max(m, 17), -(-d // 8) * 8, -(-n // 8) * 8
        if (pm, pd, pn) != (m, d, n):
            a = torch.nn.functional.pad(a, (0, pd - d, 0, pm - m))
            b = torch.nn.functional.pad(b, (0, pd - d, 0, pn - n))
            dots = torch._int_mm(a, b.T)[:m, :n]
            return dots if out is None else out.copy_(dots)
    return torch._int_mm(a, b.T, out=out) if out is not None else torch._int_mm(a, b.T)


_half_forms: dict[torch.device, str] = {}  # per GPU, the form of `half_dots` that ran there first


def half_dots(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """float32 dot products of float16 rows, a (m, d) against b (n, d) -> (m, n): each product
    exact (11 by 11 bits), summed and written in float32. On a GPU one fp16 GEMM with float32
    output (`torch.mm(..., out_dtype=torch.float32)`, tensor cores), into `out` where torch
    takes it; elsewhere, or where a GPU's torch refuses both forms (found once per device,
    with a warning), an fp32 GEMM of the same rows widened (the same products; no faster
    than fp32)."""
    form = _half_forms.get(a.device, "out") if a.device.type == "cuda" else "widened"
    if form == "out" and out is not None:
        try:
            return torch.mm(a, b.T, out_dtype=torch.float32, out=out)
        except torch.OutOfMemoryError:
            raise
        except (TypeError, RuntimeError, NotImplementedError):
            form = _half_forms[a.device] = "plain"  # no `out` for it in this torch
    if form in ("out", "plain"):
        try:
            dots = torch.mm(a, b.T, out_dtype=torch.float32)
            return dots if out is None else out.copy_(dots)
        except torch.OutOfMemoryError:
            raise
        except (TypeError, RuntimeError, NotImplementedError) as exc:
            _half_forms[a.device] = "widened"
            warnings.warn(f"the fp16 screen runs as fp32 on {a.device}: torch {torch.__version__} has no fp16 GEMM "
                          f"with float32 output there ({type(exc).__name__}); precision 'bf16' or 'int8' may be "
                          "faster", RuntimeWarning, stacklevel=2)
    return torch.mm(a.float(), b.float().T, out=out)


def fp32_gemm_roundoff() -> float:
    """The relative rounding of each input of a float32 GEMM, as torch may run it: 0 by
    default; TF32's 2^-11 where `torch.backends.cuda.matmul.allow_tf32` or
    `torch.set_float32_matmul_precision('high')` allows it; bf16's 2^-8 with 'medium'."""
    precision = torch.get_float32_matmul_precision()
    if precision == "medium":
        return UNIT_ROUNDOFF[torch.bfloat16]
    return 2.0**-11 if precision == "high" or torch.backends.cuda.matmul.allow_tf32 else 0.0


@dataclass
class Rows:
    """Rows ready for the screen, with the per-row figures the error bound needs."""

    data: torch.Tensor                 # screen operand: float32/bf16/fp16, int8, or float64 (cdist)
    l2: torch.Tensor                   # float64 L2 norm of the prepared rows (L1 where p == 1)
    sq: torch.Tensor | None = None     # float32 squared L2 norm (centred metrics)
    qerr: torch.Tensor | None = None   # float64 L2 norm of the quantisation error (int8 and int16 screens)
    scale: torch.Tensor | None = None  # float32 quantisation step (int8 and int16 screens)
    rerr: torch.Tensor | None = None   # float64 L2 norm of the second level, step/256 q2 (int16 screens)

    def __getitem__(self, sl: slice) -> Rows:
        return Rows(*(None if v is None else v[sl]
                      for v in (self.data, self.l2, self.sq, self.qerr, self.scale, self.rerr)))


@dataclass
class Extent:
    """Largest per-row figures over a base, for bounds that hold for every candidate."""

    l2: float = 0.0
    qerr: float = 0.0
    rerr: float = 0.0

    def update(self, rows: Rows) -> None:
        self.l2 = max(self.l2, float(rows.l2.max()))
        if rows.qerr is not None:
            self.qerr = max(self.qerr, float(rows.qerr.max()))
        if rows.rerr is not None:
            self.rerr = max(self.rerr, float(rows.rerr.max()))


class Screen:
    """How one metric is screened at one precision: operands, scores, and their error bound.

    Precisions: float32; bfloat16 (fp32 accumulation, output rounded to bf16); float16
    (exact products, fp32 accumulation and output: `half_dots`; a GPU's tensor cores run it
    at bf16's rate with 8x less input rounding and none on the output, so its windows are
    far narrower; the CPU has no such GEMM and runs it as fp32 on the fp16-rounded rows);
    int8 (rows quantised with their own step, exact int32 accumulation: VNNI/AMX units run it
    about 3x faster than fp32 on the CPU); int16 (`torch.int16` names it: each row quantised to
    two int8 levels, x = step (q1 + q2 / 256) + e, about 15 bits, and multiplied on the int8
    units as three int8 GEMMs, q1.q1' and [q1 q2].[q2' q1'] of twice the terms: about 2.5x an
    int8 screen's GEMM, 0.7x fp32's on the CPU, with windows as narrow as fp32's where
    int8's are wide, at a large k: 1,000 x 20,000 x 256, k = 100: 103 rows a query against
    1,178 for int8 and 100 for fp32). Its rows hold [q1 q2 q1] (3d int8 values), so that
    both GEMMs read views of them.
    """

    def __init__(self, metric: Metric, d: int, dtype: torch.dtype, mean: torch.Tensor | None,
                 scale: float = 1.0):
        self.metric, self.d, self.scale = metric, d, scale
        self.dtype = dtype if metric.gemm else torch.float64
        self.split = self.dtype == torch.int16  # two int8 levels (see above)
        self.int8 = self.dtype in (torch.int8, torch.int16)  # int8 GEMMs with exact int32 sums
        most = int_sum_limit(self.dtype)
        if most is not None and d > most:
            raise SearchError(f"an {'int16' if self.split else 'int8'} screen needs d <= {most} (int32 sums); "
                              f"d is {d}: use fp32 or bf16")
        # rows are prepared, and sums accumulate, in float32; in float64 for a float64 screen
        self.acc = torch.float64 if self.dtype == torch.float64 else torch.float32
        self.mean = None if mean is None else mean.to(self.acc)  # the centre, in scaled units
        u = self.u = UNIT_ROUNDOFF[self.acc]
        u_in = UNIT_ROUNDOFF[dtype] if dtype in (torch.bfloat16, torch.float16) else 0.0
        # a bf16 GEMM also rounds its output to bf16; an fp16 screen's writes float32 (`half_dots`)
        self.u_out = u_in if dtype == torch.bfloat16 else 0.0
        if dtype == torch.float32:
            u_in = fp32_gemm_roundoff()  # CUDA may run fp32 GEMMs in TF32 (10-bit mantissa) when allowed
        # accumulation over d terms; fp16 products are summed by tensor cores, which add blocks
        # of products aligned to the largest by truncation, not rounded at every step: about
        # 2u d (1 + 1/block) at most; three times the unit roundoff covers it
        ua = 3 * u if dtype == torch.float16 else u
        self.gamma = d * ua / (1 - d * ua)
        # relative error of each prepared element: the cast of float64 input, then centring or
        # normalising, then the cast to the screen's type
        u_prep = u + (u if metric.centred else (2 * u + self.gamma if metric.normalised else 0.0))
        self.u_c = u_prep + u_in + u_prep * u_in
        # absolute error from underflow (scaled elements, products, sums and outputs that fall
        # below the smallest normal number): far above it, far below any relative error
        self.eta = 64 * torch.finfo(self.acc).tiny * (d + 16)
        # scaled query values past this are screened in float64 (`PreparedBase.query_scales`)
        self.safe_scaled = SAFE_HALF if dtype == torch.float16 else SAFE_SCALED
        if dtype == torch.float16:
            # fp16 elements below 2^-14 (in scaled units: 2^-14 of the base's largest) are
            # subnormal, each off by up to 2^-25 absolutely, a row by 2^-25 sqrt(d): in the
            # cross term at most 2^-24 sqrt(d) (1 + |x| + |y|)^2, which `absolute` covers
            self.eta += 2.0**-24 * math.sqrt(d)

    def prepare(self, x: torch.Tensor) -> Rows:
        """Raw rows -> centred / normalised, then cast or quantised for the screen."""
        if not self.metric.gemm:
            x = x.double()
            return Rows(x, self.norms(x))
        if self.int8 and quantise.usable(x):  # one compiled pass a row
            return Rows(*quantise.int8_rows(x, self.scale, self.mean, self.metric.normalised, self.gamma,
                                            UNIT_ROUNDOFF[torch.float32], self.split))
        x = self.scaled(x)
        if self.metric.centred:
            x = x - self.mean
        elif self.metric.normalised:
            # summed in float64, rounded once: the norm `quantise`'s compiled pass divides by
            norms = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float64).to(x.dtype)
            x = x / torch.where(norms > 0, norms, 1.0)
        # norms in float64: a row far smaller than the base's largest would square to zero in
        # float32, and a zero norm would zero its error bound
        l2 = torch.linalg.vector_norm(x, dim=1, dtype=torch.float64)
        sq = (l2 * l2).to(self.acc) if self.metric.centred else None
        return self.cast(x, l2, sq)

    def cast(self, x: torch.Tensor, l2: torch.Tensor, sq: torch.Tensor | None) -> Rows:
        """Rows already scaled and centred or normalised in the accumulation type (an fp32
        screen's own rows), with their float64 norms `l2` and squared norms `sq`, cast or
        quantised for this screen: the very rows `prepare` would give."""
        if not self.int8:
            return Rows(x.to(self.dtype), l2, sq)
        scale = x.abs().amax(dim=1) / 127.0
        scale = torch.where(scale > 0, scale, 1.0)
        q = torch.round(x / scale[:, None]).clamp_(-127, 127)
        # |x - s q|, exactly known here; fp32 rounding of s q and of the difference: 2u |x|
        u32 = UNIT_ROUNDOFF[torch.float32]
        if self.split:  # the residual quantised again with a step 256 times finer; its error
            # x - s q - (s / 256) q2 in float64, where each product is exact and the rest rounds
            # far below the 2u |x| counted
            r = x - q * scale[:, None]
            fine = scale[:, None] * 2.0**-8
            q2 = torch.round(r / fine).clamp_(-127, 127)
            err = x.double() - q.double() * scale[:, None].double() - q2.double() * fine.double()
            qerr = torch.linalg.vector_norm(err, dim=1) * (1 + self.gamma) + 2 * u32 * l2
            rerr = torch.linalg.vector_norm(q2.double(), dim=1) * fine[:, 0].double() * (1 + self.gamma)
            q8, q28 = q.to(torch.int8), q2.to(torch.int8)
            return Rows(torch.cat([q8, q28, q8], dim=1), l2, sq, qerr, scale, rerr)
        qerr = torch.linalg.vector_norm(x - q * scale[:, None], dim=1, dtype=torch.float64) * (1 + self.gamma)
        qerr += 2 * u32 * l2
        return Rows(q.to(torch.int8), l2, sq, qerr, scale)

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """Rows times a power of two, in the accumulation type: each row by its own for cosine,
        all by the base's `scale` otherwise. float64 rows are scaled before they are cast."""
        if self.metric.normalised:
            s = pow2_scale(x.abs().amax(dim=1, keepdim=True) if x.shape[1] else x.new_zeros((len(x), 1)))
            return (x.double() * s).to(self.acc)
        if x.dtype == torch.float64 or self.acc == torch.float64:
            return (x.double() * self.scale).to(self.acc)
        return x.to(self.acc) * self.scale

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
            d1, d23 = self.sums(q, b, None if out is None else out.view(torch.int32))
            dots = out.copy_(d1) if out is not None else d1.float()
            if self.split:  # D = D1 + D23 / 256: one rounding to float32 each, one for the sum
                dots.add_(d23.float().mul_(2.0**-8))
            dots.mul_(b.scale[None, :])
            if m.centred:
                return torch.addcmul(b.sq[None, :], q.scale[:, None], dots, value=-2.0, out=dots)
            return dots.mul_(q.scale[:, None]).neg_()
        if q.data.dtype == torch.float16:  # fp32 accumulation and output
            dots = half_dots(q.data, b.data, out=out)
            # |y|^2 - 2 x.y in one pass: the doubling exact, one fp32 rounding (as addmm's)
            return torch.add(b.sq, dots, alpha=-2.0, out=dots) if m.centred else dots.neg_()
        if q.data.dtype == torch.bfloat16:  # fp32 accumulation, output in bf16
            dots = (q.data @ b.data.T).float()
            return b.sq - 2 * dots if m.centred else -dots
        blas = gemm.provider() if q.data.device.type == "cpu" and q.data.dtype == torch.float32 else "torch"
        if m.centred:
            return gemm.centred_scores(q.data, b.data, b.sq, out, blas)
        return gemm.negated_dots(q.data, b.data, out, blas)

    def sums(self, q: Rows, b: Rows, out: torch.Tensor | None = None, out2: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """An int8 or int16 screen's exact int32 sums of query rows `q` against base rows `b`:
        D1 = q1.q1' and, for int16 (rows [q1 q2 q1]), D23 = [q1 q2].[q2' q1'] (else None), into
        `out` and `out2` (int32 blocks of len(q) x len(b)) where given."""
        d = self.d
        d1 = int8_dots(q.data[:, :d], b.data[:, :d], out=out)
        return d1, int8_dots(q.data[:, :2 * d], b.data[:, d:], out=out2) if self.split else None

    def bound(self, q: Rows, base: Extent) -> torch.Tensor:
        """Per query, the largest error any of its screen scores can carry (float64)."""
        m, u32 = self.metric, self.u
        slack = 1.5  # covers the second-order terms left out below
        qn, ymax = q.l2, base.l2
        if not m.gemm:
            if m.p == math.inf:
                return torch.zeros_like(qn)  # differences and maxima of float32 inputs are exact in float64
            g64 = self.d * UNIT_ROUNDOFF[torch.float64] / (1 - self.d * UNIT_ROUNDOFF[torch.float64])
            return slack * 2 * g64 * (qn + ymax)
        absolute = self.eta * (1 + qn + ymax) ** 2
        cross = (2 * self.u_c + self.gamma + 3 * u32 + self.u_out) * qn * ymax + absolute
        if self.int8:
            # with x = x^ + e (x^ = sx qx, the quantised row; e its known error):
            # |x.y - x^.y^| = |ex.y + x.ey - ex.ey| <= |ex||y| + |x||ey| + |ex||ey|; x^.y^ =
            # sx sy D with D exact in int32, then fp32 rounding of the scaling
            quant = q.qerr * ymax + qn * base.qerr + q.qerr * base.qerr
            if self.split:  # x^ = sx (q1 + q2/256): the screen leaves out sx sy q2.q2' / 2^16,
                # at most |rx||ry| (the second levels' norms); and two more float32 roundings
                # (D23 / 256 and the sum), each within u32 |x^||y^|
                quant = quant + q.rerr * base.rerr
                cross = cross + 2 * u32 * qn * ymax
            cross = cross + quant * (1 + 4 * u32)
        if m.centred:  # |y|^2 - 2 x.y: the cross term twice, the squared norm (fp32 sum) once
            return slack * (2 * cross + (2 * self.u_c + self.gamma + 2 * u32) * ymax**2)
        return slack * cross

    def pair_bound(self, q: Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """`bound` pair by pair, for an int8 screen: the error of query i's score against base
        row j is at most a[i] |y_j| + b[i] e_j + c[i] + g |y_j|^2, with |y_j| the row's norm
        and e_j its quantisation error norm (`Rows.l2`, `Rows.qerr`). `bound` is this at the
        base's largest norm and error (`Extent`), which every row's own are at most: a window
        by each pair's own bound (`selection`) holds no more rows, and on bases whose rows
        differ in norm or in error it holds far fewer (real CNN features, k = 3: 96 against
        219 rows a query). Returns float64 arrays a, b, c of shape (nq,) and g."""
        m, u32 = self.metric, self.u
        if not self.int8 or self.split or not m.gemm:
            raise ValueError("internal: pair bounds are an int8 screen's")
        slack, f = 1.5, (2.0 if m.centred else 1.0)
        qn, qe = q.l2.double().cpu().numpy(), q.qerr.double().cpu().numpy()
        c1 = 2 * self.u_c + self.gamma + 3 * u32 + self.u_out
        c2 = 2 * self.u_c + self.gamma + 2 * u32
        eta, grow = self.eta, 1 + 4 * u32
        # bound's terms with ymax -> |y_j|, base.qerr -> e_j, absolute = eta (1 + qn + |y_j|)^2 expanded
        a = slack * f * (c1 * qn + 2 * eta * (1 + qn) + grow * qe)
        b = slack * f * grow * (qn + qe)
        c = slack * f * eta * (1 + qn) ** 2
        g = slack * (f * eta + (c2 if m.centred else 0.0))
        return a, b, c, g

    def limit(self, radius: float, q: Rows) -> torch.Tensor:
        """Per query, the exact screen score of a base row at distance `radius` (float64):
        rows within the radius (inner products: at least it) score no more. Scores are in
        scaled units: distances times `scale`, squares and products times its square."""
        m, s = self.metric, self.scale
        if m.centred:  # score |y-m|^2 - 2 (x-m).(y-m) = |x-y|^2 - |x-m|^2
            return (radius * s * s if m.squared else (radius * s) * (radius * s)) - q.l2 * q.l2
        if m.normalised:  # score -cos = distance - 1
            return torch.full_like(q.l2, radius - 1.0)
        if m.gemm:  # score -x.y
            return torch.full_like(q.l2, -radius * s * s)
        return torch.full_like(q.l2, radius)  # cdist: the distance itself

    def limit_error(self, radius: float, q: Rows) -> torch.Tensor:
        """Per query, how far `limit` can be off: for centred metrics |x-m|^2 comes from the
        prepared (rounded) query, so a far query's limit carries an error of its own."""
        if not self.metric.centred:  # -cos, -x.y and cdist limits are exact up to a float64 rounding
            return 4 * UNIT_ROUNDOFF[torch.float64] * self.limit(radius, q).abs()
        r = radius * self.scale
        r2 = r * self.scale if self.metric.squared else r * r
        u64 = UNIT_ROUNDOFF[torch.float64]
        return 1.5 * ((2 * self.u_c + 2 * self.gamma + 2 * self.u) * q.l2 * q.l2 + 4 * u64 * r2)


PREPARE_BYTES = 1 << 22  # fp32 rows centred or quantised at a time: their temporaries stay this small
# ... on a GPU up to this many, and an eighth of the working memory (a part's temporaries, a few
# copies of it, stay within the working memory): there each part costs a few dozen kernel launches
# whatever its size (10,000 queries of 2,048-d made 20 parts of 4 MiB, and as many copies back of
# their scales)
GPU_PREPARE_BYTES = 1 << 28


def part_rows(d: int, device: torch.device | str, working_memory: float | None = None) -> int:
    """Rows of `d` values a part holds when rows are prepared (or their scales read) a part at
    a time on `device`: `PREPARE_BYTES` of fp32; on a GPU `GPU_PREPARE_BYTES`, at most an
    eighth of `working_memory` (MiB; None: the default)."""
    size = PREPARE_BYTES
    if torch.device(device).type == "cuda":
        size = max(PREPARE_BYTES, min(GPU_PREPARE_BYTES, int(budget_bytes(working_memory) / 8)))
    return max(1, size // (4 * max(1, d)))


def prepare_rows(screen: Screen, x: np.ndarray, device: torch.device, extent: Extent | None = None,
                 working_memory: float | None = None) -> Rows:
    """`screen.prepare` of all rows of `x`, a part at a time (`part_rows`), into arrays
    allocated once: the temporaries of centring and quantising never grow with the number of
    rows."""
    return _by_parts(screen, len(x), lambda lo, hi: screen.prepare(as_tensor(x[lo:hi], device)), extent,
                     lambda: screen.prepare(as_tensor(x, device)), part_rows(screen.d, device, working_memory))


def _by_parts(screen: Screen, n: int, part_of, extent: Extent | None, empty, step: int) -> Rows:
    """Rows made `step` at a time by `part_of(lo, hi)`, into arrays allocated once; `empty()`
    when there are no rows."""
    out: Rows | None = None
    for lo, hi in ranges(n, step):
        part = part_of(lo, hi)
        if extent is not None:
            extent.update(part)
        if out is None:
            out = Rows(*(None if v is None else v.new_empty((n, *v.shape[1:])) for v in part.__dict__.values()))
        for name, v in part.__dict__.items():
            if v is not None:
                getattr(out, name)[lo:hi] = v
    if out is None:  # no rows
        return empty()
    return out


def base_block(d: int, dtype: torch.dtype, budget: float) -> int:
    """Base rows per block of a screen at `dtype`: at most 8192, and their raw and screen
    copies in half the working memory (`budget`, bytes)."""
    return max(1, min(8192, int(budget / 2 // max(1, d * (4 + row_bytes(dtype))))))


def row_bytes(dtype: torch.dtype) -> int:
    """Bytes a prepared row holds per dimension at a screen of `dtype`: an int16 screen's rows
    are three int8 values a dimension ([q1 q2 q1], see `Screen`)."""
    return 3 if dtype == torch.int16 else dtype.itemsize


def int_sum_limit(dtype: torch.dtype) -> int | None:
    """The largest d a screen of `dtype` takes when its sums are int32 (None: any d): int8's
    d products of at most 127^2; int16's longest sum, [q1 q2].[q2' q1'], twice as many."""
    if dtype not in (torch.int8, torch.int16):
        return None
    return (2**31 - 1) // 127**2 // (2 if dtype == torch.int16 else 1)


class PreparedBase:
    """A base made ready for the screen once, so that every search reuses it.

    With `materialise=False` only the mean is kept, and each search prepares base blocks as it
    streams through them. By default (`None`) a base is materialised unless it is a memory map
    whose prepared rows would not fit in the working memory: a memory-mapped index that fits
    is prepared once, not at every search.
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
        self.scale, self.mean64 = self._scale_and_mean()
        self.screen = Screen(self.metric, self.d, screen_dtype, self.mean64, self.scale)
        if materialise is None:
            materialise = not isinstance(xb, np.memmap) or self.nb * self.d * row_bytes(screen_dtype) <= self.budget
        self.rows: Rows | None = None
        self.extent = Extent()
        self._raw: torch.Tensor | None = None
        if materialise:
            self.rows = prepare_rows(self.screen, xb, self.device, self.extent, working_memory)
        # |prepared row| for every row; a streamed base fills it in as its blocks go by
        self.l2 = self.rows.l2 if self.rows is not None else torch.zeros(self.nb, dtype=torch.float64,
                                                                           device=self.device)

    @property
    def budget(self) -> float:
        """The working memory in bytes."""
        return budget_bytes(self.working_memory)

    def _scale_and_mean(self) -> tuple[float, torch.Tensor | None]:
        """One pass over the base: the power of two that brings its largest element into
        [0.5, 1) (metrics of differences and inner products; 1 for the others, which need
        none), and for centred metrics the mean row, float64, in scaled units. Any centre
        keeps distances; a good one keeps norms small."""
        m = self.metric
        total = torch.zeros(self.d, dtype=torch.float64, device=self.device)
        amax = 0.0
        self.rows_comfortable = True  # every row's largest value within COMFORT (cosine's refinement skips scaling)
        for lo, hi in ranges(self.nb, self.block):
            part = as_tensor(self.xb[lo:hi], self.device)
            top = float(part.abs().max()) if part.numel() else 0.0
            check_magnitude(top, "the base")  # per block: NaN would vanish in max()
            if m.normalised and self.rows_comfortable and part.numel():
                self.rows_comfortable = comfortable(part.abs().amax(1))
            amax = max(amax, top)
            if m.centred:
                total += part.sum(0, dtype=torch.float64)
        self.amax = amax
        if not m.gemm or m.normalised:
            return 1.0, None
        scale = pow2_of(amax, SCALE_EXP)
        return scale, (total / max(1, self.nb) * scale if m.centred else None)

    def query_scales(self, xq: np.ndarray) -> tuple[np.ndarray, float]:
        """For queries `xq`: which rows the base's scale would carry past `SAFE_SCALED` (an
        fp32 screen could overflow on them; `SAFE_HALF` for an fp16 screen; they are screened
        in float64), and the power of
        two their float64 rerank scales rows by (`exact_distances`), from the largest value
        of base and queries. Refuses values beyond float32's range."""
        m = self.metric
        wide = np.zeros(len(xq), dtype=bool)
        qmax = 0.0
        on = xq.device if isinstance(xq, torch.Tensor) else "cpu"  # NumPy queries: read on the host
        for lo, hi in ranges(len(xq), part_rows(self.d, on, self.working_memory)):
            if isinstance(xq, torch.Tensor):  # queries already on a device: only their row maxima come back
                part = xq[lo:hi]
                amax = (part.abs().amax(1) if part.shape[1] else part.new_zeros(len(part))).double().cpu().numpy()
            else:
                amax = np.abs(np.asarray(xq[lo:hi])).max(axis=1, initial=0).astype(np.float64)
            check_magnitude(float(amax.max(initial=0.0)), "the queries")
            qmax = max(qmax, float(amax.max(initial=0.0)))
            if m.gemm and not m.normalised:  # rows scaled by the base's scale
                wide[lo:hi] = amax * self.scale > self.screen.safe_scaled
        squares = m.p == 2 or (m.p is None and not m.normalised)  # only squares and products can underflow
        if not squares:
            return wide, 1.0
        return wide, pow2_of(max(self.amax, qmax), RERANK_SCALE_EXP)

    def head(self, n: int) -> PreparedBase:
        """The first `n` rows as a base of their own, sharing this one's prepared rows (no
        copy): the same scale, centre and screen, with the extent of those rows only (any
        centre keeps distances). For timing searches against bases of several sizes."""
        if self.rows is None:
            raise ValueError("internal: only a materialised base has a head")
        out = copy.copy(self)
        out.xb, out.nb, out.rows, out.l2 = self.xb[:n], n, self.rows[:n], self.l2[:n]
        out.block, out._raw = min(self.block, max(1, n)), None
        out.extent = Extent()
        out.extent.update(out.rows)
        return out

    def recast(self, dtype: torch.dtype) -> PreparedBase:
        """This base for a screen of another precision, cast or quantised from this one's
        fp32 rows (the same rows a fresh `PreparedBase` would make, without reading the base
        again); the raw base is shared."""
        if self.rows is None or self.screen.dtype != torch.float32:
            raise ValueError("internal: only a materialised fp32 base can be recast")
        out = copy.copy(self)
        out.screen = Screen(self.metric, self.d, dtype, self.mean64, self.scale)
        rows = self.rows
        out.extent = Extent()
        out.rows = _by_parts(out.screen, self.nb,
                             lambda lo, hi: out.screen.cast(rows.data[lo:hi], rows.l2[lo:hi],
                                                            None if rows.sq is None else rows.sq[lo:hi]),
                             out.extent, lambda: out.screen.cast(rows.data, rows.l2, rows.sq),
                             part_rows(self.d, self.device, self.working_memory))
        out.l2 = out.rows.l2
        return out

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

    def query_block(self, nq: int, least: int = 64) -> int:
        """Queries whose scores against the whole base, with their top-k workspace (12 bytes
        a score in all), fit in half the working memory: at most 2048 (and `nq`), and no more
        than fill a thread's kept buffer of scores (`blocks.SCRATCH_MIB`; on the CPU: a GPU
        keeps none, and each of its blocks costs launches of its own) unless fewer than
        `least` would. An int8 screen on the CPU of rows of at most `CACHE_BLOCK_D` dimensions
        takes blocks of `CACHE_BLOCK_BYTES` of scores (at least `CACHE_BLOCK_ROWS` queries)
        where at least `least` queries fit in them. An int16 screen's two blocks of int32 sums
        (`engine._one_block`) count as 8 bytes a score."""
        per = 8 if self.screen.split else 4  # bytes of sums a score
        fits = int(self.budget / 2 // (max(1, self.nb) * (per + 8)))
        kept = max(min(nq, least), SCRATCH_MIB * 2**20 // (max(1, self.nb) * per)) if self.device.type == "cpu" else nq
        rows = min(nq, 2048, fits, kept)
        cached = CACHE_BLOCK_BYTES // (max(1, self.nb) * per)
        if self.screen.int8 and self.device.type == "cpu" and self.d <= CACHE_BLOCK_D and cached >= least:
            rows = min(rows, max(cached, CACHE_BLOCK_ROWS))
        return max(0, rows)

    def block_sizes(self, nq: int) -> tuple[int, int]:
        """(query rows, base rows) per block: a block of scores and its top-k workspace in
        half the working memory, a block of base rows in the other half."""
        bb = min(self.nb, base_block(self.d, self.screen.dtype, self.budget))
        # 2048 x 8192 scores (64 MiB) keep the GEMM efficient; larger blocks only make the
        # passes over the scores (mask, top-k) slower.
        qb = max(1, min(nq, 2048, int(self.budget / 2 // (bb * 4 * 3))))
        return qb, bb

