"""Where the network runs: PyTorch, ONNX Runtime or OpenVINO, on the CPU; by default ('auto')
whichever the calibration finds fastest on this machine among those installed.

A runtime is an execution choice, like the precision: the network, its weights, pooling,
input size and preprocessing are the same whichever runs it, and the features agree within
cosine 0.999 (tested), so an index built with one runtime is searched with another. ONNX
Runtime and OpenVINO run the network exported once to ONNX (`torch.onnx.export`) into
lookalike's cache folder, `onnx/<model>-<pooling>-s<size>-<digest>.onnx`, the digest naming
the weights (their identity: `imagenet:<file>`, `random:seed0` or a file's content digest).
Both are optional: `pip install 'lookalike[onnx]'` or `'lookalike[openvino]'`; one that is
not installed is simply no candidate for 'auto' (`lookalike.features.calibrate`).

OpenVINO runs as many streams as torch has threads, one thread each: a batch is split
between them and its parts run at once (asynchronous infer requests). At 96 x 96 a layer
of ResNet-50 is too small to keep two threads busy together; two streams each run their
own images, and a stream stalled by a busy neighbour holds up only itself.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..cache import cache_dir
from ..errors import ModelError

__all__ = ["RUNTIMES", "check_runtime", "exported", "installed", "runner", "version"]

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}  # import, extra
OPSET = 17
EXPORT_VERSION = 1  # bump when the export itself changes (opset, names), so old files are not used


def installed(runtime: str) -> bool:
    """Whether `runtime`'s package imports here ('torch': always)."""
    if runtime == "torch":
        return True
    try:
        __import__(PACKAGES[runtime][0])
    except ImportError:
        return False
    return True


def version(runtime: str) -> str:
    """'<package> <version>' of an installed runtime, e.g. 'openvino 2026.4.1-...'."""
    module = PACKAGES[runtime][0] if runtime in PACKAGES else runtime
    return f"{module} {__import__(module).__version__}"


def check_runtime(runtime: str, device: torch.device, precision: str, compile: bool | str) -> str:
    """`runtime` if it can run here as asked; else one line that names it and what is missing.
    'auto' stays 'auto' (the calibration chooses among those installed) unless only torch can
    run as asked: on a GPU, or with `compile=True` (torch.compile)."""
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}; use {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "torch" if device.type != "cpu" or compile is True else runtime
    if runtime == "torch":
        return runtime
    module, extra = PACKAGES[runtime]
    try:
        __import__(module)
    except ImportError:
        raise ModelError(f"runtime {runtime} needs the package {module}: pip install 'lookalike[{extra}]' "
                         f"(or use --runtime torch)") from None
    if device.type != "cpu":
        raise ModelError(f"runtime {runtime} runs on the CPU here; use --device cpu or --runtime torch")
    if compile is True:
        raise ModelError(f"--compile is torch.compile: it does not apply to runtime {runtime}")
    if runtime == "onnxruntime" and precision == "bf16":
        raise ModelError("runtime onnxruntime runs this network in fp32 only; use --precision fp32 or auto")
    return runtime


def exported(net: nn.Module, name: str, input_size: int) -> Path:
    """The ONNX file of `net` (fp32, batch size free), exported on first use. `name`:
    '<model>/<weights id>/<pooling>', what makes two networks the same."""
    model, weights_id, pooling = name.split("/", 2)
    digest = hashlib.blake2b(f"{EXPORT_VERSION}|{name}|{input_size}".encode(), digest_size=8).hexdigest()
    path = cache_dir() / "onnx" / f"{model}-{pooling}-s{input_size}-{digest}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, input_size, input_size)
    net = net.float().cpu().eval()
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on its own future
        torch.onnx.export(net, (example,), str(tmp), input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "n"}, "features": {0: "n"}}, opset_version=OPSET,
                          dynamo=False)
    return path


def runner(runtime: str, net: nn.Module, name: str, input_size: int, dtype: torch.dtype) -> Callable:
    """float32 NCHW images -> features, run by `runtime` ('onnxruntime' or 'openvino') with
    as many threads as torch uses. Safe to call from several threads at once."""
    path = exported(net, name, input_size)
    threads = torch.get_num_threads()
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run_ort(x: torch.Tensor) -> torch.Tensor:
            (y,) = session.run(None, {"images": _numpy(x)})
            return torch.from_numpy(y)

        return run_ort
    import openvino as ov

    hint = "bf16" if dtype == torch.bfloat16 else "f32"  # said: on bf16 CPUs OpenVINO's default is bf16
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": threads,
                                                         "INFERENCE_PRECISION_HINT": hint})
    streams = int(compiled.get_property("NUM_STREAMS"))
    local = threading.local()  # each calling thread its own requests: they are not shared by threads

    def run_ov(x: torch.Tensor) -> torch.Tensor:
        parts = [p for p in np.array_split(_numpy(x), streams) if len(p)]
        if not hasattr(local, "requests"):
            local.requests = [compiled.create_infer_request() for _ in range(streams)]
        for request, part in zip(local.requests, parts):
            request.start_async({0: part})
        outs = []
        for request, _ in zip(local.requests, parts):
            request.wait()
            outs.append(np.array(request.get_output_tensor(0).data, dtype=np.float32))
        return torch.from_numpy(np.concatenate(outs))

    return run_ov


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())
