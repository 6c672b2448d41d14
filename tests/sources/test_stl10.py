import numpy as np
import pytest

from lookalike import read_stl10
from lookalike.errors import SourceError
from lookalike.sources import STL10Source, open_source
from lookalike.sources.stl10 import RECORD_BYTES
from tests.conftest import stl10_pattern, write_stl10


def test_reader_transposes_column_major_records(tmp_path):
    expected = stl10_pattern(5)
    path = write_stl10(tmp_path / "unlabeled_X.bin", expected)
    images = read_stl10(path)
    assert images.shape == (5, 96, 96, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, expected)
    # one record by hand: byte at (c, x, y) of record 2 is pixel (y, x, c)
    raw = np.fromfile(path, dtype=np.uint8)[2 * RECORD_BYTES : 3 * RECORD_BYTES]
    assert raw[1 * 96 * 96 + 10 * 96 + 4] == images[2, 4, 10, 1]


def test_reader_is_memory_mapped(tmp_path):
    path = write_stl10(tmp_path / "train_X.bin", stl10_pattern(3))
    images = read_stl10(path)
    assert isinstance(images.base, np.memmap) or isinstance(images, np.memmap)
    assert not images.flags.writeable


def test_wrong_size_names_file_and_size(tmp_path):
    path = tmp_path / "unlabeled_X.bin"
    path.write_bytes(b"\0" * (RECORD_BYTES + 5))
    with pytest.raises(SourceError, match=rf"unlabeled_X.bin: size {RECORD_BYTES + 5} bytes is not a multiple"):
        read_stl10(path)


def test_labels_and_source(tmp_path):
    write_stl10(tmp_path / "stl10_binary" / "train_X.bin", stl10_pattern(4))
    np.array([1, 2, 10, 3], dtype=np.uint8).tofile(tmp_path / "stl10_binary" / "train_y.bin")
    src = open_source(f"stl10:{tmp_path}")
    assert isinstance(src, STL10Source) and len(src) == 4
    assert src.ids[2] == "train/2" and src.label(2) == "truck" and src.label(0) == "airplane"
    np.testing.assert_array_equal(src.read([3, 1]), stl10_pattern(4)[[3, 1]])
    batches = list(src.batches(3))
    assert [b.start for b in batches] == [0, 3] and batches[1].images.shape == (1, 96, 96, 3)


def test_missing_stl10_says_how_to_get_it(tmp_path):
    with pytest.raises(SourceError, match="lookalike fetch stl10"):
        STL10Source(tmp_path)
