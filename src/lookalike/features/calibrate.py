"""The Embedder's fast path decided by measuring: eager or frozen graph, fp32 or bf16, and
PyTorch, ONNX Runtime or OpenVINO.

Neither the CPU's flags nor the model's name say which way of running a CNN is fastest on a
machine: a frozen TorchScript graph (conv+bn fused, channels-last) is faster than eager
PyTorch for ResNet-50 and sometimes slower for EfficientNet-Lite0's depthwise convolutions;
bf16 is several times fp32 on a CPU with AMX tiles, about 2x to 4x on one with AVX-512 BF16,
slower where it is emulated, and it moves some models' features too far (lite0's ReLU6 and
max pooling reach cosine 0.98 to fp32). So the first embedding of a shape class on a
machine times each candidate on a few real photos and keeps the fastest whose features
stay within cosine `COSINE` (0.999) of eager fp32's on every photo:

- candidates: eager (NCHW, as `fast=False`) and frozen (channels-last, traced and frozen;
  on the CPU also optimized, oneDNN's layouts kept), each in fp32 and bf16, narrowed by
  what the caller asked (`fast=False`: eager only; `precision='fp32'` or `'bf16'`: that
  precision only). With runtime 'auto' (the
  default) on the CPU with the fast path, the network exported to ONNX and run by ONNX
  Runtime (fp32) and by OpenVINO (fp32 and bf16) are candidates too, each where its package
  is installed (`runtimes.installed`); on EfficientNet-Lite0 they run 3.5x PyTorch's best.
  The export is once per network, into the cache folder (`runtimes.exported`); with both
  installed a first calibration took 31 s for ResNet-50 and 23 s for lite0 on the 2 cores
  at load 5, the export included. One candidate left: nothing is measured. torch.compile is no candidate here:
  it costs 30 to 60 s, so `compile='auto'` takes it for large jobs only, where PyTorch was
  chosen (`embed.COMPILE_MIN_IMAGES`).
- when: on the first job of `MEASURE_FROM` images or more (`Embedder.embed`, an index
  build, the service's warm-up, `Embedder.calibrate()`); a smaller job with no choice made
  before runs eager PyTorch in fp32 (nothing to trace or measure: a search of a few images
  would wait longer for those than it gains).
- order: eager variants first; where eager bf16 drifts past the bound, PyTorch's bf16 graphs are
  not built (folding conv+bn before rounding drifts as far or further: lite0's frozen bf16
  reached 0.980 where eager bf16 reached 0.994), which halves what lite0's calibration traces.
- measurement: `IMAGES` crops of the sample set's photographs (real pictures, offline) at
  the model's input size; each candidate runs once to warm up (its features are compared
  with eager fp32's then: bf16 that drifts is no candidate), then `REPEATS` times,
  interleaved with the others; the fastest run counts. A few seconds once per machine
  and shape class when the CPU is idle; on the 2 shared cores it was built on (load average
  5 to 9) lite0's took 29 s and ResNet-50's 23 s, the cost of tracing three graphs included.
- shape class: device, model, weights, pooling, input size and batch class (the batch
  size rounded up to a power of two; on the CPU 8 and more being one class, timed at 8
  images a pass; on a GPU timed at the batch size itself, the photos repeated, since a few
  images a pass would time the host's launches: on an H200 ResNet-50's frozen bf16 graph
  ran 21,262 images/s in batches of 64 and 58,250 in batches of 256): the cosine depends
  on the weights and the pooling. With other runtimes among the
  candidates, their packages' versions are part of the key too.
- the cache file `embed-calibration.json`, beside the kNN's `calibration.json`, records the
  machine (CPU model, cores, threads, torch version, CUDA device); another machine, or a file
  that cannot be read, is measured anew and the file rewritten. `LOOKALIKE_CALIBRATION=0`
  measures without reading or writing it. A busy machine measures noisily: the choice is
  only as good as the moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..cache import cache_dir, calibration_files, read_calibrations, write_calibrations
from ..hardware import busy_note, cpu_snapshot, load_average, others_share, when
from ..hardware import machine_identity as machine
from . import runtimes

__all__ = ["COSINE", "Choice", "DTYPES", "MODES", "TORCH_MODES", "cache_path", "choose", "forget", "least_cosine",
           "machine", "make_runner"]

TORCH_MODES = ("eager", "frozen", "optimized")
MODES = (*TORCH_MODES, "onnxruntime", "openvino")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
COSINE = 0.999  # the least cosine to eager fp32's features, on every calibration photo
IMAGES = 8
GPU_IMAGES = 1024  # the most images a timed pass holds on a GPU (`batch_images`)
MEASURE_FROM = 256  # images in a job from which measuring (a few seconds, once per machine) pays off
REPEATS = 2
FILE = "embed-calibration.json"
_lock = threading.Lock()
_memory: dict[str, Choice] = {}

Runner = Callable[[torch.Tensor], torch.Tensor]
Build = Callable[[str, torch.Tensor], Runner]  # (variant, example input) -> runner


@dataclass
class Choice:
    """How an Embedder runs its network, and why.

    Attributes
    ----------
    variant : 'mode-precision', e.g. 'frozen-bf16'.
    key : the shape class it was measured for ('' when nothing was measured).
    seconds : seconds per image of each candidate measured (the fastest run).
    cosines : the least cosine of each candidate's features to eager fp32's.
    excluded : candidates that cannot be chosen, and why.
    """

    variant: str
    key: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    cosines: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    reason: str = "by calibration"
    measured: str = ""  # when (UTC, ISO 8601; "" in files written before it was kept)
    load: float | None = None  # the one-minute load average then: a busy machine measures noisily
    others: float | None = None  # the share of the CPUs other processes used while it measured
    # the chosen variant, ready to run, where this process measured it (never cached in files)
    runner: Runner | None = field(default=None, repr=False, compare=False)
    kept: bool = field(default=False, compare=False)  # read back from the cache folder, not measured now

    @property
    def mode(self) -> str:
        return self.variant.split("-")[0]

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.variant.split("-")[1]]

    def explain(self) -> str:
        """One line: what was chosen, and the measurements that chose it."""
        if not self.seconds:
            return f"{self.variant} ({self.reason})"
        parts = ", ".join(f"{n} {1 / s:.1f}" for n, s in sorted(self.seconds.items(), key=lambda kv: kv[1]))
        out = f"{self.variant} {self.reason} ({self.key}; images/s: {parts})"
        if self.excluded:
            out += "; not candidates: " + ", ".join(f"{n} ({why})" for n, why in self.excluded.items())
        return out + busy_note(self.load, self.others)

    def brief(self) -> str:
        """`explain()`, or for a choice kept from an earlier run a short line that says where
        the measurements are (what a job prints each time it starts)."""
        if not (self.kept and self.seconds):
            return self.explain()
        when = f" {self.measured[:10]}" if self.measured else ""
        return f"{self.variant} (by calibration{when}; `lookalike calibrate` shows the measurements)"

    def as_dict(self) -> dict:
        return {"variant": self.variant, "key": self.key, "seconds": self.seconds, "cosines": self.cosines,
                "excluded": self.excluded, "measured": self.measured, "load": self.load,
                "others": self.others}


def candidates(device: torch.device, fast: bool, precision: str, runtime: str = "torch") -> list[str]:
    """The variants an Embedder with these options may run, in order of preference on a tie.
    'auto': PyTorch's, then, on the CPU with the fast path, those of each other runtime
    whose package is installed (ONNX Runtime only where fp32 is allowed)."""
    if runtime == "auto":
        names = candidates(device, fast, precision, "torch")
        if fast and device.type == "cpu":
            for other in ("openvino", "onnxruntime"):
                if runtimes.installed(other) and not (other == "onnxruntime" and precision == "bf16"):
                    names += candidates(device, fast, precision, other)
        return names
    if runtime != "torch":  # ONNX Runtime runs this network in fp32 only
        names = ["fp32"] if runtime == "onnxruntime" else ["fp32", "bf16"] if precision == "auto" else [precision]
        return [f"{runtime}-{p}" for p in names]
    # optimize_for_inference keeps oneDNN layouts: a CPU pass; a GPU takes the frozen graph
    modes = ["eager"] + ((["frozen", "optimized"] if device.type == "cpu" else ["frozen"]) if fast else [])
    names = ["fp32", "bf16"] if precision == "auto" else [precision]
    if device.type == "cuda" and "bf16" in names and precision == "auto" and not torch.cuda.is_bf16_supported():
        names.remove("bf16")
    return [f"{m}-{p}" for m in reversed(modes) for p in names]  # graphs first: fewer allocations


def shape_class(device: torch.device, model: str, weights_id: str, pooling: str, input_size: int,
                batch_size: int) -> str:
    """The key of a calibration: what it was measured on, and at how many images a pass
    (`batch_images`: the batch size rounded up to a power of two, capped on the CPU)."""
    return f"{device.type}/{model}/{weights_id}/{pooling}/s{input_size}/b{batch_images(batch_size, device)}"


def batch_images(batch_size: int, device: torch.device | None = None) -> int:
    """Images per timed pass: the batch class. On the CPU, batches of `IMAGES` or more are
    timed at `IMAGES` (a larger pass would cost more seconds than the choice is worth); on a
    GPU at the batch size itself, up to `GPU_IMAGES` (a few images a pass would time the
    host's launches, not the GPU's work, and a GPU runs even a large batch in milliseconds)."""
    cap = GPU_IMAGES if device is not None and device.type == "cuda" else IMAGES
    return min(cap, 1 << max(0, int(batch_size) - 1).bit_length())


def cache_path():
    return cache_dir() / FILE


def _read(device: torch.device) -> dict:
    """This machine's cached choices ({} when none, damaged, or another machine's)."""
    return read_calibrations(FILE, machine(device))


def _write(device: torch.device, classes: dict) -> None:
    write_calibrations(FILE, machine(device), classes)


def _parse(entry, allowed: list[str]) -> Choice | None:
    """A cached choice, if it is whole and names a variant the caller allows."""
    try:
        choice = Choice(str(entry["variant"]), str(entry["key"]),
                        {str(n): float(s) for n, s in entry["seconds"].items()},
                        {str(n): float(c) for n, c in entry["cosines"].items()},
                        {str(n): str(w) for n, w in entry.get("excluded", {}).items()},
                        measured=str(entry.get("measured") or ""),
                        load=None if entry.get("load") is None else float(entry["load"]),
                        others=None if entry.get("others") is None else float(entry["others"]))
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    timed = set(choice.seconds)
    if choice.variant not in allowed or not timed <= set(allowed) or set(allowed) - timed - set(choice.excluded):
        return None  # measured for other candidates than these
    if not all(np.isfinite(s) and s > 0 for s in choice.seconds.values()):
        return None
    if choice.cosines.get(choice.variant, 0.0) < COSINE and choice.variant != "eager-fp32":
        return None
    return choice


def choose(build: Build, *, device: torch.device, fast: bool, precision: str, key: str, input_size: int,
           batch_size: int, preprocess: Callable[[np.ndarray], torch.Tensor], runtime: str = "torch",
           images: int | None = None) -> Choice:
    """The variant an Embedder runs (see the module's docstring). `build(variant, example)`:
    a runner of the network as that variant, leaving the network unchanged (`builder`);
    `preprocess`: uint8 images -> float32 NCHW on the device; `key`: the shape class
    (`shape_class`). `images`: how many images the job at hand embeds; a job of fewer than
    `MEASURE_FROM` that finds no choice made before runs the plain variant (`unmeasured`)
    rather than spend seconds on measuring and tracing."""
    allowed = candidates(device, fast, precision, runtime)
    if len(allowed) == 1:
        return Choice(allowed[0], reason="asked for")
    memo = f"{key}|{','.join(allowed)}"
    others = sorted({n.split("-")[0] for n in allowed} - set(TORCH_MODES))
    if others:  # another version of a runtime measures anew
        memo += "|" + ",".join(runtimes.version(r) for r in others)
    here = f"{memo}|t{torch.get_num_threads()}"  # this process's choices, per thread count as the file keeps them
    with _lock:
        if here in _memory:
            return _memory[here]
        choice = _parse(_read(device).get(memo), allowed) if calibration_files() else None
        if choice is not None:
            choice.kept = True
        if choice is None and images is not None and images < MEASURE_FROM:
            return unmeasured(allowed, images)
        if choice is None:
            images = calibration_images(input_size)
            # a GPU times the batch size itself (its class, a power of two, could be twice what fits)
            timed = min(int(batch_size), GPU_IMAGES) if device.type == "cuda" else batch_images(batch_size)
            choice = calibrate(build, device, allowed, key, preprocess, images, timed)
            if calibration_files():
                classes = _read(device)
                classes[memo] = choice.as_dict()
                _write(device, classes)
        _memory[here] = choice
        return choice


def unmeasured(allowed: list[str], images: int) -> Choice:
    """What a small job runs before any calibration: eager PyTorch (or the runtime asked
    for), fp32 unless only bf16 is allowed; no graph to trace or export, nothing to measure."""
    plain = [n for n in allowed if n.startswith("eager-")] or \
        [n for n in allowed if n.startswith(("onnxruntime-", "openvino-"))]
    variant = next((n for n in plain if n.endswith("fp32")), plain[0] if plain else allowed[0])
    return Choice(variant, reason=f"not measured: a job of {images} image(s), under {MEASURE_FROM}")


def calibration_images(input_size: int) -> np.ndarray:
    """`IMAGES` of the sample set's photographs (centre squares at the network's input size);
    random pixels if scikit-image and scikit-learn are not installed."""
    from PIL import Image

    from ..sources.sample import photo_paths

    paths = photo_paths()
    if not paths:
        return np.random.default_rng(0).integers(0, 256, (IMAGES, input_size, input_size, 3), dtype=np.uint8)
    out = np.empty((IMAGES, input_size, input_size, 3), dtype=np.uint8)
    for i in range(IMAGES):
        with Image.open(paths[i * len(paths) // IMAGES]) as im:
            side = min(im.size)
            left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
            square = im.convert("RGB").crop((left, top, left + side, top + side))
            out[i] = np.asarray(square.resize((input_size, input_size), Image.BILINEAR))
    return out


def calibrate(build: Build, device: torch.device, allowed: list[str], key: str,
              preprocess: Callable[[np.ndarray], torch.Tensor], images: np.ndarray, batch: int = IMAGES) -> Choice:
    """Time each allowed variant on `images` (uint8 NHWC: the calibration photos), `batch` a
    pass, and keep the fastest whose features are within cosine COSINE of eager fp32's on
    every image. A `batch` larger than the photos (a GPU's) is timed on the photos repeated."""
    measured, load, cpu = when(), load_average(), cpu_snapshot()  # how busy: before, and while it measures
    x = preprocess(images)
    timed = x.repeat(-(-batch // len(x)), 1, 1, 1)[:batch] if batch > len(x) else x
    with torch.inference_mode():
        reference = _features(build("eager-fp32", x), x)
    choice = Choice(allowed[-1], key, measured=measured, load=load)
    runners: dict[str, Runner] = {}
    eager_first = sorted(allowed, key=lambda n: not n.startswith("eager-"))  # the cheap ones to build
    for name in eager_first:
        drifted = choice.cosines.get("eager-bf16", 1.0)
        if name in ("frozen-bf16", "optimized-bf16") and drifted < COSINE:
            # a graph in bf16 drifts as far or further (conv+bn folded before rounding): not built
            choice.excluded[name] = f"eager bf16 already at cosine {drifted:.4f} < {COSINE}"
            continue
        try:
            with torch.inference_mode():
                runners[name] = build(name, x)
                got = _features(runners[name], x, batch)  # the warm-up run
        except (RuntimeError, NotImplementedError) as exc:  # a device without that kind of kernel
            choice.excluded[name] = f"{type(exc).__name__}"
            runners.pop(name, None)
            continue
        choice.cosines[name] = cos = least_cosine(got, reference)
        if not cos >= COSINE:
            choice.excluded[name] = f"cosine {cos:.4f} to eager fp32 < {COSINE}"
            del runners[name]
            continue
        if timed is not x:  # warmed up at the timed shape too (a GPU's algorithms are chosen per shape)
            try:
                with torch.inference_mode():
                    _features(runners[name], timed, batch)
            except torch.OutOfMemoryError:
                choice.excluded[name] = f"out of memory at {batch} images a pass"
                del runners[name]
                torch.cuda.empty_cache()
    best: dict[str, float] = {}
    for _ in range(REPEATS):
        for name, run in runners.items():
            t0 = time.perf_counter()
            with torch.inference_mode():
                _features(run, timed, batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[name] = min(best.get(name, np.inf), (time.perf_counter() - t0) / len(timed))
    choice.seconds = best
    choice.others = others_share(cpu)
    if best:  # the fastest; on a tie, the earlier in `allowed`
        choice.variant = min(best, key=lambda n: (best[n], allowed.index(n)))
        choice.runner = runners[choice.variant]  # built already: a frozen graph costs seconds
    else:
        choice.variant, choice.reason = "eager-fp32", "the reference: no other candidate ran"
    return choice


def _features(run: Runner, x: torch.Tensor, batch: int = IMAGES) -> np.ndarray:
    return np.concatenate([run(x[lo : lo + batch]).float().cpu().numpy().reshape(len(x[lo : lo + batch]), -1)
                           for lo in range(0, len(x), batch)])


def least_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The least cosine between rows of `a` and the same rows of `b` (float64; two all-zero
    rows are the same vector, cosine 1; a zero row against another, 0)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    same = den == 0  # an all-zero row on both sides is the same vector
    cos = np.where(same, (np.abs(a).sum(1) + np.abs(b).sum(1) == 0).astype(np.float64), num / np.where(same, 1, den))
    return float(cos.min())


def builder(net: nn.Module, device: torch.device, name: str = "net/unnamed/none") -> Build:
    """`build` for `choose`: runners of variants of `net`, on copies of it (PyTorch's) or on
    its export to ONNX (another runtime's; `name`: '<model>/<weights id>/<pooling>', see
    `runtimes.exported`)."""
    def build(variant: str, x: torch.Tensor) -> Runner:
        mode, precision = variant.split("-")
        if mode in TORCH_MODES:
            return make_runner(net, mode, DTYPES[precision], device, x)
        return runtimes.runner(mode, net, name, x.shape[-1], DTYPES[precision])

    return build


def make_runner(net: nn.Module, mode: str, dtype: torch.dtype, device: torch.device,
                example: torch.Tensor, compiled: bool = False, copy: bool = True) -> Runner:
    """`net` run as `mode` in `dtype`: float32 NCHW input -> features. 'eager': NCHW, plain
    PyTorch; 'frozen': channels-last, traced and frozen (conv+bn fused); 'optimized': frozen,
    then `torch.jit.optimize_for_inference` (oneDNN layouts kept between layers; CPU);
    `compiled`: channels-last, torch.compile with weight freezing instead. `copy`: leave
    `net` unchanged (else it is moved to `device` and `dtype` in place)."""
    net = (deepcopy(net) if copy else net).to(device, dtype).eval()
    layout = torch.contiguous_format if mode == "eager" and not compiled else torch.channels_last
    if layout is torch.channels_last:
        net = net.to(memory_format=torch.channels_last)

    def prepared(x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype).contiguous(memory_format=layout)

    if compiled:
        import torch._inductor.config as inductor

        inductor.freezing = True
        graph = torch.compile(net, dynamic=False)
        return lambda x: graph(prepared(x))
    if mode in ("frozen", "optimized"):
        with torch.no_grad():
            graph = torch.jit.freeze(torch.jit.trace(net, prepared(example), check_trace=False))
            if mode == "optimized":
                graph = torch.jit.optimize_for_inference(graph)
        return lambda x: graph(prepared(x))
    return lambda x: net(prepared(x))


def kept(device: torch.device) -> dict[str, Choice | None]:
    """Every choice the cache file keeps for this machine, by its key (shape class, candidates and
    runtime versions; None: an entry that cannot be read)."""
    if not calibration_files():
        return {}
    out = {}
    for memo, entry in _read(device).items():
        allowed = str(memo).split("|")[1].split(",") if str(memo).count("|") >= 1 else []
        out[str(memo)] = _parse(entry, allowed)
    return out


def drop_kept(device: torch.device) -> None:
    """Forget the choices kept for this machine at torch's thread count now (and this
    process's): the next embed of each model measures it again. Those kept at other thread
    counts (a server's one-thread stages) stay."""
    with _lock:
        if calibration_files():
            _write(device, {})
        _memory.clear()


def forget() -> None:
    """Drop this process's choices (the cache file stays); for tests."""
    with _lock:
        _memory.clear()
