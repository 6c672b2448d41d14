"""The two image grids: one title format whether images come from a source or an index."""

import numpy as np
import pytest
from PIL import Image

from lookalike.index import Index
from lookalike.report import grids
from lookalike.sources import SampleSource


@pytest.fixture
def source_and_index(tmp_path):
    source = SampleSource(20, seed=3)
    config = {"model": "test", "weights": "random:0", "pooling": "max", "input_shape": [96, 96, 3], "dim": 4}
    features = np.random.default_rng(0).random((20, 4), dtype=np.float32)
    return source, Index.from_features(features, source, config, tmp_path / "ix")


def test_one_title_format():
    assert grids.tile_title("sample/00003", "moon") == "sample/00003\nmoon"
    assert grids.tile_title("img.png", None) == grids.tile_title("img.png", "") == "img.png"


def test_tiles_of_a_source_and_of_its_index_agree(source_and_index):
    source, index = source_and_index
    rows = [7, 2, 7]
    s_pixels, s_titles = grids.tiles(source, rows)
    i_pixels, i_titles = grids.tiles(index, rows)
    assert s_titles == i_titles == [f"{source.ids[r]}\n{source.label(r)}" for r in rows]
    np.testing.assert_array_equal(s_pixels, i_pixels)


def test_pick_is_sorted_distinct_and_capped():
    picks = grids.pick(10, 4, seed=1)
    assert list(picks) == sorted(set(picks.tolist())) and len(picks) == 4
    assert list(grids.pick(3, 8)) == [0, 1, 2]
    assert list(grids.pick(100, 5, seed=2)) == list(grids.pick(100, 5, seed=2))


def test_sample_grid_and_neighbour_grid_write_pngs(source_and_index, tmp_path):
    source, index = source_and_index
    out = grids.sample_grid(source, 6, seed=0, out=tmp_path / "s.png")
    assert Image.open(out).size == (880, 480)  # 4 columns x 2 rows
    D, I = index.search_vectors(np.asarray(index.vectors()[[1, 5]]), 3)
    for queries in (source, index):  # queries from a source (the demo) or from the index (`grid`)
        out = grids.neighbour_grid(queries, [1, 5], index, D, I, tmp_path / "g.png")
        assert Image.open(out).size == (840, 460)  # 1 + 3 columns x 2 rows


def test_result_arrays_from_search_results(source_and_index):
    _, index = source_and_index
    results = index.search_ids([0, 4], 2)
    D, I = grids.result_arrays(results)
    assert D.shape == I.shape == (2, 2) and I.dtype == np.int64
    assert I[1].tolist() == [n.id for n in results[1].neighbours]
