"""The evaluation's numbers on small sets where the answer is known: a lightly edited copy
must find its original among distractors, and random weights must do worse."""

import shutil

import numpy as np
import pytest

from lookalike.features import Embedder
from lookalike.quality import Config, evaluate
from lookalike.quality.copies import squares
from lookalike.quality.evaluate import _features
from lookalike.sources import open_source
from lookalike.sources.sample import photo_paths

EDITS = "jpeg15,mirror_bright,grey,crop50+text"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for p in photo_paths()[::4]:  # 5 photos
        shutil.copy(p, folder)
    return folder


@pytest.fixture(scope="module")
def results(photos):
    return evaluate(open_source(photos, progress=False),
                    [Config(input_size=64), Config(input_size=64, weights="none", pooling="max", metric="euclidean")],
                    distractors=open_source("sample:20:1:64"), edits=EDITS, k=5, progress=False)


def test_a_planted_copy_is_found_and_random_weights_do_worse(results):
    pretrained, random = results
    assert pretrained.originals == 5 and pretrained.distractors == 20 and pretrained.k == 5
    assert pretrained.overall.queries == 5 * 4
    assert pretrained.per_edit["jpeg15"].recall_at_1 == 1.0  # the same photo, re-saved: always first
    assert pretrained.overall.recall_at_1 >= 0.8
    assert random.overall.mrr < pretrained.overall.mrr - 0.1
    for e in results:
        s = e.overall
        assert s.recall_at_1 <= s.mrr <= s.recall_at_k <= 1
        per = e.per_edit.values()
        assert s.recall_at_1 == pytest.approx(sum(p.recall_at_1 * p.queries for p in per) / s.queries)
        assert len(e.misses) == round((1 - s.recall_at_1) * s.queries)
        for m in e.misses:
            assert m.edit in EDITS.split(",") and m.found != m.original and m.rank != 1
            if m.pixels is not None:
                assert all(x.shape == (64, 64, 3) and x.dtype == np.uint8 for x in m.pixels)
    assert any(m.found.startswith("distractor ") for e in results for m in e.misses)


def test_poolings_from_one_pass_are_the_networks_own(photos):
    """`evaluate` pools one feature map each way; the result is what the network's own pooling gives."""
    from PIL import Image

    images = squares([Image.open(p).convert("RGB") for p in sorted(photos.iterdir())[:3]], 64, "pad")
    whole = Embedder(pooling="none", input_size=64, fast=False, progress=False)

    class NoBar:
        def update(self, n):
            pass

    pooled = _features(whole, images, ["max", "gem"], NoBar())
    for p in ("max", "gem"):
        direct = Embedder(pooling=p, views="full", mid="none", input_size=64, fast=False,
                          progress=False).embed_array(images)
        np.testing.assert_allclose(pooled[p], direct, rtol=1e-4, atol=1e-5)


def test_originals_of_the_same_pixels_count_as_one(photos, tmp_path):
    """A photo saved twice (once grey, once in RGB: the same pixels) among the originals: a copy
    of one that finds the other has found its original, not missed it, and both are named.
    (Before, twin.png's copies found the lower id first, tied at the same distance: a miss.)"""
    from PIL import Image

    from lookalike.quality.evaluate import evaluate_images, identical_originals

    paths = sorted(photos.iterdir())[:4]
    originals = [Image.open(p).convert("RGB") for p in paths]
    twin = originals[1].convert("L").convert("RGB")  # grey both: the same pixels in two files
    originals[1] = twin
    originals.append(twin.copy())
    names = [p.name for p in paths] + ["twin.png"]
    assert identical_originals(originals).tolist() == [0, 1, 2, 3, 1]
    (e,) = evaluate_images(originals, names, [Config(input_size=64)], edits="jpeg15,grey", k=3, progress=False)
    assert e.identical == [[paths[1].name, "twin.png"]]
    assert e.per_edit["jpeg15"].recall_at_1 == 1.0  # twin.png's copy finds the lower id, its twin: a hit
    assert not any(m.original in (paths[1].name, "twin.png") for m in e.misses)
    assert e.to_dict()["identical"] == [[paths[1].name, "twin.png"]]
