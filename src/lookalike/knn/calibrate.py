"""`precision='auto'` decided by measuring: which screen (fp32, bf16, int8, int16; on a GPU fp16 too) is fastest here,
for a search of `nq` queries against `nb` rows.

CPU flags do not say which screen is fastest: bf16 is several times fp32 on a CPU with AMX
tiles, about 2x on some with AVX-512 BF16, 4x slower where it is emulated; int8's windows
hold more candidates, each of which the float64 rerank costs. And the answer
changes with the number of queries: a few queries read the whole base for little arithmetic
(memory-bound: the smaller the screen's rows, the faster), many queries are compute-bound.
So the first `auto` search of a shape class on a machine times each candidate screen on
small searches of that class, and the result is kept in lookalike's cache folder:

- shape class: device, metric, and the dimension rounded up to a power of two (64 to 4096).
- calibration: `QUERY_COUNTS` (8 and 64) queries against bases of two sizes (about 16 MiB
  of fp32 rows, and a quarter of that), taken from the user's own base when it is large
  enough, else from stand-in rows like CNN features. Each screen's base is prepared once (the
  smaller base is the head of the larger); each of the four searches runs twice,
  interleaved with the other screens', after one warm-up search (the fastest counts). A
  screen whose neighbours differ from the fp32 screen's on the warm-up is not a candidate
  (every screen is exact by construction: this checks it).
- the model: per screen, `t = fixed_s + per_query_s * nq + per_row_s * nb + per_pair_s * nq
  * nb` through the four times (non-negative least squares): the fixed part (blocks, windows,
  the rerank's set-up), the part per query (queries prepared, refined, reranked), the part
  per base row (the base read: what a few queries pay), and the GEMM. The choice for a call
  of `nq` queries against `nb` rows is the screen of the smallest predicted time.
- probes: the model is fitted on small searches, and a low-precision screen's cost depends on
  how many rows fall inside its window, which depends on the data and on how dense the base
  is (measured: an int8 window held 56% of a 2,048-row sample of a base but 0.1% of the whole
  90,000-row base, so the model predicted int8 at 8x its real time and chose fp32, 3.4x
  slower). So a large search (`probe_wanted`: at least `PROBE_MIN_QUERIES` queries, predicted
  to take at least `PROBE_MIN_S` or asking for more neighbours than the model measured) times
  each candidate screen on its own first `PROBE_QUERIES` queries, against its own base, and
  runs the rest on the fastest (`LookalikeBackend`; the probe's results are kept, so only the
  other screens' time is extra). What a probe found is kept with the calibration for the
  class of base size and k (`probe_key`), and later large searches of that class take it
  without probing. int16 is chosen by a probe only (`PROBE_ONLY`): it is int8 with narrower
  windows, which pay only where int8's are wide on the base itself.
- the cache file `calibration.json` has a format `VERSION` and records the machine (CPU model,
  cores, threads, torch version, CUDA device); another version, a different machine, or a
  file that cannot be read, is measured anew and the file rewritten. `LOOKALIKE_CALIBRATION=0`
  measures without reading or writing it. A busy machine measures noisily: the choice is only
  as good as the moment.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import text
from ..cache import cache_dir, calibration_files, read_calibrations, write_calibrations
from ..hardware import busy_note, cpu_snapshot, load_average, others_share, when
from ..hardware import machine_identity as machine
from .metrics import Metric

__all__ = ["Calibration", "CANDIDATES", "cache_path", "calibrate", "choose", "machine", "shape_class"]

CANDIDATES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8,
              "int16": torch.int16}
# screens a device measures: fp16 (float32 output of an fp16 GEMM) only where there is one, a GPU;
# on the CPU it runs as an fp32 GEMM (`screen.half_dots`), never faster than fp32
GPU_ONLY = ("fp16",)
# screens only a probe chooses, never the model: int16 is int8 with narrower windows at 2.5x the GEMM,
# so it pays only where int8's windows on the user's base are wide, which the model's small samples
# do not show (they widen int8's: at d = 256 the model put int8 at 9.0 ms for 1,000 x 1,000 rows and
# int16 at 3.2, and chose int16, which took 5.7 ms where int8 takes about 4.5 and FAISS 3.8)
PROBE_ONLY = ("int16",)
QUERY_COUNTS = (8, 64)  # the query counts measured; `PLAN_QUERIES` when a caller does not know
PLAN_QUERIES = QUERY_COUNTS[-1]
TERMS = ("fixed_s", "per_query_s", "per_row_s", "per_pair_s")  # the model's coefficients
K = 10  # neighbours per query in the calibration's searches
PROBE_QUERIES = 64  # queries a probe times each screen on (the winner's results are kept)
PROBE_MIN_QUERIES = 2 * PROBE_QUERIES  # smaller searches take the model's choice
GPU_PROBE_QUERIES = 1024  # a probe's queries on a GPU (`probe_queries`), a few milliseconds a screen there
PROBE_MIN_S = 0.005  # nor are searches predicted (by the model's best) to take less than this probed: a probe
# times each screen on 64 queries (past k = 16 on up to 256), one to three such searches, once per class and
# machine, its choice kept (the demo's search of 200 queries, predicted at 15 ms, took bf16 by the model:
# 6.8 ms, median of 20, where the probe takes int8: 5.7 ms; FAISS about 5.5)
PROBE_ROUNDS = 2  # a probe times the screens in turn this many times, the best of each kept: one timing
# of a short search is at the mercy of the moment (the demo's probe once timed int8 at 6.6 ms on 64 queries,
# against 2.2 to 2.5 in other runs, and took bf16)
PROBE_ROUNDS_S = 0.1  # but a probe whose first round took longer than this (seconds, all screens) stops there
# past the model's k a screen smaller than fp32 is chosen by a probe only when this much faster
# than fp32 there: the probe times the first queries (256), and a search of more grows the
# smaller screen's wide windows (their rerank) in proportion while torch's fp32 GEMM grows
# less (it is more efficient on more rows). Measured at k = 100, 20,000 x 256-d: on 256 queries
# int8 35.9 to 43.2 ms against fp32's 36.0 to 46.1 (probes chose int8 in two runs of three); on
# 1,000 queries int8 141 to 185 ms against fp32's 86. A screen whose windows held no more than
# `NARROW_WINDOW` times fp32's rows in the probe (int16: 103 against 100 a query) is exempt: its
# rerank does not grow faster than fp32's (measured: int16 23.7 against fp32's 28.4 ms on 256 queries,
# 67 against 83 on 1,000)
PAST_MODEL_MARGIN = 1.25
NARROW_WINDOW = 1.5
K_MEASURED = 10 * K  # past this k, a low-precision screen's windows were not measured (see `LookalikeBackend.base_for`)
REPEATS = 2
FILE = "calibration.json"
VERSION = 7  # of the file: 1 held one line in nb per screen; 2 timed fp32 before it could use NumPy's BLAS;
# 3 timed the refine, rerank and window before they were compiled (`pairs`, `selection`); 4 timed
# bf16 and int8 windows refined in fp32 before the CPU's rerank took them whole; 5 had no fp16 screen;
# 6 no int16 screen
_lock = threading.Lock()
log = logging.getLogger("lookalike.calibrate")  # the command line shows its notices on stderr
_memory: dict[str, Calibration] = {}  # this process's calibrations, by shape class and torch threads (`_mem`)


def _mem(key: str) -> str:
    """The key of this process's calibration of shape class `key` at torch's thread count now:
    a program that searches on all cores, then serves on one a stage, measures each apart, as
    the cache file keeps them (`machine` names the threads)."""
    return f"{key}|t{torch.get_num_threads()}"


@dataclass
class Calibration:
    """What one calibration measured for a shape class: per screen, the coefficients of
    `fixed_s + per_query_s * nq + per_row_s * nb + per_pair_s * nq * nb` (see `TERMS`)
    fitted to its times at `QUERY_COUNTS` queries against bases of two sizes."""

    key: str
    rows: int  # the larger base it searched
    lines: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {term: seconds}
    excluded: dict[str, str] = field(default_factory=dict)  # name -> why it is not a candidate
    seconds: float = 0.0  # how long the calibration took
    probes: dict[str, dict] = field(default_factory=dict)  # probe_key -> {"choice", "times", "nq", "nb", "queries"}
    measured: str = ""  # when (UTC, ISO 8601; "" in files written before it was kept)
    load: float | None = None  # the one-minute load average then: a busy machine measures noisily
    others: float | None = None  # the share of the CPUs other processes used while it measured

    def probed(self, nb: int, k: int, among: tuple[str, ...] | None = None) -> dict | None:
        """What a probe of a large search of this class of base size and k found, if one ran
        and its choice is among `among`."""
        p = self.probes.get(probe_key(nb, k))
        return p if p is not None and (among is None or p["choice"] in among) else None

    def _probe_for(self, nb: int, nq: int, among: tuple[str, ...] | None, k: int | None) -> dict | None:
        """The probe that decides a search of `nq` x `nb` at `k`: only a large one (`nq` of at
        least `PROBE_MIN_QUERIES`) with `k` given takes a probe's choice."""
        return self.probed(nb, k, among) if k is not None and nq >= PROBE_MIN_QUERIES else None

    def predicted(self, nb: int, nq: int = PLAN_QUERIES) -> dict[str, float]:
        """Seconds each candidate would take for `nq` queries against `nb` rows."""
        return {name: c["fixed_s"] + c["per_query_s"] * nq + c["per_row_s"] * nb + c["per_pair_s"] * nq * nb
                for name, c in self.lines.items()}

    def choice(self, nb: int, nq: int = PLAN_QUERIES, among: tuple[str, ...] | None = None,
               k: int | None = None) -> str:
        """The screen of the smallest predicted time (ties: the earlier in `CANDIDATES`);
        `among`: only these screens, where they were measured. For a large search (`nq` of
        at least `PROBE_MIN_QUERIES`) of a class where a probe ran (`k` given), the probe's choice."""
        p = self._probe_for(nb, nq, among, k)
        if p is not None:
            return p["choice"]
        times = self.modelled(nb, nq, among)
        return min(times, key=lambda n: (times[n], list(CANDIDATES).index(n)))

    def modelled(self, nb: int, nq: int, among: tuple[str, ...] | None = None) -> dict[str, float]:
        """`predicted` of the screens the model chooses among: `among` (all where none of
        them was measured), never the `PROBE_ONLY` ones."""
        model = {n: t for n, t in self.predicted(nb, nq).items() if n not in PROBE_ONLY} or self.predicted(nb, nq)
        return {n: t for n, t in model.items() if among is None or n in among} or model

    def explain(self, nb: int, nq: int = PLAN_QUERIES, among: tuple[str, ...] | None = None,
                k: int | None = None) -> str:
        """One line: what was chosen for `nq` queries x `nb` rows (`among` these screens),
        and the predicted (or, for a probed class, measured) times that chose it."""
        p = self._probe_for(nb, nq, among, k)
        if p is not None:
            parts = ", ".join(f"{n} {text.seconds(t)}" for n, t in sorted(p["times"].items(), key=lambda kv: kv[1]))
            margin = (f"; past k = {K}'s class a smaller screen whose windows hold more than {NARROW_WINDOW:g}x "
                      f"fp32's rows must be {PAST_MODEL_MARGIN:g}x faster than fp32"
                      if beyond_model(k) and "fp32" in p["times"] else "")
            return (f"{p['choice']} screen by probe ({self.key}, {probe_key(nb, k)}; timed on the first "
                    f"{p.get('queries', PROBE_QUERIES)} queries of a search of {p['nq']:,} x {p['nb']:,} rows: "
                    f"{parts}{margin})") + busy_note(self.load, self.others)
        times = self.predicted(nb, nq)
        parts = ", ".join(f"{n} {text.seconds(t)}{' (chosen by a probe only)' if n in PROBE_ONLY else ''}"
                          for n, t in sorted(times.items(), key=lambda kv: kv[1]))
        name = self.choice(nb, nq, among)
        limited = f" among {'/'.join(among)}" if among is not None and name != self.choice(nb, nq) else ""
        out = (f"{name} screen by calibration{limited} ({self.key}; predicted for {nq:,} "
               f"quer{'y' if nq == 1 else 'ies'} x {nb:,} rows: {parts})")
        if self.excluded:
            out += "; not candidates: " + ", ".join(f"{n} ({why})" for n, why in self.excluded.items())
        return out + busy_note(self.load, self.others)

    def as_dict(self) -> dict:
        return {"key": self.key, "rows": self.rows, "lines": self.lines, "excluded": self.excluded,
                "seconds": self.seconds, "probes": self.probes, "measured": self.measured, "load": self.load,
                "others": self.others}


def _bucket(n: int) -> int:
    """`n` rounded up to a power of two."""
    return 1 << max(0, int(n) - 1).bit_length()


def probe_key(nb: int, k: int) -> str:
    """The class a probe's choice holds for: base rows and k, each rounded up to a power of two."""
    return f"nb{_bucket(nb)}/k{_bucket(k)}"


def beyond_model(k: int) -> bool:
    """Whether `k` lies past the class of k the model was measured at (`K`): a low-precision
    screen's window then holds many more rows (measured: 1,178 a query at k = 100, 20 at k = 10),
    which the model does not know."""
    return _bucket(k) > _bucket(K)


def probe_queries(nq: int, k: int, device: torch.device | str = "cpu") -> int:
    """Queries a probe of a search of `nq` times each screen on: `PROBE_QUERIES`; past the
    model's k up to 4x that, because there the screens differ most in what grows with the
    queries (measured at k = 100, 20,000 rows of 256-d: on 64 queries int8, fp32 and bf16 tied
    within 5%, on 1,000 queries int8 took 1.6x fp32's time: fp32's GEMM is slow on few rows).
    On a GPU up to `GPU_PROBE_QUERIES`: there a search of 64 queries times kernel launches,
    not the screens (on an H200 such a probe kept fp32, whose GEMM alone took 16x bf16's on
    the whole search)."""
    if torch.device(device).type == "cuda":
        return min(nq, GPU_PROBE_QUERIES)
    return min(nq, 4 * PROBE_QUERIES) if beyond_model(k) else PROBE_QUERIES


def probe_wanted(cal: Calibration, nb: int, nq: int, k: int, among: tuple[str, ...]) -> bool:
    """Whether a search of `nq` queries x `nb` rows at `k` should time the screens `among` on
    its first queries: a large search of a class no probe has measured, predicted to take long
    enough that the probe costs a fraction of it."""
    if nq < PROBE_MIN_QUERIES or len(among) < 2 or k > K_MEASURED or cal.probed(nb, k, among) is not None:
        return False
    if beyond_model(k):
        return True
    return min(cal.modelled(nb, nq, among).values()) >= PROBE_MIN_S


def record_probe(device: torch.device, metric: Metric, d: int, nb: int, nq: int, k: int,
                 times: dict[str, float], queries: int = PROBE_QUERIES,
                 candidates: dict[str, int] | None = None) -> str:
    """Keep what a probe measured (seconds per screen on the search's first `queries` queries,
    of a search of `nq` x `nb` at `k`) with this class's calibration, in this process and the cache file;
    returns the screen chosen (the fastest; ties: the earlier in `CANDIDATES`; past the
    model's k, fp32 unless another is `PAST_MODEL_MARGIN` times faster, or its windows held
    (`candidates`: rows in each screen's windows in the probe) at most `NARROW_WINDOW` times
    fp32's)."""
    past = beyond_model(k) and "fp32" in times

    def handicap(n: str) -> float:
        if not past or n == "fp32":
            return 1.0
        if candidates is not None and n in candidates and "fp32" in candidates and \
                candidates[n] <= NARROW_WINDOW * max(1, candidates["fp32"]):
            return 1.0  # windows as narrow as fp32's: nothing grows faster with the queries
        return PAST_MODEL_MARGIN

    choice = min(times, key=lambda n: (times[n] * handicap(n), list(CANDIDATES).index(n)))
    key, _ = shape_class(device, metric, d)
    entry = {"choice": choice, "times": {n: float(t) for n, t in times.items()}, "nq": int(nq), "nb": int(nb),
             "queries": int(queries)}
    with _lock:
        cal = _memory.get(_mem(key))
        if cal is not None:
            cal.probes[probe_key(nb, k)] = entry
        if calibration_files():
            classes = _read(device)
            if key in classes or cal is not None:
                stored = classes.get(key) or cal.as_dict()
                stored.setdefault("probes", {})[probe_key(nb, k)] = entry
                classes[key] = stored
                _write(device, classes)
    return choice


def shape_class(device: torch.device, metric: Metric, d: int) -> tuple[str, int]:
    """(key, dimension measured): the dimension rounded up to a power of two in [64, 4096]."""
    dc = int(min(4096, max(64, _bucket(d))))
    return f"{device.type}/{metric.name}/d{dc}", dc


def cache_path():
    return cache_dir() / FILE


def _read(dev: torch.device) -> dict:
    """The cached calibrations of this machine ({} when none, damaged, of another format
    version, or another machine's)."""
    return read_calibrations(FILE, machine(dev), VERSION)


def _write(dev: torch.device, classes: dict) -> None:
    write_calibrations(FILE, machine(dev), classes, VERSION)


def choose(device: torch.device, metric: Metric, d: int, nb: int, sample: np.ndarray | None = None,
           nq: int = PLAN_QUERIES) -> tuple[torch.dtype, str]:
    """The screen `auto` uses for `nq` queries against a base of `nb` rows of `d` dimensions,
    and why, in words. `sample`: the base itself (or rows of it), measured on when this class
    has no calibration yet; without it, or when it is smaller than a calibration's search,
    rows like CNN features stand in (`sample_data`)."""
    cal = calibration(device, metric, d, sample)
    return CANDIDATES[cal.choice(nb, nq)], cal.explain(nb, nq)


def calibration(device: torch.device, metric: Metric, d: int, sample: np.ndarray | None = None) -> Calibration:
    """The calibration of this shape class: from this process, the cache file, or measured now."""
    key, dc = shape_class(device, metric, d)
    with _lock:
        if _mem(key) in _memory:
            return _memory[_mem(key)]
        cal = _parse(_read(device).get(key)) if calibration_files() else None
        if cal is None:
            usable = sample is not None and sample.ndim == 2 and sample.shape[1] == d and \
                len(sample) >= max(QUERY_COUNTS) + calibration_rows(d)  # too small to measure on: stand-in rows
            log.info("measuring which kNN screen is fastest on this machine for %s, once (kept in %s); the first "
                     "search after installing also compiles lookalike's CPU kernels: up to a minute", key,
                     cache_path())
            cal = calibrate(device, metric, sample if usable else dc, key)
            _keep(device, key, cal)
        _memory[_mem(key)] = cal
        return cal


def _keep(device: torch.device, key: str, cal: Calibration) -> None:
    """`cal` into the cache file in place of class `key`'s (under `_lock`)."""
    if calibration_files():
        classes = _read(device)
        classes[key] = cal.as_dict()
        _write(device, classes)


def cached(device: torch.device, metric: Metric, d: int) -> Calibration | None:
    """The calibration of this shape class if this process or the cache file has one; never measures."""
    key, _ = shape_class(device, metric, d)
    with _lock:
        if _mem(key) in _memory:
            return _memory[_mem(key)]
    return _parse(_read(device).get(key)) if calibration_files() else None


def _parse(entry) -> Calibration | None:
    try:
        cal = Calibration(str(entry["key"]), int(entry["rows"]),
                          {str(n): {t: float(c[t]) for t in TERMS}
                           for n, c in entry["lines"].items() if n in CANDIDATES},
                          {str(n): str(w) for n, w in entry.get("excluded", {}).items()},
                          float(entry.get("seconds", 0.0)), measured=str(entry.get("measured") or ""),
                          load=None if entry.get("load") is None else float(entry["load"]),
                          others=None if entry.get("others") is None else float(entry["others"]))
        for pk, p in dict(entry.get("probes", {})).items():  # a damaged probe is dropped, the rest kept
            try:
                times = {str(n): float(t) for n, t in p["times"].items() if n in CANDIDATES}
                if p["choice"] in times and all(np.isfinite(t) and t >= 0 for t in times.values()):
                    cal.probes[str(pk)] = {"choice": str(p["choice"]), "times": times, "nq": int(p["nq"]),
                                           "nb": int(p["nb"]), "queries": int(p.get("queries", PROBE_QUERIES))}
            except (TypeError, KeyError, ValueError, AttributeError):
                continue
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    values = [v for c in cal.lines.values() for v in c.values()]
    return cal if cal.rows > 0 and cal.lines and all(np.isfinite(v) and v >= 0 for v in values) else None


def sample_data(d: int, n: int, seed: int = 0) -> np.ndarray:
    """Non-negative float32 rows on a 32-dimensional manifold, like pooled CNN features:
    ReLU of a random linear map of 32 latent values, plus a little noise (drawn once for 1,024
    rows and reused, shifted, by the others: a fresh draw for every element cost more than
    the calibration's searches)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 32), dtype=np.float32)
    w = rng.standard_normal((32, d), dtype=np.float32) / np.float32(np.sqrt(32))
    rows = torch.relu_(torch.from_numpy(z) @ torch.from_numpy(w)).numpy()  # torch's GEMM: its threads, not BLAS's
    noise = np.float32(0.05) * np.abs(rng.standard_normal((1024 + 1, d), dtype=np.float32)).ravel()
    for lo in range(0, n, 1024):  # row i gets the noise table read from offset (i // 1024) * 7
        hi = min(lo + 1024, n)
        shift = (lo // 1024 * 7) % d
        rows[lo:hi] += noise[shift: shift + (hi - lo) * d].reshape(hi - lo, d)
    return rows


def calibration_rows(d: int) -> int:
    """Base rows of the larger calibration search: about 16 MiB of fp32 rows, more than most
    CPUs' cache per core, so that a few queries pay for reading the base much as they would."""
    return int(np.clip(2**22 // max(1, d), 1_024, 65_536))


def calibrate(device: torch.device, metric: Metric, data: np.ndarray | int, key: str | None = None) -> Calibration:
    """Time each candidate screen (see the module's docstring). `data`: rows of the user's base
    (spread over it: queries and base are taken from them), or a dimension for stand-in rows."""
    from .blocks import SearchStats
    from .engine import knn
    from .screen import PreparedBase, int_sum_limit

    started = time.perf_counter()
    measured, load, cpu = when(), load_average(), cpu_snapshot()  # how busy: before, and while it measures
    counts = QUERY_COUNTS
    if isinstance(data, (int, np.integer)):
        d = int(data)
        data = sample_data(d, max(counts) + calibration_rows(d))
    d = data.shape[1]
    key = key or shape_class(device, metric, d)[0]
    want = max(counts) + calibration_rows(d)
    if len(data) > want:  # rows spread over the whole base; a memory map reads only these
        data = data[np.linspace(0, len(data) - 1, want).astype(np.int64)]
    data = np.ascontiguousarray(data, dtype=np.float32)
    nq = min(max(counts), max(1, len(data) // 4))
    xq, xb = data[:nq], data[nq:]
    counts = sorted({min(c, nq) for c in counts})
    sizes = sorted({len(xb)} | ({len(xb) // 4} if len(xb) >= 256 else set()))
    points = [(q, n) for q in counts for n in sizes]
    k = min(10, sizes[0] // 4 or 1)
    cal = Calibration(key, len(xb), measured=measured, load=load)
    bases: dict[str, PreparedBase] = {}
    fp32 = PreparedBase(xb, metric, device=device, materialise=True)  # the others are cast from its rows
    for name, dtype in CANDIDATES.items():
        if (most := int_sum_limit(dtype)) is not None and d > most:
            cal.excluded[name] = "dimension too large for int32 sums"
            continue
        if name in GPU_ONLY and device.type != "cuda":
            cal.excluded[name] = f"no {name} GEMM with float32 output on the {device.type}"
            continue
        try:
            bases[name] = fp32 if dtype == torch.float32 else fp32.recast(dtype)
        except (RuntimeError, NotImplementedError) as exc:  # a device without that kind of GEMM
            cal.excluded[name] = type(exc).__name__
    heads = {(name, n): base.head(n) if n < base.nb else base for name, base in bases.items() for n in sizes}
    best: dict[tuple[str, int, int], float] = {}
    reference = None
    for rep in range(REPEATS + 1):
        for name in bases:
            # the warm-up: one search, the largest, which checks exactness and is not timed
            for q, n in points if rep else points[-1:]:
                if name in cal.excluded:
                    break
                t0 = time.perf_counter()
                try:
                    _, I = knn(xq[:q], heads[name, n], k, stats=SearchStats())
                except (RuntimeError, NotImplementedError) as exc:
                    cal.excluded[name] = type(exc).__name__
                    break
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t = time.perf_counter() - t0
                if rep == 0:
                    if name == "fp32":
                        reference = I
                    elif reference is not None and not _same_sets(I, reference):
                        cal.excluded[name] = "its neighbours differed from the fp32 screen's"
                    continue
                best[name, q, n] = min(best.get((name, q, n), np.inf), t)
    for name in bases:
        if name not in cal.excluded and all((name, q, n) in best for q, n in points):
            cal.lines[name] = fit_terms(points, [best[name, q, n] for q, n in points])
    if not cal.lines:  # fp32 runs on every torch device; said plainly if it did not
        raise RuntimeError(f"no screen could be calibrated for {key}: {cal.excluded}")
    cal.seconds = time.perf_counter() - started
    cal.others = others_share(cpu)
    return cal


def fit_terms(points: list[tuple[int, int]], times: list[float]) -> dict[str, float]:
    """Non-negative coefficients of `TERMS` that best fit `times` measured at (nq, nb)
    `points` (four points: exactly, when the exact fit is non-negative). With fewer distinct
    query counts or base sizes, the terms they cannot tell apart are left at zero."""
    from scipy.optimize import nnls

    A = np.array([[1.0, q, n, q * n] for q, n in points])
    t = np.asarray(times, dtype=np.float64)
    usable = [j for j in range(4) if np.ptp(A[:, j] / A[:, 0]) > 0 or j == 0]
    if len({q for q, _ in points}) < 2:
        usable = [j for j in usable if j not in (1, 3)]
    if len({n for _, n in points}) < 2:
        usable = [j for j in usable if j not in (2, 3)]
    cols = A[:, usable]
    norm = cols.max(axis=0)
    coef, _ = nnls(cols / norm, t)
    out = dict.fromkeys(TERMS, 0.0)
    for j, c in zip(usable, coef / norm):
        out[TERMS[j]] = float(c)
    return out


def kept(device: torch.device) -> dict[str, Calibration | None]:
    """Every calibration the cache file keeps for this machine, by shape class (None: an entry
    that cannot be read, measured anew when its class is next searched)."""
    return {str(key): _parse(entry) for key, entry in _read(device).items()} if calibration_files() else {}


def measure_again(device: torch.device, key: str) -> Calibration:
    """Calibrate shape class `key` ('cpu/euclidean/d256', see `shape_class`) again now, on
    stand-in rows, and keep it in place of what was kept (its probes too: they were timed in the
    same conditions); the way out of a calibration made while the machine was busy."""
    from .metrics import get_metric

    try:
        dev, name, dim = key.split("/")
        metric, dc = get_metric(name), int(dim.removeprefix("d"))
    except (ValueError, KeyError):
        raise ValueError(f"not a shape class of the calibration: {key!r}") from None
    if dev != device.type or shape_class(device, metric, dc)[0] != key:
        raise ValueError(f"not a shape class of the calibration on {device.type}: {key!r}")
    cal = calibrate(device, metric, dc, key)
    with _lock:
        _keep(device, key, cal)
        _memory[_mem(key)] = cal
    return cal


def drop(device: torch.device, key: str) -> None:
    """Remove shape class `key` from the cache file and this process (measured again when next
    searched)."""
    with _lock:
        for memo in [m for m in _memory if m.split("|")[0] == key]:
            _memory.pop(memo)
        if calibration_files():
            classes = _read(device)
            if classes.pop(key, None) is not None:
                _write(device, classes)


def _same_sets(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(np.sort(a, 1), np.sort(b, 1))


def forget() -> None:
    """Drop this process's calibrations (the cache file stays); for tests."""
    with _lock:
        _memory.clear()
