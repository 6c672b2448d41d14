"""ONNX Runtime and OpenVINO run lookalike's own network: the same vectors (cosine >= 0.999 to
the torch path, the same neighbours), exported once to the cache folder, one line when the
package is missing, and an index built with one runtime is searched with another."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.cli import main
from lookalike.errors import ModelError
from lookalike.features import Embedder
from lookalike.features.runtimes import check_runtime
from lookalike.index import Index
from lookalike.sources import SampleSource, open_source


@pytest.fixture(scope="module")
def images():
    return SampleSource(40, seed=2).images


@pytest.fixture(scope="module")
def torch_features(images):
    return Embedder(progress=False, precision="fp32").embed_array(images)


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _neighbours(f, k=3):
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    s = f @ f.T
    np.fill_diagonal(s, -np.inf)
    return np.sort(np.argsort(-s, 1)[:, :k], 1)


def test_onnxruntime_gives_the_torch_features_and_neighbours(images, torch_features, tmp_path, monkeypatch):
    runtime = "onnxruntime"
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    e = Embedder(progress=False, runtime=runtime, batch_size=16)
    got = e.embed_array(images)
    assert got.shape == torch_features.shape and got.dtype == np.float32
    assert _cos(got, torch_features).min() >= 0.999
    np.testing.assert_array_equal(_neighbours(got), _neighbours(torch_features))
    assert e.explain().startswith(f"{runtime}-") and e.choice.cosines.get(e.choice.variant, 1) >= 0.999
    # an execution choice, like the precision: what identifies the vectors is unchanged
    assert e.config() == Embedder(progress=False, precision="fp32", fast=False).config()


def test_openvino_gives_the_torch_features_and_neighbours(images, torch_features, tmp_path):
    # in a process of its own, as a user runs it: OpenVINO, once loaded, breaks pytest's
    # capture of stderr for a server started later in the same process
    np.save(tmp_path / "photos.npy", images)
    env = {**os.environ, "LOOKALIKE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "lookalike", "-q", "embed", str(tmp_path / "photos.npy"),
                           "--runtime", "openvino", "--out", str(tmp_path / "ov.npy")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "ov.npy")
    assert got.shape == torch_features.shape and _cos(got, torch_features).min() >= 0.999
    np.testing.assert_array_equal(_neighbours(got), _neighbours(torch_features))
    assert list((tmp_path / "cache" / "onnx").glob("efficientnet_lite0-max+mid5-gem-1+8-gem-1.25-s96-*.onnx"))


def test_the_network_is_exported_once_into_the_cache_folder(tmp_path, monkeypatch, images):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    Embedder(progress=False, runtime="onnxruntime").embed_array(images[:2])
    (exported,) = (tmp_path / "onnx").glob("*.onnx")
    assert exported.name.startswith("efficientnet_lite0-max+mid5-gem-1+8-gem-1.25-s96-")  # with its mid-level taps
    stamp = exported.stat().st_mtime_ns
    Embedder(progress=False, runtime="onnxruntime").embed_array(images[:2])
    assert list((tmp_path / "onnx").glob("*.onnx")) == [exported] and exported.stat().st_mtime_ns == stamp
    Embedder(progress=False, runtime="onnxruntime", pooling="avg").embed_array(images[:2])
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2  # another network, another file


def test_a_missing_package_or_a_wrong_choice_is_one_line(monkeypatch, tmp_path, capsys):
    with pytest.raises(ModelError, match="runtime onnxruntime runs this network in fp32 only"):
        Embedder(progress=False, runtime="onnxruntime", precision="bf16")
    with pytest.raises(ModelError, match="--compile is torch.compile: it does not apply to runtime openvino"):
        Embedder(progress=False, runtime="openvino", compile=True)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ModelError, match=r"runtime onnxruntime needs the package onnxruntime: "
                                         r"pip install 'lookalike\[onnx\]'"):
        Embedder(progress=False, runtime="onnxruntime")
    assert main(["-q", "embed", "sample:4", "--runtime", "onnxruntime", "--out", str(tmp_path / "f.npy")]) \
        == ModelError.exit_code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runtime onnxruntime needs the package onnxruntime" in err[0]
    assert not (tmp_path / "f.npy").exists()
    with pytest.raises(ModelError, match="unknown runtime 'tensorrt'; use auto, torch, onnxruntime, openvino"):
        Embedder(progress=False, runtime="tensorrt")


def test_auto_is_the_default_and_means_torch_where_only_torch_runs(monkeypatch, images):
    assert Embedder(progress=False).runtime == "auto"
    assert Embedder(progress=False, compile=True).runtime == "torch"  # torch.compile: PyTorch's alone
    assert check_runtime("auto", torch.device("cuda"), "auto", "auto") == "torch"
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    e = Embedder(progress=False)  # neither installed: no error, PyTorch's variants only
    assert e.embed_array(images[:2]).shape == (2, e.dim)  # a small job: nothing measured
    assert e.runtime == "auto" and e.choice.mode in ("eager", "frozen", "optimized")


def test_an_index_built_with_torch_is_searched_with_another_runtime(tmp_path, images, monkeypatch, capsys):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    np.save(tmp_path / "photos.npy", images[:24])
    index = Index.build(open_source(str(tmp_path / "photos.npy")), tmp_path / "idx", progress=False,
                        thumbnails=False, runtime="torch")
    # how the CNN ran: measured earlier in this process, or not measured for 24 images (the
    # default, runtime auto, may have measured another runtime faster earlier in this process)
    assert index.info()["embedded_with"].split(" (")[0].split(" by ")[0] in ("eager-fp32", "frozen-fp32",
                                                                             "optimized-fp32")
    queries = [images[i] for i in (0, 5, 30)]
    by_torch = index.search_images(queries, 3)
    by_openvino = index.search_images(queries, 3, embedder=index.embedder(progress=False, runtime="onnxruntime"))
    assert [[n.id for n in r.neighbours] for r in by_torch] == [[n.id for n in r.neighbours] for r in by_openvino]
    np.testing.assert_allclose([[n.distance for n in r.neighbours] for r in by_torch],
                               [[n.distance for n in r.neighbours] for r in by_openvino], atol=2e-3)
    Image.fromarray(images[30]).save(tmp_path / "q.png")
    env = {**os.environ, "LOOKALIKE_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "lookalike", "-q", "search", str(tmp_path / "idx"),
                           str(tmp_path / "q.png"), "-k", "3", "--runtime", "openvino", "--json"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [n["id"] for n in json.loads(done.stdout)[0]["neighbours"]] == [n.id for n in by_torch[2].neighbours]
