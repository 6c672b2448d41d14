import numpy as np
import pytest

from lookalike.errors import SourceError
from lookalike.sources import ArraySource, SampleSource, open_source, split, split_indices


def test_npy_source(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (7, 32, 40, 3), dtype=np.uint8)
    np.save(tmp_path / "imgs.npy", arr)
    src = open_source(tmp_path / "imgs.npy")
    assert isinstance(src, ArraySource) and src.image_shape == (32, 40, 3) and src.ids[6] == "imgs/6"
    np.testing.assert_array_equal(src.read([6, 0]), arr[[6, 0]])


@pytest.mark.parametrize("array, message", [
    (np.zeros((3, 8, 8), np.uint8), r"shape \(3, 8, 8\) is not"),
    (np.zeros((3, 8, 8, 3), np.float32), "dtype float32, expected uint8"),
])
def test_npy_source_rejects_wrong_arrays(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(SourceError, match=message):
        open_source(tmp_path / "bad.npy")


def test_unknown_spec_and_wrong_extension(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source(tmp_path / "nope")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(SourceError, match="x.csv: not an image source"):
        open_source(tmp_path / "x.csv")


def test_sample_set_is_deterministic_and_labelled():
    a, b, c = SampleSource(60, seed=3), SampleSource(60, seed=3), SampleSource(60, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (60, 96, 96, 3) and a.images.dtype == np.uint8
    assert len(a.label_names) >= 15  # photos from scikit-image and scikit-learn
    counts = np.bincount(a.labels, minlength=len(a.label_names))
    assert counts.max() - counts.min() <= 1  # balanced over photos
    assert {"chelsea", "china"} <= set(a.label_names)


def test_split_is_deterministic_9_to_1():
    idx, q = split_indices(1000)
    assert len(idx) == 900 and len(q) == 100 and not set(idx) & set(q)
    np.testing.assert_array_equal(q, split_indices(1000)[1])
    assert not np.array_equal(q, split_indices(1000, seed=1)[1])
    assert len(split_indices(1000, 0.25)[1]) == 250
    with pytest.raises(SourceError, match="between 0 and 1"):
        split_indices(10, 1.5)


def test_split_sources_keep_ids_and_labels():
    src = SampleSource(50)
    index_set, query_set = split(src)
    assert len(index_set) == 45 and len(query_set) == 5
    i = int(query_set.indices[0])
    assert query_set.ids[0] == src.ids[i] and query_set.labels[0] == src.labels[i]
    np.testing.assert_array_equal(query_set.read([0]), src.read([i]))
