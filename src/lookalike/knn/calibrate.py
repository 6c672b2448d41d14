"""`precision='auto'` decided by measuring: which screen (fp32, bf16, int8) is fastest here.

CPU flags do not say which screen is fastest: bf16 is several times fp32 on a CPU with AMX
tiles, about 2x on some with AVX-512 BF16, 4x slower where it is emulated; int8's windows
hold more candidates, whose fp32 refinement costs a fixed amount per query. So the first
`auto` search of a shape class on a machine times each candidate screen on a small search
of that class, and the result is kept in lookalike's cache folder:

- shape class: device, metric, and the dimension rounded up to a power of two (64 to 4096).
- calibration: 64 queries against bases of two sizes (one to four thousand rows, about 0.25 GFLOP
  of fp32 screen, and a quarter of that), taken from the user's own base when it is large
  enough, else from stand-in rows like CNN features; each screen runs twice, interleaved
  with the others, after a warm-up run (the fastest counts). A screen whose neighbours
  differ from the fp32 screen's on the warm-up is not a candidate (every screen is exact by
  construction: this checks it).
- the choice for a base of `nb` rows extrapolates the line through the two sizes
  (`fixed_s + per_row_s * nb`): the fixed part (queries prepared, windows, refinement of
  near candidates, rerank) against the part that grows with the base (the screen GEMM).
- the cache file `calibration.json` records the machine (CPU model, cores, threads, torch
  version, CUDA device); a different machine, or a file that cannot be read, is measured
  anew and the file rewritten. `LOOKALIKE_CALIBRATION=0` measures without reading or
  writing it. A busy machine measures noisily: the choice is only as good as the moment.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..atomic import atomic_write_text
from ..cache import cache_dir
from ..hardware import cpu_model
from .metrics import Metric

__all__ = ["Calibration", "CANDIDATES", "cache_path", "calibrate", "choose", "machine", "shape_class"]

CANDIDATES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}
QUERIES = 64
REPEATS = 2
FILE = "calibration.json"
_lock = threading.Lock()
_memory: dict[str, Calibration] = {}  # this process's calibrations, by shape class


@dataclass
class Calibration:
    """What one calibration measured for a shape class: per screen, a line `fixed_s +
    per_row_s * rows` through the times of 64 queries against bases of two sizes."""

    key: str
    rows: int  # the larger base it searched
    lines: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {fixed_s, per_row_s}
    excluded: dict[str, str] = field(default_factory=dict)  # name -> why it is not a candidate

    def predicted(self, nb: int) -> dict[str, float]:
        """Seconds each candidate would take for 64 queries against `nb` rows."""
        return {name: s["fixed_s"] + s["per_row_s"] * nb for name, s in self.lines.items()}

    def choice(self, nb: int) -> str:
        times = self.predicted(nb)
        return min(times, key=lambda n: (times[n], list(CANDIDATES).index(n)))

    def explain(self, nb: int) -> str:
        """One line: what was chosen for `nb` rows, and the predicted times that chose it."""
        times = self.predicted(nb)
        parts = ", ".join(f"{n} {_ms(t)}" for n, t in sorted(times.items(), key=lambda kv: kv[1]))
        out = f"{self.choice(nb)} screen by calibration ({self.key}; predicted per 64 queries x {nb:,} rows: {parts})"
        if self.excluded:
            out += "; not candidates: " + ", ".join(f"{n} ({why})" for n, why in self.excluded.items())
        return out

    def as_dict(self) -> dict:
        return {"key": self.key, "rows": self.rows, "lines": self.lines, "excluded": self.excluded}


def _ms(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 0.1 else f"{t:.2f} s"


def machine(device: torch.device) -> dict:
    """What a calibration is valid for: measured anew when any of it changes."""
    out = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "machine": platform.machine()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_device_name(device)
    return out


def shape_class(device: torch.device, metric: Metric, d: int) -> tuple[str, int]:
    """(key, dimension measured): the dimension rounded up to a power of two in [64, 4096]."""
    dc = int(min(4096, max(64, 1 << max(0, int(d) - 1).bit_length())))
    return f"{device.type}/{metric.name}/d{dc}", dc


def cache_path():
    return cache_dir() / FILE


def _use_file() -> bool:
    return os.environ.get("LOOKALIKE_CALIBRATION", "1") != "0"


def _read(dev: torch.device) -> dict:
    """The cached calibrations of this machine; {} when there are none, the file is damaged,
    or it was written on another machine (or with another torch)."""
    try:
        data = json.loads(cache_path().read_text())
        if data.get("machine") != machine(dev) or not isinstance(data.get("classes"), dict):
            return {}
        return data["classes"]
    except (OSError, ValueError, AttributeError):
        return {}


def _write(dev: torch.device, classes: dict) -> None:
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_path(), json.dumps({"machine": machine(dev), "classes": classes}, indent=1))
    except Exception:  # noqa: BLE001 -- a cache that cannot be written costs a re-measurement, nothing else
        pass


def choose(device: torch.device, metric: Metric, d: int, nb: int,
           sample: np.ndarray | None = None) -> tuple[torch.dtype, str]:
    """The screen `auto` uses for a base of `nb` rows of `d` dimensions, and why, in words.
    `sample`: the base itself (or rows of it), measured on when this class has no calibration
    yet; without it, or when it is smaller than a calibration's search, rows like CNN
    features stand in (`sample_data`)."""
    cal = calibration(device, metric, d, sample)
    return CANDIDATES[cal.choice(nb)], cal.explain(nb)


def calibration(device: torch.device, metric: Metric, d: int, sample: np.ndarray | None = None) -> Calibration:
    """The calibration of this shape class: from this process, the cache file, or measured now."""
    key, dc = shape_class(device, metric, d)
    with _lock:
        if key in _memory:
            return _memory[key]
        cal = _parse(_read(device).get(key)) if _use_file() else None
        if cal is None:
            usable = sample is not None and sample.ndim == 2 and sample.shape[1] == d and \
                len(sample) >= QUERIES + calibration_rows(d)  # a base too small to measure on: stand-in rows
            cal = calibrate(device, metric, sample if usable else dc, key)
            if _use_file():
                classes = _read(device)
                classes[key] = cal.as_dict()
                _write(device, classes)
        _memory[key] = cal
        return cal


def _parse(entry) -> Calibration | None:
    try:
        cal = Calibration(str(entry["key"]), int(entry["rows"]),
                          {str(n): {"fixed_s": float(s["fixed_s"]), "per_row_s": float(s["per_row_s"])}
                           for n, s in entry["lines"].items() if n in CANDIDATES},
                          {str(n): str(w) for n, w in entry.get("excluded", {}).items()})
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    values = [v for s in cal.lines.values() for v in s.values()]
    return cal if cal.rows > 0 and cal.lines and all(np.isfinite(v) and v >= 0 for v in values) else None


def sample_data(d: int, n: int, seed: int = 0) -> np.ndarray:
    """Non-negative float32 rows on a 32-dimensional manifold, like pooled CNN features:
    ReLU of a random linear map of 32 latent values, plus a little noise."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 32), dtype=np.float32)
    w = rng.standard_normal((32, d), dtype=np.float32) / np.float32(np.sqrt(32))
    rows = np.maximum(z @ w, 0)
    rows += np.float32(0.05) * np.abs(rng.standard_normal((n, d), dtype=np.float32))
    return rows


def calibration_rows(d: int) -> int:
    """Base rows of the larger calibration search: about 0.25 GFLOP of fp32 screen."""
    return int(np.clip(0.25e9 / (2 * QUERIES * d), 1_024, 4_096))


def calibrate(device: torch.device, metric: Metric, data: np.ndarray | int, key: str | None = None) -> Calibration:
    """Time each candidate screen (see the module's docstring). `data`: rows of the user's base
    (spread over it: queries and base are taken from them), or a dimension for stand-in rows."""
    from .blocks import SearchStats
    from .engine import knn
    from .screen import PreparedBase

    if isinstance(data, (int, np.integer)):
        d = int(data)
        data = sample_data(d, QUERIES + calibration_rows(d))
    d = data.shape[1]
    key = key or shape_class(device, metric, d)[0]
    want = QUERIES + calibration_rows(d)
    if len(data) > want:  # rows spread over the whole base; a memory map reads only these
        data = data[np.linspace(0, len(data) - 1, want).astype(np.int64)]
    data = np.ascontiguousarray(data, dtype=np.float32)
    nq = min(QUERIES, max(1, len(data) // 4))
    xq, xb = data[:nq], data[nq:]
    sizes = [len(xb)] + ([len(xb) // 4] if len(xb) >= 256 else [])
    k = min(10, len(xb) // 4 or 1)
    cal = Calibration(key, len(xb))
    bases: dict[tuple[str, int], PreparedBase] = {}
    for name, dtype in CANDIDATES.items():
        if name == "int8" and d >= 2**31 // 127**2:
            cal.excluded[name] = "dimension too large for int32 sums"
            continue
        try:
            for n in sizes:
                bases[name, n] = PreparedBase(xb[:n], metric, device=device, screen_dtype=dtype)
        except (RuntimeError, NotImplementedError) as exc:  # a device without that kind of GEMM
            cal.excluded[name] = type(exc).__name__
    best: dict[tuple[str, int], float] = {}
    reference: dict[int, np.ndarray] = {}
    for rep in range(REPEATS + 1):
        for (name, n), base in list(bases.items()):
            if name in cal.excluded:
                continue
            t0 = time.perf_counter()
            try:
                _, I = knn(xq, base, k, stats=SearchStats())
            except (RuntimeError, NotImplementedError) as exc:
                cal.excluded[name] = type(exc).__name__
                continue
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter() - t0
            if rep == 0:  # the warm-up run: checks exactness, is not timed
                if name == "fp32":
                    reference[n] = I
                elif n in reference and not _same_sets(I, reference[n]):
                    cal.excluded[name] = "its neighbours differed from the fp32 screen's"
                continue
            best[name, n] = min(best.get((name, n), np.inf), t)
    for name in CANDIDATES:
        if name in cal.excluded or (name, sizes[0]) not in best:
            continue
        t1 = best[name, sizes[0]]
        if len(sizes) == 1:
            cal.lines[name] = {"fixed_s": 0.0, "per_row_s": t1 / sizes[0]}
            continue
        t2 = best[name, sizes[1]]
        per_row = max(0.0, (t1 - t2) / (sizes[0] - sizes[1]))
        cal.lines[name] = {"fixed_s": max(0.0, t1 - per_row * sizes[0]), "per_row_s": per_row}
    if not cal.lines:  # fp32 runs on every torch device; said plainly if it did not
        raise RuntimeError(f"no screen could be calibrated for {key}: {cal.excluded}")
    return cal


def _same_sets(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(np.sort(a, 1), np.sort(b, 1))


def forget() -> None:
    """Drop this process's calibrations (the cache file stays); for tests."""
    with _lock:
        _memory.clear()
