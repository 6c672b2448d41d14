"""The Embedder's fast path chosen by measuring: only variants within cosine 0.999 of eager
fp32 can be chosen; the cache follows the machine; a damaged cache is measured anew."""

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from lookalike.features import Embedder
from lookalike.features import calibrate as C

SIZE = 32


class Tiny(nn.Module):
    """A small real CNN: features that bf16 keeps within cosine 0.999."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).amax((2, 3))


class Drifting(Tiny):
    """Features that bf16 rounds away: a large offset added and taken off again."""

    def forward(self, x):
        return (super().forward(x) * 64 + 10_000) - 10_000


def _pre(images):
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    monkeypatch.delenv("LOOKALIKE_CALIBRATION", raising=False)
    C.forget()
    yield tmp_path / C.FILE
    C.forget()


@pytest.fixture
def measured(monkeypatch):
    """Counts the calibrations that run (each one measures)."""
    calls = []
    real = C.calibrate

    def counting(*args, **kwargs):
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(C, "calibrate", counting)
    return calls


def _choose(net, key="cpu/tiny/random:seed0/max/s32/b8", images=None):
    cpu = torch.device("cpu")
    return C.choose(C.builder(net, cpu), device=cpu, fast=True, precision="auto", key=key, input_size=SIZE,
                    batch_size=64, preprocess=_pre, images=images)


def test_only_variants_within_cosine_0999_are_timed_or_chosen(cache):
    choice = _choose(Drifting().eval())
    assert set(choice.excluded) == {"optimized-bf16", "frozen-bf16", "eager-bf16"}
    assert all("cosine" in why for why in choice.excluded.values())
    assert choice.cosines["eager-bf16"] < C.COSINE  # measured; the bf16 graphs then not even built
    assert choice.excluded["frozen-bf16"].startswith("eager bf16 already at cosine")
    assert set(choice.seconds) == {"optimized-fp32", "frozen-fp32", "eager-fp32"}  # never timed, never chosen
    assert choice.variant in choice.seconds and choice.cosines[choice.variant] >= C.COSINE
    assert "not candidates: eager-bf16 (cosine" in choice.explain()

    kept = _choose(Tiny().eval(), key="cpu/tiny-ok/random:seed0/max/s32/b8")
    assert set(kept.seconds) == {f"{m}-{p}" for m in ("eager", "frozen", "optimized") for p in ("fp32", "bf16")}
    assert min(kept.cosines.values()) >= C.COSINE and not kept.excluded


def test_a_cached_choice_outside_cosine_0999_is_not_taken(cache, measured):
    first = _choose(Tiny().eval())
    data = json.loads(cache.read_text())
    (memo,) = data["classes"]
    data["classes"][memo].update(variant="eager-bf16", cosines={**first.cosines, "eager-bf16": 0.98})
    cache.write_text(json.dumps(data))  # a file edited by hand, or written by a bug
    C.forget()
    assert _choose(Tiny().eval()).cosines["eager-bf16"] >= C.COSINE  # measured again
    assert len(measured) == 2


def test_the_real_default_model_keeps_fp32_where_bf16_drifts(cache):
    # efficientnet_lite0 with its ImageNet weights: bf16 reaches cosine 0.99 (eager; frozen 0.98)
    e = Embedder(progress=False, fast=False)
    e.calibrate()
    assert e.choice.variant == "eager-fp32" and e.dtype == torch.float32
    assert set(e.choice.excluded) == {"eager-bf16"} and e.choice.cosines["eager-bf16"] < C.COSINE
    assert e.config()["precision"] == "float32"
    line = e.explain()
    assert line.startswith(f"{e.choice.variant} by calibration ({e.device.type}/efficientnet_lite0/")
    assert "\n" not in line


def test_the_cache_is_used_and_invalidated_by_another_cpu_or_torch(cache, measured, monkeypatch):
    _choose(Tiny().eval())
    assert len(measured) == 1 and cache.is_file()
    C.forget()
    again = _choose(Tiny().eval())  # from the file: nothing measured
    assert len(measured) == 1 and again.runner is None
    # a job that starts from a kept choice says so in a short line, not every measurement again
    assert again.kept and again.brief().startswith(f"{again.variant} (by calibration 20")
    assert "`lookalike calibrate`" in again.brief() and "images/s" not in again.brief()
    assert "images/s" in again.explain()
    real = C.machine
    monkeypatch.setattr(C, "machine", lambda device: {**real(device), "cpu": "Another CPU"})
    C.forget()
    _choose(Tiny().eval())
    assert len(measured) == 2
    assert json.loads(cache.read_text())["machine"]["cpu"] == "Another CPU"  # rewritten for this machine
    monkeypatch.setattr(C, "machine", real)
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    C.forget()
    _choose(Tiny().eval())
    assert len(measured) == 3 and json.loads(cache.read_text())["machine"]["torch"] == "9.9.9"


@pytest.mark.parametrize("damage", ["{not json", "[]", json.dumps({"machine": None}), "corrupt-entry"])
def test_a_damaged_cache_is_ignored_and_rewritten(cache, measured, damage):
    if damage == "corrupt-entry":
        _choose(Tiny().eval())
        data = json.loads(cache.read_text())
        for entry in data["classes"].values():
            entry["seconds"] = {"eager-fp32": "fast"}
        damage = json.dumps(data)
        C.forget()
        measured.clear()
    cache.write_text(damage)
    choice = _choose(Tiny().eval())
    assert len(measured) == 1
    data = json.loads(cache.read_text())
    assert data["machine"] == C.machine(torch.device("cpu"))
    assert [e["variant"] for e in data["classes"].values()] == [choice.variant]


def test_what_the_caller_asks_narrows_the_candidates(cache, measured):
    cpu = torch.device("cpu")
    assert C.candidates(cpu, False, "auto") == ["eager-fp32", "eager-bf16"]
    assert C.candidates(cpu, True, "fp32") == ["optimized-fp32", "frozen-fp32", "eager-fp32"]
    assert C.candidates(cpu, True, "auto", "openvino") == ["openvino-fp32", "openvino-bf16"]
    assert C.candidates(cpu, True, "auto", "onnxruntime") == ["onnxruntime-fp32"]
    e = Embedder(progress=False, fast=False, precision="fp32")
    assert e.choice.variant == "eager-fp32" and e.explain().startswith("eager-fp32 (asked for)")
    assert measured == []  # one candidate: nothing to measure


def test_the_chosen_runner_gives_the_reference_features(cache):
    choice = _choose(Tiny().eval())
    x = _pre(C.calibration_images(SIZE))
    with torch.inference_mode():
        ref = Tiny().eval()(x).numpy()
        got = choice.runner(x).float().numpy()
    assert C.least_cosine(got, ref) >= C.COSINE
    assert np.isfinite(got).all()


def test_a_small_job_is_not_measured_a_large_one_is(cache, measured):
    small = _choose(Tiny().eval(), images=C.MEASURE_FROM - 1)
    assert small.variant == "eager-fp32" and small.reason.startswith("not measured: a job of 255 image(s)")
    assert measured == [] and not cache.exists()
    large = _choose(Tiny().eval(), images=C.MEASURE_FROM)
    assert len(measured) == 1 and large.seconds
    assert _choose(Tiny().eval(), images=1) is large  # once measured, small jobs take the choice too


# -- runtime 'auto': ONNX Runtime and OpenVINO are candidates where installed ------------------
def _choose_auto(net, key="cpu/tiny/random:seed0/max/s32/b8", precision="auto"):
    cpu = torch.device("cpu")
    return C.choose(C.builder(net, cpu, name=key.split("/s")[0].split("/", 1)[1]), device=cpu, fast=True,
                    precision=precision, key=key, input_size=SIZE, batch_size=64, preprocess=_pre, runtime="auto")


def test_auto_adds_the_installed_runtimes_and_a_missing_one_is_no_candidate(monkeypatch):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    cpu = torch.device("cpu")
    torch_only = C.candidates(cpu, True, "auto")
    assert C.candidates(cpu, True, "auto", "auto") == [*torch_only, "openvino-fp32", "openvino-bf16",
                                                       "onnxruntime-fp32"]
    assert C.candidates(cpu, True, "bf16", "auto") == [*C.candidates(cpu, True, "bf16"), "openvino-bf16"]
    assert C.candidates(cpu, False, "auto", "auto") == ["eager-fp32", "eager-bf16"]  # --no-fast: eager only
    assert C.candidates(torch.device("cuda"), True, "auto", "auto") == C.candidates(torch.device("cuda"), True,
                                                                                    "auto")
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as if not installed
    assert C.candidates(cpu, True, "auto", "auto") == [*torch_only, "onnxruntime-fp32"]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert C.candidates(cpu, True, "auto", "auto") == torch_only
    assert Embedder(progress=False).runtime == "auto"  # and building one does not fail for it


def test_auto_chooses_only_among_runtimes_within_cosine_0999(cache, measured):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    for net, key in ((Drifting().eval(), "cpu/drift/random:seed0/max/s32/b8"), (Tiny().eval(), None)):
        choice = _choose_auto(net, **({"key": key} if key else {}))
        assert set(choice.seconds) | set(choice.excluded) == set(C.candidates(torch.device("cpu"), True, "auto",
                                                                              "auto"))
        assert {"openvino-fp32", "onnxruntime-fp32"} <= set(choice.seconds)  # timed beside PyTorch's
        assert all(choice.cosines[n] >= C.COSINE for n in choice.seconds)  # only exact-enough ones timed
        for name, why in choice.excluded.items():  # left out for drifting: measured so, or eager bf16 did
            assert choice.cosines.get(name, choice.cosines.get("eager-bf16")) < C.COSINE, (name, why)
        assert choice.variant in choice.seconds and choice.runner is not None
        x = _pre(C.calibration_images(SIZE))
        with torch.inference_mode():
            assert C.least_cosine(choice.runner(x).float().numpy(), net(x).numpy()) >= C.COSINE
    assert len(measured) == 2 and cache.is_file()


def test_another_version_of_a_runtime_is_measured_anew(cache, measured, monkeypatch):
    ov = pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    _choose_auto(Tiny().eval())
    C.forget()
    _choose_auto(Tiny().eval())
    assert len(measured) == 1  # from the file
    monkeypatch.setattr(ov, "__version__", "0.0.0-another")
    C.forget()
    _choose_auto(Tiny().eval())
    assert len(measured) == 2
    assert any("openvino 0.0.0-another" in memo for memo in json.loads(cache.read_text())["classes"])


def test_openvino_streams_give_the_same_features_for_any_batch_and_thread(cache):
    pytest.importorskip("openvino")
    from concurrent.futures import ThreadPoolExecutor

    net = Tiny().eval()
    build = C.builder(net, torch.device("cpu"), name="tiny/random:seed0/max")
    run = build("openvino-fp32", torch.zeros(2, 3, SIZE, SIZE))
    x = _pre(np.random.default_rng(0).integers(0, 256, (17, SIZE, SIZE, 3), dtype=np.uint8))
    with torch.inference_mode():
        ref = net(x).numpy()
    for n in (1, 2, 3, 17):  # fewer images than streams, an odd split, a batch
        got = run(x[:n]).numpy()
        assert got.shape == ref[:n].shape and C.least_cosine(got, ref[:n]) >= 0.99999
    with ThreadPoolExecutor(3) as pool:  # each thread its own infer requests
        outs = list(pool.map(lambda lo: run(x[lo : lo + 5]).numpy(), range(0, 15, 5)))
    assert C.least_cosine(np.concatenate(outs), ref[:15]) >= 0.99999


def test_a_gpu_measures_its_own_batch_size_and_the_frozen_graph():
    """On a GPU a pass of 8 images would time the host's kernel launches: the batch class is
    the batch size itself (up to GPU_IMAGES), and the frozen channels-last graph is a candidate
    (optimize_for_inference, oneDNN's, is not). The CPU keeps its classes and candidates."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert [C.batch_images(b, cuda) for b in (1, 200, 256, 5000)] == [1, 256, 256, C.GPU_IMAGES]
    assert [C.batch_images(b, cpu) for b in (1, 3, 256)] == [1, 4, C.IMAGES]
    assert C.shape_class(cuda, "resnet50", "w", "max", 96, 256).endswith("/s96/b256")
    assert C.candidates(cuda, True, "fp32") == ["frozen-fp32", "eager-fp32"]
    assert C.candidates(cuda, False, "fp32") == ["eager-fp32"]
    assert C.candidates(cpu, True, "fp32") == ["optimized-fp32", "frozen-fp32", "eager-fp32"]


def test_a_batch_larger_than_the_photos_is_timed_on_them_repeated():
    seen = []

    def build(variant, x):
        net = Tiny().eval()
        return lambda x: (seen.append((variant, len(x))), net(x))[1]

    images = np.random.default_rng(0).integers(0, 256, (C.IMAGES, SIZE, SIZE, 3), dtype=np.uint8)
    choice = C.calibrate(build, torch.device("cpu"), ["eager-fp32"], "k", _pre, images, batch=20)
    assert choice.variant == "eager-fp32" and choice.seconds["eager-fp32"] > 0
    timed = [n for v, n in seen if v == "eager-fp32"]
    # the reference and the warm-up on the photos, a warm-up at the timed shape, the timed passes
    assert timed == [C.IMAGES, C.IMAGES] + [20] * (1 + C.REPEATS)
