"""Images/s of lookalike's feature extraction against Keras 3 + TensorFlow, ONNX Runtime and OpenVINO.

Same images (the sample set, 96x96x3), same run, each variant in its own process (so that
TensorFlow's and PyTorch's thread pools never compete), repeats interleaved because these
machines drift; the best rate of each variant is kept.

Like is compared with like: ResNet-50 rows with Keras's ResNet50 at its best (run both
without XLA, `jit_compile=False`, and with it, `jit_compile=True`; the faster is the
baseline); EfficientNet-Lite0 rows with the same network in lookalike's eager fp32, since
keras.applications has no EfficientNet-Lite0 (its EfficientNetB0 is a different, larger
network). Each row names its baseline. ONNX Runtime and OpenVINO run lookalike's own network
(exported once to ONNX, `lookalike.features.runtimes`, the same preprocessing) with as many
threads as torch: what a user would pick instead of PyTorch for CPU inference. Every
lookalike row (PyTorch or not) gives its least cosine to lookalike's eager fp32 features on
the first 32 images (Keras's ResNet50 has other weights: no cosine).

    python benchmarks/embed_speed.py --n 512 --repeats 2 --out docs/bench/embed.json

Needs keras, tensorflow-cpu, onnxruntime and openvino beside lookalike (pip install
'.[bench]'); Keras and TensorFlow are never a dependency of lookalike itself. Keras:
keras.applications.ResNet50(weights=None, include_top=False, input_shape=(96, 96, 3),
pooling='max'), predict(batch_size=64), with model.jit_compile set explicitly (Keras 3's
default "auto" takes XLA where every layer supports it, so an unset flag says nothing of what ran).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = {
    "keras-resnet50-fp32": "Keras 3 / TensorFlow ResNet50, fp32, predict(batch_size=64), jit_compile=False (no XLA)",
    "keras-resnet50-xla": "Keras 3 / TensorFlow ResNet50, fp32, predict(batch_size=64), jit_compile=True (XLA)",
    "lookalike-resnet50-eager-fp32": "lookalike resnet50, eager fp32 (--no-fast --precision fp32)",
    "lookalike-resnet50-fast": ("lookalike resnet50, default: runtime, fast path and precision chosen by "
                                "calibration (--runtime auto)"),
    "lookalike-resnet50-torch": ("lookalike resnet50, PyTorch, fast path and precision chosen by calibration "
                                 "(--runtime torch)"),
    "lookalike-resnet50-compile": "lookalike resnet50, fast path with torch.compile (--compile)",
    "lookalike-resnet50-bf16": "lookalike resnet50, PyTorch bf16 fast path (--runtime torch --precision bf16)",
    "lookalike-resnet50-onnxruntime": "lookalike resnet50 run by ONNX Runtime, fp32 (--runtime onnxruntime)",
    "lookalike-resnet50-openvino": ("lookalike resnet50 run by OpenVINO, 2 streams x 1 thread, precision by "
                                    "calibration (--runtime openvino)"),
    "lookalike-resnet50-openvino-fp32": ("lookalike resnet50 run by OpenVINO, 2 streams x 1 thread, fp32 "
                                         "(--precision fp32)"),
    "openvino-resnet50-latency": ("OpenVINO on lookalike's exported resnet50, bf16, PERFORMANCE_HINT=LATENCY (1 stream "
                                  "x 2 threads), one synchronous request per batch of 64 (lookalike's setting before)"),
    "openvino-resnet50-throughput": ("OpenVINO on lookalike's exported resnet50, bf16, PERFORMANCE_HINT=THROUGHPUT, "
                                     "AsyncInferQueue of its optimal number of requests, batches of 16"),
    "torch-resnet50-2streams": ("PyTorch on lookalike's resnet50, optimized-bf16 graph, 2 Python threads x 1 intra-op "
                                "thread, each on every other batch of 32"),
    "onnxruntime-resnet50-2streams": ("ONNX Runtime on lookalike's exported resnet50, fp32, 2 sessions x 1 thread, "
                                      "each on every other batch of 32"),
    "lookalike-efficientnet_lite0-eager-fp32": "lookalike efficientnet_lite0, eager fp32",
    "lookalike-efficientnet_lite0-fast": ("lookalike efficientnet_lite0, default: runtime, fast path and "
                                          "precision chosen by calibration (--runtime auto)"),
    "lookalike-efficientnet_lite0-torch": ("lookalike efficientnet_lite0, PyTorch, fast path and precision chosen "
                                           "by calibration (--runtime torch)"),
    "lookalike-efficientnet_lite0-compile": "lookalike efficientnet_lite0, torch.compile",
    "lookalike-efficientnet_lite0-onnxruntime": "lookalike efficientnet_lite0 run by ONNX Runtime, fp32",
    "lookalike-efficientnet_lite0-openvino": ("lookalike efficientnet_lite0 run by OpenVINO, 2 streams x 1 thread, "
                                              "precision by calibration"),
}
COSINE_IMAGES = 32  # images whose features each lookalike row compares with eager fp32's


def measure(variant: str, n: int) -> dict:
    """Run in a child process: warm up, then time embedding n images."""
    import numpy as np

    from lookalike.sources import SampleSource

    images = SampleSource(n, seed=0).images
    if variant.startswith("keras"):
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras

        model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(96, 96, 3), pooling="max")
        model.jit_compile = variant.endswith("xla")  # said, not left to "auto"
        pre = keras.applications.resnet50.preprocess_input

        def run(x):
            return model.predict(pre(x.astype("float32")), batch_size=64, verbose=0)

        config = (f"keras {keras.__version__}, tensorflow {__import__('tensorflow').__version__}, "
                  f"jit_compile={model.jit_compile}")
    else:
        from lookalike.features import Embedder
        from lookalike.features.calibrate import least_cosine

        kind, model_name, *mode = variant.split("-")
        mode = "-".join(mode)
        weights = "none" if model_name == "resnet50" else "imagenet"
        if kind != "lookalike":  # a peer's own settings, on lookalike's network and preprocessing
            run, config = peer(kind, mode, Embedder(model_name, weights=weights, progress=False, runtime="torch"))
        else:
            runtime = (mode.split("-")[0] if mode.startswith(("onnxruntime", "openvino")) else
                       "auto" if mode == "fast" else "torch")
            e = Embedder(model_name, weights=weights, progress=False, fast=mode != "eager-fp32",
                         compile=mode == "compile", runtime=runtime,
                         precision="bf16" if mode.endswith("bf16") else "fp32" if mode.endswith("fp32") else "auto")
            e.calibrate()  # what `embed` does for a job of this size (measured once per machine, not timed)
            run = e.embed_array
            config = _config(e)
    run(images[:64])  # warm-up (and compilation)
    t0 = time.perf_counter()
    out = run(images)
    seconds = time.perf_counter() - t0
    cosine = None
    if not variant.startswith("keras"):  # not timed: eager fp32's features of the first images
        ref = Embedder(model_name, weights=weights, progress=False, fast=False, precision="fp32", runtime="torch")
        cosine = least_cosine(np.asarray(out[:COSINE_IMAGES]), ref.embed_array(images[:COSINE_IMAGES]))
    return {"variant": variant, "images": n, "seconds": seconds, "images_per_s": n / seconds,
            "dim": int(np.asarray(out).shape[1]), "config": config, "cosine_to_fp32": cosine}


def peer(kind: str, mode: str, e) -> tuple:
    """uint8 images -> features as a user of `kind` would set it up (`mode`), on the network
    lookalike runs (exported to ONNX where the peer needs it) with lookalike's preprocessing."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    from lookalike.features import calibrate, runtimes

    path = str(runtimes.exported(e.net, f"{e.model}/{e.weights_id}/{e.pooling}", e.input_size))

    def halves(run_one, runners: list, batch: int):  # every other batch on each of 2 threads
        pool = ThreadPoolExecutor(len(runners))

        def run(images):
            x = e.preprocess(images)
            starts = list(range(0, len(x), batch))
            parts = pool.map(lambda k: [run_one(runners[k], x[lo : lo + batch]) for lo in starts[k :: len(runners)]],
                             range(len(runners)))
            done = list(parts)
            return np.concatenate([done[i % len(runners)][i // len(runners)] for i in range(len(starts))])

        return run

    if kind == "openvino":
        import openvino as ov

        core = ov.Core()
        hint = "LATENCY" if mode == "latency" else "THROUGHPUT"
        compiled = core.compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                    "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": hint})
        streams = compiled.get_property("NUM_STREAMS")
        config = f"openvino {ov.__version__}, {torch.get_num_threads()} threads, {streams} stream(s), {hint}"
        if mode == "latency":
            request = compiled.create_infer_request()

            def run(images):
                x = e.preprocess(images).numpy()
                return np.concatenate([np.array(request.infer({0: x[lo : lo + 64]})[compiled.output(0)])
                                       for lo in range(0, len(x), 64)])

            return run, config
        queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        out: dict = {}
        queue.set_callback(lambda request, i: out.__setitem__(i, np.array(request.get_output_tensor(0).data)))

        def run_queue(images):
            x = e.preprocess(images).numpy()
            out.clear()
            for i, lo in enumerate(range(0, len(x), 16)):
                queue.start_async({0: x[lo : lo + 16]}, i)
            queue.wait_all()
            return np.concatenate([out[i] for i in range(len(out))])

        return run_queue, config
    if kind == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        sessions = [ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]) for _ in range(2)]
        config = f"onnxruntime {ort.__version__}, 2 sessions x 1 thread"
        return halves(lambda s, x: s.run(None, {"images": x.numpy()})[0], sessions, 32), config
    torch.set_num_threads(1)  # both threads' ops run single-threaded
    example = e.preprocess(np.zeros((32, 96, 96, 3), np.uint8))
    graphs = [calibrate.make_runner(e.net, "optimized", torch.bfloat16, e.device, example) for _ in range(2)]

    def run_graph(graph, x):
        torch.set_num_threads(1)
        with torch.inference_mode():
            return graph(x).float().numpy()

    return halves(run_graph, graphs, 32), f"torch {torch.__version__}, 2 threads x 1, optimized-bf16"


def _config(e) -> str:
    """What ran: the library and its version, threads, and how lookalike chose to run it."""
    import torch

    threads = f"{torch.get_num_threads()} threads"
    runtime = e.choice.mode if e.choice.mode in ("onnxruntime", "openvino") else "torch"
    if runtime == "onnxruntime":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}, {threads}, {e.choice.variant}"
    if runtime == "openvino":
        import openvino

        return f"openvino {openvino.__version__}, {threads}, {threads.split()[0]} streams, {e.choice.variant}"
    compiled = ", torch.compile" if e.compile is True else ""
    return f"torch {torch.__version__}, {threads}, {e.choice.variant}{compiled}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default="docs/bench/embed.json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.n)))
        return
    from lookalike.bench import provenance

    origin = provenance(["python", "benchmarks/embed_speed.py", *sys.argv[1:]])
    best: dict[str, dict] = {}
    for rep in range(args.repeats):
        for v in args.variants.split(","):
            proc = subprocess.run([sys.executable, __file__, "--worker", v, "--n", str(args.n)],
                                  capture_output=True, text=True)
            if proc.returncode:
                print(f"{v}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"[{rep + 1}/{args.repeats}] {v}: {rec['images_per_s']:.1f} images/s", file=sys.stderr)
            if v not in best or rec["images_per_s"] > best[v]["images_per_s"]:
                best[v] = rec
    for rec in best.values():
        base = baseline(rec["variant"], best)
        rec["baseline"] = base["variant"] if base else None
        rec["vs_baseline"] = rec["images_per_s"] / base["images_per_s"] if base else None
        rec["description"] = VARIANTS[rec["variant"]]
    from lookalike.bench import libraries, machine
    from lookalike.bench.provenance import finish

    result = {"machine": machine(), "libraries": libraries(), "provenance": finish(origin), "n": args.n,
              "repeats": args.repeats, "results": list(best.values())}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{'variant':<42} {'images/s':>9} {'vs baseline':>12}  baseline")
    for rec in best.values():
        ratio = f"{rec['vs_baseline']:.2f}x" if rec["vs_baseline"] else "-"
        print(f"{rec['variant']:<42} {rec['images_per_s']:>9.1f} {ratio:>12}  {rec['baseline']}")


def baseline(variant: str, best: dict[str, dict]) -> dict | None:
    """The row a variant is compared with: the same network. ResNet-50: Keras at its best
    (with or without XLA, whichever ran faster); EfficientNet-Lite0: lookalike's eager fp32."""
    if "resnet50" in variant:
        keras = [best[v] for v in ("keras-resnet50-fp32", "keras-resnet50-xla") if v in best]
        return max(keras, key=lambda r: r["images_per_s"]) if keras else None
    return best.get("lookalike-efficientnet_lite0-eager-fp32")


if __name__ == "__main__":
    main()
