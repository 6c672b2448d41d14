"""Where the network runs: PyTorch (the default), ONNX Runtime or OpenVINO, on the CPU.

A runtime is an execution choice, like the precision: the network, its weights, pooling,
input size and preprocessing are the same whichever runs it, and the features agree within
cosine 0.999 (tested), so an index built with one runtime is searched with another. ONNX
Runtime and OpenVINO run the network exported once to ONNX (`torch.onnx.export`) into
lookalike's cache folder, `onnx/<model>-<pooling>-s<size>-<digest>.onnx`, the digest naming
the weights (their identity: `imagenet:<file>`, `random:seed0` or a file's content digest).
Both are optional: `pip install 'lookalike[onnx]'` or `'lookalike[openvino]'`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..cache import cache_dir
from ..errors import ModelError

__all__ = ["RUNTIMES", "check_runtime", "exported", "runner"]

RUNTIMES = ("torch", "onnxruntime", "openvino")
PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}  # import, extra
OPSET = 17
EXPORT_VERSION = 1  # bump when the export itself changes (opset, names), so old files are not used


def check_runtime(runtime: str, device: torch.device, precision: str, compile: bool | str) -> str:
    """`runtime` if it can run here as asked; else one line that names it and what is missing."""
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}; use {', '.join(RUNTIMES)}")
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
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                         "INFERENCE_PRECISION_HINT": hint,
                                                         "PERFORMANCE_HINT": "LATENCY"})

    def run_ov(x: torch.Tensor) -> torch.Tensor:
        request = compiled.create_infer_request()  # one per call: requests are not shared by threads
        y = request.infer({0: _numpy(x)})[compiled.output(0)]
        return torch.from_numpy(np.array(y, dtype=np.float32))

    return run_ov


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())
