"""Test-time views: each view's pixels, the aggregate, the embedder that sums them, and the
index that records them so that a query is embedded like its index."""

import sqlite3

import numpy as np
import pytest
import torch

from lookalike.errors import InvalidParameter, ModelError
from lookalike.features import Embedder
from lookalike.features.views import CENTRE, aggregate, parse_views, render
from lookalike.index import Index
from lookalike.sources.sample import SampleSource


def test_parse_views_canonical_and_refusals():
    assert parse_views("full+centre") == "full+centre"
    assert parse_views(["full", "mirror", "full"]) == "full+mirror"
    assert parse_views(" full + grey ") == "full+grey"
    with pytest.raises(InvalidParameter, match="unknown view 'blur'; known views: full, centre, mirror, grey"):
        parse_views("full+blur")
    with pytest.raises(InvalidParameter, match="give view names joined by"):
        parse_views("full++centre")


def test_each_view_pixels():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10) % 256
    assert torch.equal(render(x, "full"), x)
    mirrored = render(x, "mirror")
    assert torch.equal(mirrored[..., 0], x[..., -1]) and torch.equal(render(mirrored, "mirror"), x)
    grey = render(x, "grey")
    assert grey.shape == x.shape and torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert torch.allclose(grey[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    # the centre view sees only the centre: a frame around a constant centre does not show
    framed = torch.zeros(1, 3, 20, 20)
    framed[..., 3:17, 3:17] = 200.0
    assert round(20 * CENTRE) <= 14
    centre = render(framed, "centre")
    assert centre.shape == framed.shape and torch.allclose(centre, torch.full_like(centre, 200.0))


def test_aggregate_is_the_normalised_sum_of_normalised_parts():
    a, b = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 10.0]])
    expected = torch.tensor([[0.6, 1.8]]) / torch.tensor([[0.6, 1.8]]).norm()
    assert torch.allclose(aggregate([a, b]), expected)


@pytest.fixture(scope="module")
def images():
    return SampleSource(6, seed=3, size=64).read(range(6))


def test_views_embedder_shapes_determinism_and_mirror_invariance(images):
    single = Embedder(input_size=64, views="full", mid="none", fast=False, progress=False)
    views = Embedder(input_size=64, views="full+mirror+centre", fast=False, progress=False)
    assert views.config()["views"] == "full+mirror+centre" and single.config()["views"] == "full"
    a = views.embed_array(images)
    assert a.shape == (6, 1472) and a.dtype == np.float32  # the model's own mid-level features included
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(a, views.embed_array(images))  # deterministic
    # with mirror and full summed, a mirrored image has the same vector
    mirror = Embedder(input_size=64, views="full+mirror", fast=False, progress=False)
    np.testing.assert_allclose(mirror.embed_array(images[:, :, ::-1].copy()), mirror.embed_array(images), atol=1e-5)
    # the single view is the network's own vector, not normalised (how indexes always were)
    assert not np.allclose(np.linalg.norm(single.embed_array(images), axis=1), 1)
    # the traced graph gives the same vectors as eager PyTorch
    fast = Embedder(input_size=64, views="full+mirror+centre", precision="fp32", progress=False)
    np.testing.assert_allclose(fast.embed_array(images), a, atol=1e-4)


def test_index_records_its_views_and_queries_use_them(tmp_path):
    source = SampleSource(30, seed=7, size=64)
    index = Index.build(source, tmp_path / "ix", views="full+centre", input_size=64, fast=False,
                        thumbnails=False, progress=False)
    assert index.manifest["views"] == "full+centre"
    reopened = Index(tmp_path / "ix")
    embedder = reopened.embedder(progress=False, fast=False)
    assert embedder.views == "full+centre"
    # a planted copy: one of the indexed images, given as pixels, finds itself first
    found = reopened.search_images([source.read([11])[0]], k=3, embedder=embedder)[0]
    assert found.error is None and found.neighbours[0].id == 11
    assert found.neighbours[0].distance == pytest.approx(0, abs=1e-4)


def test_an_index_without_recorded_views_is_searched_with_the_single_view(tmp_path):
    source = SampleSource(12, seed=2, size=64)
    Index.build(source, tmp_path / "old", views="full", input_size=64, fast=False, thumbnails=False,
                progress=False)
    with sqlite3.connect(tmp_path / "old" / "meta.sqlite") as db:  # as an index built before views
        db.execute("DELETE FROM manifest WHERE key='views'")
    old = Index(tmp_path / "old")
    assert "views" not in old.manifest
    embedder = old.embedder(progress=False, fast=False)
    assert embedder.views == "full"
    np.testing.assert_allclose(embedder.embed_array(source.read([4])),
                               np.asarray(old.store.vectors()[4:5]), rtol=1e-4, atol=1e-4)


def test_the_feature_map_itself_is_one_view():
    assert Embedder(pooling="none", input_size=64, fast=False, progress=False).views == "full"
    with pytest.raises(ModelError, match="views full\\+centre need a pooling"):
        Embedder(pooling="none", views="full+centre", input_size=64, fast=False, progress=False)
