"""Pieces: a source cut into small picklable descriptions that another process reopens and
reads on its own, giving exactly the images of a local read."""

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import SourceError
from lookalike.sources import ArraySource, Piece, open_piece, open_source, split
from lookalike.sources.pieces import bounds
from tests.conftest import stl10_pattern, write_stl10


@pytest.fixture(scope="module")
def pool():
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


@pytest.fixture
def specs(tmp_path):
    """One spec of each kind of source, with labels where the kind has them."""
    np.save(tmp_path / "imgs.npy", np.random.default_rng(0).integers(0, 255, (23, 20, 24, 3), dtype=np.uint8))
    write_stl10(tmp_path / "stl" / "train_X.bin", stl10_pattern(17))
    (np.arange(17) % 10 + 1).astype(np.uint8).tofile(tmp_path / "stl" / "train_y.bin")
    for i in range(19):
        folder = tmp_path / "photos" / ("cats" if i % 3 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        y, x = np.mgrid[:30 + i, :40]
        Image.fromarray(np.stack([x * i % 256, y * 5 % 256, (x + y + i) % 256], -1).astype(np.uint8)).save(
            folder / f"{i:02d}.{'png' if i % 2 else 'jpg'}")
    (tmp_path / "photos" / "cats" / "bad.jpg").write_bytes(b"nope")
    return {"sample": "sample:37:4", "npy": str(tmp_path / "imgs.npy"), "stl10": f"stl10:{tmp_path / 'stl'}",
            "folder": str(tmp_path / "photos")}


def _check(pool, source, pieces):
    assert [(p.start, p.stop) for p in pieces][0][0] == 0 and pieces[-1].stop == len(source)
    assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:]))
    images = list(pool.map(Piece.read, pieces))  # decoded in the other processes
    opened = list(pool.map(open_piece, pieces))  # what they saw: ids and labels
    np.testing.assert_array_equal(np.concatenate(images), source.read(np.arange(len(source))))
    assert [i for o in opened for i in o.ids] == source.ids
    assert [o.label(j) for o in opened for j in range(len(o))] == [source.label(i) for i in range(len(source))]


@pytest.mark.parametrize("kind", ["sample", "npy", "stl10", "folder"])
def test_pieces_read_in_other_processes_match_a_local_read(pool, specs, kind):
    source = open_source(specs[kind], size=32, progress=False)
    pieces = source.pieces(3)
    assert len(pieces) == 3 and all(len(pickle.dumps(p)) < 1500 for p in pieces)
    _check(pool, source, pieces)
    _check(pool, source, source.pieces(chunk=5))


@pytest.mark.parametrize("kind", ["sample", "folder"])
def test_pieces_of_a_split(pool, specs, kind):
    source = open_source(specs[kind], size=32, progress=False)
    index_set, query_set = split(source, 0.3, seed=1)
    for part in (index_set, query_set):
        _check(pool, part, part.pieces(chunk=4))


def test_a_folder_piece_does_not_list_the_folder_and_fails_on_its_own(specs, tmp_path):
    source = open_source(specs["folder"], size=32, progress=False)
    piece = source.piece(4, 9)
    assert piece.files == tuple(source.ids[4:9]) and piece.positions is None
    (tmp_path / "photos" / "dogs" / "extra.png").write_bytes((tmp_path / "photos" / "cats" / "01.png").read_bytes())
    Path(source.location(6)).write_bytes(b"broken since")
    opened = piece.open()
    assert opened.ids == source.ids[4:9]  # the new file shifts nothing
    images, failed = opened.read_available(np.arange(5))
    assert list(failed) == [2] and len(images) == 4
    np.testing.assert_array_equal(images[0], source.read([4])[0])
    # the piece's own read_available (the README's example): the file that fails costs itself only
    images2, failed2 = piece.read_available()
    np.testing.assert_array_equal(images2, images)
    assert list(failed2) == [2] and failed2[2].path.endswith(source.ids[6]) and failed2[2].reason == failed[2].reason
    with pytest.raises(SourceError, match="not an image file"):
        piece.read()


def test_a_changed_source_or_an_in_memory_one_is_refused(specs, tmp_path):
    source = open_source(specs["npy"])
    piece = source.piece(0, 5)
    np.save(tmp_path / "imgs.npy", np.zeros((4, 20, 24, 3), np.uint8))
    with pytest.raises(SourceError, match="holds 4 images, 23 when it was cut into pieces"):
        piece.open()
    with pytest.raises(SourceError, match="in-memory image set cannot be cut into pieces"):
        ArraySource(np.zeros((3, 8, 8, 3), np.uint8)).pieces(2)
    with pytest.raises(SourceError, match="not within its 23 images"):
        source.piece(20, 24)


def test_bounds():
    assert bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert bounds(2, 5) == [(0, 1), (1, 2)]
    assert bounds(10, chunk=4) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(SourceError, match="not both"):
        bounds(10, 2, 3)
    with pytest.raises(SourceError, match="at least 1"):
        bounds(10, 0)
