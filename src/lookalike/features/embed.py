"""Images -> vectors: batching, device, the fast CPU path, progress, resume."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Empty, Full, Queue

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import renamed
from ..errors import ModelError, WriteError
from ..progress import counter
from ..hardware import resolve_device
from ..sources.base import Skipped, Source
from .files import (Chunk, check_decoded, check_features_out, clear_work, image_digests, load_done, read_features,
                    save_chunk, workdir, write_features)
from . import calibrate, runtimes
from .mid import NONE as NO_MID
from .mid import mid_text
from .models import DEFAULT_BATCH, DEFAULT_MODEL, build, fit_batch, get_spec, output_dim
from .precision import check_precision
from .views import SINGLE, aggregate, parse_views, render

__all__ = ["CHUNK", "COMPILE_MIN_IMAGES", "Embedded", "Embedder", "batch_size_for_budget", "read_features",
           "write_features"]

CHUNK = 1024  # images per resumable piece of work
# With compile="auto", torch.compile is used on the CPU for jobs of at least this many images:
# it costs 30 to 60 s once and then runs ResNet-50 faster than the frozen TorchScript graph
# (by how much on this machine: docs/bench/embed.json, rendered in docs/benchmarks.md), so
# it pays off on large jobs only.
COMPILE_MIN_IMAGES = 20_000
DIGEST_THREADS = max(1, min(4, os.cpu_count() or 1))  # threads that digest a batch's images


class Embedder:
    """A pretrained CNN that turns uint8 images into float32 feature vectors.

    Parameters
    ----------
    model : 'efficientnet_lite0' (default, offline) or 'resnet50'.
    weights : 'imagenet', 'none' (random) or the path of a weights file.
    pooling : 'max', 'avg', 'gem' (generalised mean) or 'none' (the flattened feature map);
        by default the model's own (`ModelSpec.pooling`, chosen by `lookalike eval`).
    input_size : side of the square network input; images are resized to it.
    views : the views of each image whose descriptors are summed, joined by '+' (see
        `features.views`: 'full', 'centre', 'mirror', 'grey'); by default the model's own
        (`ModelSpec.views`), or 'full' with pooling 'none'. With more than one, vectors are
        L2-normalised sums.
    device : 'auto' (CUDA when present, else CPU), 'cpu' or 'cuda[:N]'.
    precision : 'auto', 'fp32' or 'bf16'. 'auto': bf16 where a short calibration on this
        machine finds it faster and its features within cosine 0.999 of fp32's, else fp32.
    fast : allow a frozen TorchScript graph (channels-last, fused conv+bn) on the CPU, taken
        where the calibration finds it faster than eager PyTorch; False runs eager only.
        What runs, and why, is `choice` (`explain()` in one line; see
        `lookalike.features.calibrate`: measured once per machine and cached).
    compile : torch.compile with weight freezing instead of TorchScript: faster on the CPU
        (docs/benchmarks.md), but it costs 30 to 60 s once. 'auto' compiles in `embed` for jobs of
        COMPILE_MIN_IMAGES images or more on the CPU.
    runtime : 'auto' (default), 'torch', 'onnxruntime' or 'openvino': what runs the network
        (the last two on the CPU only, the network exported to ONNX in the cache folder,
        `lookalike.features.runtimes`). 'auto': the fastest on this machine among those
        installed, chosen by the calibration with the rest (`choice`). An execution choice
        like the precision: the vectors stay comparable (cosine >= 0.999).
    mid : mid-level features appended to the final vector, 'BLOCK:POOLING:WEIGHT' joined by
        '+' (see `features.mid`, e.g. '10:max:0.5'), or 'none'; by default the model's own
        (`ModelSpec.mid`), or 'none' with pooling 'none'. Computed in the same forward pass.
    batch_size : images per forward pass; by default 64 (on a GPU `models.GPU_BATCH`, or
        fewer where half its free memory holds fewer), or what `gpu_memory` allows.
    gpu_memory : budget in MiB on a CUDA device, so that a kNN library can share the card.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, weights: str = "imagenet", pooling: str | None = None,
                 input_size: int | None = None, device: str = "auto", precision: str = "auto",
                 fast: bool = True, compile: bool | str = "auto", batch_size: int | None = None,
                 gpu_memory: float | None = None, views: str | None = None, runtime: str = "auto",
                 mid: str | None = None, progress: bool = True):
        spec = get_spec(model)
        if mid is None:  # the model's own, unless the feature map itself is asked for
            mid = NO_MID if (spec.pooling if pooling is None else pooling) == "none" else spec.mid
        self.net, self.spec, self.weights_id = build(model, weights, pooling, input_size, progress, mid=mid)
        self.mid = mid_text(self.net.taps)
        self.model, self.weights, self.pooling = model, weights, self.net.pooling
        self.input_size = input_size or self.spec.input_size
        # the feature map itself (pooling 'none') is one view unless views are asked for
        self.views = parse_views((SINGLE if self.pooling == "none" else self.spec.views) if views is None else views)
        if self.pooling == "none" and self.views != SINGLE:
            raise ModelError(f"views {self.views} need a pooling (max, avg or gem): the feature maps of "
                             "different views cannot be summed")
        self.device = resolve_device(device)
        self.precision = check_precision(precision)
        self.runtime = runtimes.check_runtime(runtime, self.device, precision, compile)
        self.fast = fast
        self.compile = compile if self.runtime in ("torch", "auto") else False
        self._compile_now = compile is True and fast and self.runtime == "torch"
        self.progress = progress
        self.dim = output_dim(self.spec, self.pooling, self.input_size, self.net)
        self.mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        self._shift, self._scale = self.mean * 255.0, 1.0 / (self.std * 255.0)
        if gpu_memory is not None:
            budget_batch = batch_size_for_budget(self.net, self.input_size, gpu_memory)
            batch_size = min(batch_size or budget_batch, budget_batch)
            if self.device.type == "cuda":
                total = torch.cuda.get_device_properties(self.device).total_memory
                index = self.device.index if self.device.index is not None else torch.cuda.current_device()
                torch.cuda.set_per_process_memory_fraction(min(1.0, gpu_memory * 2**20 / total), index)
        if batch_size is None and self.device.type == "cuda":  # GPU_BATCH, or fewer where large inputs need it
            batch_size = fit_batch(model, self.input_size, None, self.device)
        self.batch_size = batch_size or DEFAULT_BATCH
        if self.batch_size < 1:
            raise ModelError(f"batch size {self.batch_size} must be at least 1")
        self._runner = None
        self._choice: calibrate.Choice | None = None
        self._runner_lock = threading.RLock()  # several threads may embed at once (a searcher)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_runner"] = None  # a traced or compiled graph is rebuilt where it is used
        if self._choice is not None:
            state["_choice"] = replace(self._choice, runner=None)
        del state["_runner_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._runner_lock = threading.RLock()

    @property
    def choice(self) -> calibrate.Choice:
        """How the network runs (eager, frozen or optimized graph, or another runtime; fp32 or
        bf16) and why: decided on first use (`lookalike.features.calibrate`)."""
        return self._decide(None)

    def _decide(self, images: int | None) -> calibrate.Choice:
        """The choice, made once: measured unless a job of `images` is too small to pay for it."""
        if self._choice is None:
            with self._runner_lock:
                if self._choice is None:
                    key = calibrate.shape_class(self.device, self.model, self.weights_id, self._head(),
                                                self.input_size, self.batch_size)
                    self._choice = calibrate.choose(
                        self._variant, device=self.device, fast=self.fast, precision=self.precision, key=key,
                        input_size=self.input_size, batch_size=self.batch_size, preprocess=self.preprocess,
                        runtime=self.runtime, images=images)
        return self._choice

    def calibrate(self) -> calibrate.Choice:
        """Decide how the network runs now, by measuring where no choice was made before on this
        machine (a long-running service calls it at start: its jobs are a few images each)."""
        with self._runner_lock:
            if self._choice is not None and self._choice.reason.startswith("not measured"):
                self._choice, self._runner = None, None
        return self._decide(None)

    def _variant(self, name: str, example: torch.Tensor, copy: bool = True) -> calibrate.Runner:
        """A runner of this network as variant `name` ('frozen-bf16', 'openvino-fp32', ...)."""
        mode, precision = name.split("-")
        dtype = calibrate.DTYPES[precision]
        if mode in ("onnxruntime", "openvino"):
            return runtimes.runner(mode, self.net, f"{self.model}/{self.weights_id}/{self._head()}",
                                   self.input_size, dtype)
        return calibrate.make_runner(self.net, mode, dtype, self.device, example, copy=copy)

    def _head(self) -> str:
        """What the network does after its trunk, for the names of what is cached per network
        (a calibration's shape class, an ONNX export): the pooling, and the mid-level taps."""
        return self.pooling if self.mid == NO_MID else f"{self.pooling}+mid{self.mid.replace(':', '-')}"

    @property
    def dtype(self) -> torch.dtype:
        """The network's precision (torch.float32 or torch.bfloat16), as `choice` decided."""
        return self.choice.dtype

    def explain(self, brief: bool = False) -> str:
        """One line: how the network runs here, and why (`brief`: a choice kept from an
        earlier run without its measurements, which `lookalike calibrate` shows)."""
        out = self.choice.brief() if brief else self.choice.explain()
        if self._compile_now:
            out += ("; torch.compile" + (f" (a job of {COMPILE_MIN_IMAGES:,} images or more)"
                                         if self.compile == "auto" else ""))
        return out

    def config(self) -> dict:
        """What identifies these vectors: two runs with equal configs give comparable vectors."""
        return {
            "model": self.model, "weights": self.weights_id, "pooling": self.pooling, "views": self.views,
            "mid": self.mid, "input_shape": [self.input_size, self.input_size, 3], "dim": self.dim,
            "preprocessing": {"resize": "bilinear-antialias", "scale": 1 / 255,
                              "mean": list(self.spec.mean), "std": list(self.spec.std)},
            "precision": str(self.dtype).removeprefix("torch."),
        }

    # -- one batch -------------------------------------------------------------------------
    def preprocess(self, images: np.ndarray, view: str = SINGLE) -> torch.Tensor:
        """uint8 (n, h, w, 3) -> normalised float32 (n, 3, s, s) on the device: `view` of it (the
        runner puts it in its own layout and precision)."""
        return self._normalise(render(self._pixels(images), view))

    def _pixels(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (n, h, w, 3) -> float (n, 3, s, s) on the 0-255 scale, on the device (to a GPU
        through page-locked memory: a copy from pageable memory would wait for the GPU's queue)."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ModelError(f"images must be uint8 of shape (n, h, w, 3), got {images.dtype} {images.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2)
        if x.shape[-2:] != (self.input_size, self.input_size):
            return F.interpolate(x.float(), size=(self.input_size, self.input_size), mode="bilinear",
                                 antialias=True, align_corners=False)
        # one pass to planar float32 (the layout ONNX Runtime and OpenVINO take without a copy)
        return torch.empty(x.shape, dtype=torch.float32, device=x.device).copy_(x)

    def _normalise(self, x: torch.Tensor, own: bool = False) -> torch.Tensor:
        """(x / 255 - mean) / std, computed as (x - 255 mean) * (1 / (255 std)): two passes, in
        place when the caller owns `x` (`own`), where three allocating ones took 6x as long."""
        return (x.sub_(self._shift) if own else x.sub(self._shift)).mul_(self._scale)

    def _prepare(self, example: torch.Tensor):
        choice = self.choice
        if self._compile_now:
            return calibrate.make_runner(self.net, choice.mode, choice.dtype, self.device, example, compiled=True,
                                         copy=False)
        if choice.runner is not None:
            return choice.runner  # the calibration's, measured with these very weights
        return self._variant(choice.variant, example, copy=False)

    def _get_runner(self, example: torch.Tensor):
        """The prepared network, traced or compiled once on the first batch; thread-safe."""
        _ = self.choice  # decided (measured) before the lock below is taken
        with self._runner_lock:
            if self._runner is None:
                with torch.no_grad():
                    self._runner = self._prepare(example)
            return self._runner

    @torch.inference_mode()
    def embed_array(self, images: np.ndarray) -> np.ndarray:
        """Features of uint8 images (n, h, w, 3): float32 of shape (n, dim); with several
        views, the L2-normalised sum of each view's normalised features (`views.aggregate`)."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        self._decide(len(images))
        starts = range(0, len(images), self.batch_size)
        for lo, part in zip(starts, self._features_of(images[lo : lo + self.batch_size] for lo in starts)):
            out[lo : lo + len(part)] = part
        return out

    def _forward(self, images: np.ndarray) -> torch.Tensor:
        """One batch (at most `batch_size` images) through the network: float32 features on the
        device, queued there (nothing waits for them)."""
        pixels = self._pixels(images)
        n = len(pixels)
        parts = []
        views = self.views.split("+")
        for view in views:
            x = self._normalise(render(pixels, view), own=len(views) == 1 and view == SINGLE)
            if self._compile_now and n < self.batch_size:  # a compiled graph has one batch shape
                x = torch.cat([x, x.new_zeros((self.batch_size - n, *x.shape[1:]))])
            parts.append(self._get_runner(x)(x)[:n].float())
        return parts[0] if len(parts) == 1 else aggregate(parts)

    @torch.inference_mode()
    def _features_of(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The features of each batch of uint8 images, in order. On a GPU the host keeps one
        batch ahead: batch i + 1 is copied in (from page-locked memory) and its kernels queued
        while batch i runs, and batch i's features come back to page-locked memory without
        stopping the stream, so the GPU never waits for the host between batches. On the CPU,
        batch by batch."""
        if self.device.type != "cuda":
            for images in batches:
                yield (self._forward(images).cpu().numpy() if len(images) else np.empty((0, self.dim), np.float32))
            return
        queued: deque[tuple[torch.Tensor | np.ndarray, torch.cuda.Event | None]] = deque()
        for images in batches:
            if len(images):
                y = self._forward(images)
                host = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
                host.copy_(y, non_blocking=True)
                done = torch.cuda.Event()
                done.record(torch.cuda.current_stream(y.device))  # the copy's stream (cuda:1 is not the default)
                queued.append((host, done))
            else:
                queued.append((np.empty((0, self.dim), np.float32), None))
            while len(queued) > 1:
                yield _ready(*queued.popleft())
        while queued:
            yield _ready(*queued.popleft())

    # -- a whole source, resumable -----------------------------------------------------------
    def embed(self, source: Source, out: str | os.PathLike | None = None, *, return_kept: bool = False):
        """Features of every image of `source` that decodes, in order.

        An image that cannot be decoded (a file whose header read when the source was opened
        but whose pixels do not) has no row: it is listed in `source.skipped` and in the
        sidecar's `skipped`, whose `ids` name the rows. With `out` (a .npy path), finished
        chunks are kept in a hidden folder beside it, so an interrupted run resumes where it
        stopped (a chunk whose images changed since is embedded again); at the end `out` and
        its JSON sidecar are written atomically. `out` is checked before any work (see
        `check_features_out`). Not for several threads at once (use `embed_array` there).

        Returns
        -------
        features : ndarray of shape (n_kept, dim), float32; n_kept == len(source) unless
            some images could not be decoded.
        kept : ndarray of shape (n_kept,), int64, only with `return_kept`: the image of
            `source` each row belongs to.
        """
        done = self.embed_rows(source, out)
        return (done.features, done.kept) if return_kept else done.features

    def embed_rows(self, source: Source, out: str | os.PathLike | None = None, *,
                   keep_empty: bool = False) -> Embedded:
        """What `embed` computes, with the content digest of each row's image (see `Embedded`).
        With `out`, a source none of whose images decode is refused (`SourceError`, nothing
        written) unless `keep_empty` (an index's staging, which says it in its own words)."""
        n = len(source)
        out = None if out is None else check_features_out(out, inputs=input_files(source))
        work = None if out is None else workdir(out)
        self._decide(n)  # before the config, which names the precision chosen
        meta = {"config": self.config(), "source": source.describe(), "chunk": CHUNK, "n": n}
        done = {} if work is None else self._still_valid(source, load_done(work, meta), work)
        todo = n - sum(c.rows for c in done.values())
        if self.compile == "auto" and self._runner is None:
            self._compile_now = (self.fast and self.device.type == "cpu" and todo >= COMPILE_MIN_IMAGES
                                 and self.choice.mode in calibrate.TORCH_MODES)
        if self.progress and todo:
            print(f"embed {self.model}: {self.explain(brief=True)}", file=sys.stderr)
        bar = counter(total=n, desc=f"embed {self.model}", unit="img", enabled=self.progress,
                      initial=n - todo)
        started = time.perf_counter()
        try:
            for lo in range(0, n, CHUNK):
                if lo not in done:
                    done[lo] = self._embed_run(source, lo, min(lo + CHUNK, n), bar)
                    if work is not None:
                        save_chunk(work, lo, done[lo])
        except WriteError as exc:  # name the output asked for, not its hidden work folder
            raise renamed(exc, out) from exc.__cause__
        finally:
            bar.close()
        result = Embedded.join([done[lo] for lo in sorted(done)], n, self.dim)
        for entry in result.failed.values():  # failures a resumed run did not meet again
            source.note_skipped(entry)
        self.last_seconds = time.perf_counter() - started
        if out is not None and work is not None:
            if not keep_empty:
                check_decoded(source.name, n, len(result.kept), work)
            skipped = [{"id": source.ids[i], "path": s.path, "reason": s.reason} for i, s in result.failed.items()]
            write_features(out, result.features, {**self.config(), "source": source.describe(),
                                                  "ids": [source.ids[i] for i in result.kept], "skipped": skipped})
            clear_work(work)
        return result

    def _still_valid(self, source: Source, done: dict[int, Chunk], work: Path) -> dict[int, Chunk]:
        """The finished chunks whose images are still those they were computed from: each is
        read again (far cheaper than the CNN) and its digests compared; the others are dropped."""
        valid = {}
        for lo, chunk in sorted(done.items()):
            digests, failed = [], set()
            for batch in source.batches(self.batch_size, lo, lo + chunk.rows):
                digests += image_digests(batch.images)
                failed |= batch.failed.keys()
            if digests == chunk.digests and failed == chunk.failed.keys():
                valid[lo] = chunk
            else:
                (work / f"{lo:012d}.npy").unlink(missing_ok=True)
        return valid

    def _embed_run(self, source: Source, lo: int, hi: int, bar) -> Chunk:
        parts, failed, digests = [], {}, []
        read: deque = deque()  # batches read whose features are not back yet
        with ThreadPoolExecutor(DIGEST_THREADS) as pool:  # one pool a run, not one a batch
            batches = _digested(source.batches(self.batch_size, lo, hi), pool)
            if self.device.type == "cuda":  # the host reads and digests the next batches while the GPU works
                batches = _read_ahead(batches)

            def images() -> Iterator[np.ndarray]:
                for batch, batch_digests in batches:
                    read.append((batch, batch_digests))
                    yield batch.images

            features_of = self._features_of(images())
            try:
                for features in features_of:
                    batch, batch_digests = read.popleft()
                    parts.append(features)
                    digests += batch_digests
                    failed |= batch.failed
                    bar.update(batch.stop - batch.start)
            finally:  # an interrupted run stops its reading thread now, not when its traceback is dropped
                features_of.close()
                batches.close()
        return Chunk(np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32), failed, digests)


def _digested(batches: Iterable, pool: ThreadPoolExecutor) -> Iterator[tuple]:
    """Each batch with the digests of its images (by `pool`'s threads, `DIGEST_THREADS` of
    them: BLAKE2b lets go of the GIL)."""
    for batch in batches:
        n = len(batch.images)
        step = max(64, -(-n // DIGEST_THREADS))
        if n <= step:
            yield batch, image_digests(batch.images)
            continue
        parts = pool.map(image_digests, [batch.images[i : i + step] for i in range(0, n, step)])
        yield batch, [d for part in parts for d in part]


def _read_ahead(items: Iterator, depth: int = 2) -> Iterator:
    """`items`, produced by a thread of their own up to `depth` ahead of the consumer; an
    exception there is raised here, and a consumer that stops early stops the thread."""
    queue: Queue = Queue(depth)
    stop = threading.Event()
    end = object()

    def put(item, exc=None) -> bool:
        """Hand `item` over unless the consumer has stopped (then False)."""
        while not stop.is_set():
            try:
                queue.put((item, exc), timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(end, exc)

    thread = threading.Thread(target=produce, name="lookalike-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = queue.get()
            if exc is not None:
                raise exc
            if item is end:
                return
            yield item
    finally:
        stop.set()
        deadline = time.monotonic() + 10  # a producer in the middle of a slow read is left to end on its own
        while thread.is_alive() and time.monotonic() < deadline:  # one blocked on a full queue sees the stop
            try:
                queue.get(timeout=0.1)
            except Empty:
                pass


def _ready(features: torch.Tensor | np.ndarray, done: torch.cuda.Event | None) -> np.ndarray:
    """A batch's features once their copy to the host has finished."""
    if done is not None:
        done.synchronize()
    return features if isinstance(features, np.ndarray) else features.numpy()


@dataclass
class Embedded:
    """What `Embedder.embed_rows` returns.

    Attributes
    ----------
    features : ndarray of shape (n_kept, dim), float32
    kept : ndarray of shape (n_kept,), int64: the image of the source each row belongs to
    digests : list of str, one per row: BLAKE2b-128 of the image's pixels as read (hex)
    failed : dict of int to Skipped: the images that could not be decoded, and why
    """

    features: np.ndarray
    kept: np.ndarray
    digests: list[str]
    failed: dict[int, Skipped]

    @classmethod
    def join(cls, chunks: list[Chunk], n: int, dim: int) -> Embedded:
        features = np.concatenate([c.features for c in chunks]) if chunks else np.empty((0, dim), np.float32)
        failed = dict(sorted((i, s) for c in chunks for i, s in c.failed.items()))
        kept = np.setdiff1d(np.arange(n, dtype=np.int64), np.fromiter(failed, np.int64, len(failed)))
        return cls(features, kept, [d for c in chunks for d in c.digests], failed)


def input_files(source: Source) -> list[Path]:
    """The files a source reads from, when it is one file (a .npy, an STL-10 .bin): an
    output must not be one of them."""
    spec = str(source.spec or "")
    path = Path(spec.removeprefix("stl10:"))
    return [path] if spec and path.is_file() else []


def batch_size_for_budget(net: torch.nn.Module, input_size: int, budget_mib: float) -> int:
    """The largest batch whose activations and weights fit in `budget_mib` (fp32 sizes, so an
    upper bound for bf16). Activations are measured with one image on the CPU: the peak of an
    inference pass is bounded by the two largest live tensors plus the input; the estimate
    counts 3x the largest one. It does not count the CUDA context or allocator fragmentation,
    for which 10% of the budget is held back.
    """
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel() * 4))
             for m in net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            net.float().cpu()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in hooks:
            h.remove()
    weight_bytes = sum(p.numel() * 4 for p in net.parameters()) + sum(b.numel() * 4 for b in net.buffers())
    per_image = 3 * max(sizes) + 3 * input_size * input_size * 4
    free = budget_mib * 2**20 * 0.9 - weight_bytes
    if free < per_image:
        need = (weight_bytes + per_image) / 0.9 / 2**20
        raise ModelError(f"--gpu-memory {budget_mib:g} MiB is too small; this model needs at least {need:.0f} MiB")
    return int(min(1024, free // per_image))
