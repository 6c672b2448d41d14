"""Mid-level features: an intermediate block's pooled output joined to the final vector in the
one forward pass, the same from every runner (OpenVINO: tests/features/test_runtimes.py runs
the default, whose mid-level features are GeM-pooled, through it), recorded in the index so that a query is
embedded like its index, and an index without it searched as it was built."""

import json
import sqlite3

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lookalike.cli import main
from lookalike.dask.embed import worker_embedder
from lookalike.errors import InvalidParameter, ModelError
from lookalike.features import Embedder
from lookalike.features.mid import Tap, mid_text, parse_mid
from lookalike.index import Index
from lookalike.quality import parse_config
from lookalike.sources.sample import SampleSource

MID = "10:max:0.5"  # block 10 of EfficientNet-Lite0: 112 channels


@pytest.fixture(scope="module")
def images():
    return SampleSource(6, seed=5, size=64).read(range(6))


@pytest.fixture(scope="module")
def eager():
    return Embedder(mid=MID, views="full", input_size=64, precision="fp32", fast=False, progress=False)


def test_parse_mid_canonical_and_refusals():
    assert parse_mid("none") == () and parse_mid(None) == () and mid_text(()) == "none"
    assert parse_mid(" 10 : max : 0.50 ") == (Tap(10, "max", 0.5),)
    assert mid_text(parse_mid("8:gem:0.3+12:max:1")) == "8:gem:0.3+12:max:1"
    for bad, words in [("10:max", "give BLOCK:POOLING:WEIGHT"), ("x:max:1", "block 'x' is not a whole number"),
                       ("10:median:1", "unknown pooling 'median'"), ("10:max:0", "weight '0' must be a positive"),
                       ("10:max:nan", "must be a positive"), ("10:max:1+10:max:2", "given twice")]:
        with pytest.raises(InvalidParameter, match=words):
            parse_mid(bad)
    with pytest.raises(InvalidParameter, match="mid-level block 16 is out of range: efficientnet_lite0 has blocks 0 "
                                               "to 15"):
        Embedder(mid="16:max:1", fast=False, progress=False)
    with pytest.raises(ModelError, match="need a pooling"):
        Embedder(pooling="none", mid=MID, fast=False, progress=False)
    assert Embedder(pooling="none", input_size=64, fast=False, progress=False).mid == "none"


def test_the_vector_is_the_final_one_and_block_10s_normalised_and_weighted(images, eager):
    got = eager.embed_array(images)
    assert eager.dim == 1280 + 112 and got.shape == (6, 1392) and got.dtype == np.float32
    assert eager.config()["mid"] == MID and eager.config()["dim"] == 1392
    np.testing.assert_array_equal(got, eager.embed_array(images))  # deterministic
    # each part as the network's own modules give it: block 10's output seen by a hook
    seen = []
    hook = eager.net.trunk.net._blocks[10].register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.inference_mode():
            final = eager.net.trunk(eager.preprocess(images))
    finally:
        hook.remove()
    expect_final = F.normalize(torch.amax(final, dim=(2, 3)), dim=1).numpy()
    expect_mid = 0.5 * F.normalize(torch.amax(seen[0], dim=(2, 3)), dim=1).numpy()
    assert seen[0].shape[1:] == (112, 4, 4)  # stride 16 at 64 pixels
    np.testing.assert_allclose(got[:, :1280], expect_final, atol=1e-5)
    np.testing.assert_allclose(got[:, 1280:], expect_mid, atol=1e-5)
    # without mid-level features the vector is the network's own, unnormalised, as before
    plain = Embedder(mid="none", views="full", input_size=64, precision="fp32", fast=False,
                     progress=False).embed_array(images)
    np.testing.assert_allclose(plain, torch.amax(final, dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-4)


def test_views_sum_the_joined_descriptors(images, eager):
    both = Embedder(mid=MID, views="full+centre", input_size=64, precision="fp32", fast=False, progress=False)
    got = both.embed_array(images)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    centre = Embedder(mid=MID, views="centre", input_size=64, precision="fp32", fast=False, progress=False)
    parts = [F.normalize(torch.from_numpy(e.embed_array(images)), dim=1) for e in (eager, centre)]
    np.testing.assert_allclose(got, F.normalize(parts[0] + parts[1], dim=1).numpy(), atol=1e-5)


def test_graphs_give_the_eager_vector(images, eager):
    x = eager.preprocess(images)
    with torch.inference_mode():
        for variant in ("frozen-fp32", "optimized-fp32"):
            run = eager._variant(variant, x[:4])
            np.testing.assert_allclose(run(x).float().numpy(), eager.net(x).numpy(), atol=1e-4)


def test_bf16_keeps_the_layout_and_the_direction(images, eager):
    x = eager.preprocess(images)
    with torch.inference_mode():
        ref = eager.net(x).numpy()
        got = eager._variant("eager-bf16", x[:4])(x).float().numpy()
    assert got.shape == ref.shape
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.98  # bf16 drifts (calibration keeps fp32 for lite0 below 0.999), but not far


def test_onnx_export_outputs_the_same_vector(images, eager, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    e = Embedder(mid=MID, views="full", input_size=64, runtime="onnxruntime", progress=False)
    np.testing.assert_allclose(e.embed_array(images), eager.embed_array(images), atol=1e-4)
    (exported,) = (tmp_path / "onnx").glob("*.onnx")
    assert exported.name.startswith("efficientnet_lite0-max+mid10-max-0.5-s64-")
    Embedder(mid="none", views="full", input_size=64, runtime="onnxruntime", progress=False).embed_array(images[:2])
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2  # another network, another file


def test_index_records_mid_and_queries_use_it(tmp_path):
    source = SampleSource(12, seed=7, size=64)
    index = Index.build(source, tmp_path / "ix", mid=MID, input_size=64, fast=False, thumbnails=False,
                        progress=False)
    assert index.manifest["mid"] == MID and index.manifest["dim"] == 1392
    reopened = Index(tmp_path / "ix")
    assert reopened.info()["mid"] == MID
    embedder = reopened.embedder(progress=False, fast=False)
    assert embedder.mid == MID and embedder.dim == 1392
    found = reopened.search_images([source.read([11])[0]], k=3, embedder=embedder)[0]  # a planted copy
    assert found.error is None and found.neighbours[0].id == 11
    assert found.neighbours[0].distance == pytest.approx(0, abs=1e-4)
    # a Dask worker builds the same embedder from the recipe
    recipe = {"model": embedder.model, "weights": embedder.weights, "pooling": embedder.pooling,
              "views": embedder.views, "mid": embedder.mid, "input_size": 64, "fast": False, "precision": "fp32"}
    assert worker_embedder(recipe, embedder.config()).dim == 1392


def test_an_index_without_recorded_mid_is_searched_as_built(tmp_path):
    source = SampleSource(12, seed=2, size=64)
    Index.build(source, tmp_path / "old", mid="none", views="full+centre", input_size=64, fast=False,
                thumbnails=False, progress=False)
    with sqlite3.connect(tmp_path / "old" / "meta.sqlite") as db:  # as an index built before mid-level features
        db.execute("DELETE FROM manifest WHERE key='mid'")
    old = Index(tmp_path / "old")
    assert "mid" not in old.manifest and old.info()["mid"] == "none"
    embedder = old.embedder(progress=False, fast=False)
    assert embedder.mid == "none" and embedder.dim == 1280
    np.testing.assert_allclose(embedder.embed_array(source.read([4])), np.asarray(old.store.vectors()[4:5]),
                               rtol=1e-4, atol=1e-4)


def test_cli_and_eval_configs(tmp_path, capsys):
    np.save(tmp_path / "x.npy", SampleSource(3, seed=1, size=64).read(range(3)))
    assert main(["-q", "embed", str(tmp_path / "x.npy"), "--mid", "10:gem:0.3+12:max:0.2", "--input-size", "64",
                 "--no-fast", "--out", str(tmp_path / "f.npy")]) == 0
    assert np.load(tmp_path / "f.npy").shape == (3, 1280 + 112 + 192)
    assert json.loads((tmp_path / "f.json").read_text())["mid"] == "10:gem:0.3+12:max:0.2"
    assert main(["-q", "embed", str(tmp_path / "x.npy"), "--mid", "40:max:1", "--out", str(tmp_path / "g.npy")]) == 2
    assert "mid-level block 40 is out of range" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["embed", str(tmp_path / "x.npy"), "--mid", "10:max"])
    assert exit_.value.code == 2
    c = parse_config(f"mid={MID},views=full")
    assert c.mid == MID and c.name.endswith(f"mid={MID}")
    assert parse_config("single").mid == "none" and parse_config("centre").mid == "none"
