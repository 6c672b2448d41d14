import json
import sqlite3

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import BadIndex, InvalidParameter, SearchError
from lookalike.index import Index, IndexStore
from lookalike.sources import SampleSource, open_source


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    index = Index.build(SampleSource(120, seed=5), root / "index", progress=False)
    return index


def test_build_writes_vectors_sqlite_and_manifest(built):
    path = built.path
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "meta.sqlite", "vectors"]
    m = json.loads((path / "manifest.json").read_text())
    for key in ("model", "weights", "preprocessing", "pooling", "dim", "metric", "count", "format_version",
                "input_shape"):
        assert key in m, key
    assert m["count"] == 120 and m["dim"] == 1472 and m["model"] == "efficientnet_lite0"
    vec = built.vectors()
    assert isinstance(vec, np.memmap) and vec.shape == (120, 1472) and vec.dtype == np.float32
    with sqlite3.connect(path / "meta.sqlite") as db:
        row = db.execute("SELECT id, key, source, position, label, added FROM images WHERE id=7").fetchone()
    assert row[0] == 7 and row[1] == "sample/00007" and row[2] == "sample:120:5" and row[3] == 7
    assert row[4] in SampleSource(120, seed=5).label_names and row[5] > 0
    assert not list(path.parent.glob(".index.building"))  # staging removed


def test_search_by_id_excludes_itself_and_finds_same_photo(built):
    results = built.search_ids([0, 5], k=3)
    assert [r.query for r in results] == ["id 0", "id 5"]
    for r, qid in zip(results, [0, 5]):
        assert qid not in [n.id for n in r.neighbours]
        assert [n.rank for n in r.neighbours] == [1, 2, 3]
        assert all(a.distance <= b.distance for a, b in zip(r.neighbours, r.neighbours[1:]))
    labels = [m.label for m in built.images()]
    assert results[0].neighbours[0].label == labels[0]


def test_search_by_image_files_and_a_bad_one(built, tmp_path):
    src = SampleSource(120, seed=5)
    Image.fromarray(src.images[3]).save(tmp_path / "q.png")
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    results = built.search_images([str(tmp_path / "bad.jpg"), str(tmp_path / "q.png")], k=2)
    assert results[0].error and "bad.jpg" in results[0].error and not results[0].neighbours
    assert results[1].error is None and results[1].neighbours[0].id == 3  # finds itself first
    assert results[1].neighbours[0].distance < 1.0


def test_k_and_id_errors(built):
    with pytest.raises(SearchError, match="k=0 is out of range"):
        built.search_ids([1], k=0)
    with pytest.raises(SearchError, match="k=121 is out of range"):
        built.search_ids([1], k=121)
    with pytest.raises(SearchError, match="no image with id 999"):
        built.search_ids([999], k=1)


def test_read_pixels_re_reads_the_originals(built):
    px = built.read_pixels([4, 9])
    np.testing.assert_array_equal(px, SampleSource(120, seed=5).images[[4, 9]])


def test_add_appends_without_rebuild(tmp_path):
    index = Index.build(SampleSource(40, seed=1), tmp_path / "ix", progress=False)
    np.save(tmp_path / "more.npy", SampleSource(10, seed=2).images)
    first = (tmp_path / "ix" / "vectors").iterdir().__next__().name
    assert index.add(open_source(tmp_path / "more.npy"), progress=False) == 10
    again = Index(tmp_path / "ix")
    assert again.count == 50 and again.vectors().shape == (50, 1472)
    assert first in {p.name for p in (tmp_path / "ix" / "vectors").iterdir()}  # old segment untouched
    assert again.images([45])[0].key == "more/5"
    r = again.search_ids([45], k=1)
    assert r[0].neighbours[0].id != 45


def test_different_model_is_refused_and_changes_nothing(tmp_path):
    index = Index.build(SampleSource(20, seed=1), tmp_path / "ix", progress=False)
    before = (tmp_path / "ix" / "meta.sqlite").read_bytes()
    with pytest.raises(BadIndex, match="built with model efficientnet_lite0, not resnet50"):
        index.add(SampleSource(5, seed=3), model="resnet50", progress=False)
    assert Index(tmp_path / "ix").count == 20
    assert (tmp_path / "ix" / "meta.sqlite").read_bytes() == before


def test_a_damaged_vector_that_keeps_its_size_is_named_as_damage(tmp_path):
    """Bytes overwritten in a segment, its size unchanged, decode to a NaN: a search says the
    segment file is damaged (not that "Input X contains NaN", which reads as the query's fault)."""
    Index.build(SampleSource(20, seed=1), tmp_path / "ix", progress=False)
    seg = next((tmp_path / "ix" / "vectors").iterdir())
    data = bytearray(seg.read_bytes())
    at = len(data) - 20 * 1472 * 4 + 5 * 1472 * 4  # row 5's first value
    data[at : at + 4] = np.array([np.nan], np.float32).tobytes()
    seg.write_bytes(bytes(data))
    with pytest.raises(BadIndex) as caught:
        Index(tmp_path / "ix").search_ids([0], k=1)
    message = str(caught.value)
    assert message.startswith(f"{seg}: holds vectors no index writes (Input X contains NaN (first at row 5).)")
    assert message.endswith(f"the vector file is damaged (`lookalike index verify {tmp_path / 'ix'}` checks "
                            "every file)") and "\n" not in message
    # a whole index with a backend that cannot run: that error as it is, no word of damage
    Index.build(SampleSource(5, seed=2), tmp_path / "whole", progress=False)
    with pytest.raises(InvalidParameter) as caught:
        Index(tmp_path / "whole").searcher("nonesuch").search_ids([0], k=1)
    assert not isinstance(caught.value, BadIndex) and "damaged" not in str(caught.value)


def test_corrupt_truncated_and_missing(tmp_path):
    Index.build(SampleSource(20, seed=1), tmp_path / "ix", progress=False)
    seg = next((tmp_path / "ix" / "vectors").iterdir())
    data = bytearray(seg.read_bytes())
    data[-100] ^= 0xFF
    seg.write_bytes(bytes(data))
    assert Index(tmp_path / "ix").vectors().shape == (20, 1472)  # opening checks sizes, not every byte
    with pytest.raises(BadIndex, match="checksum mismatch"):
        Index(tmp_path / "ix", verify=True).vectors()
    assert any("checksum mismatch" in p for p in Index(tmp_path / "ix").problems())
    seg.write_bytes(bytes(data[:-400]))
    with pytest.raises(BadIndex, match="truncated or damaged"):
        Index(tmp_path / "ix").vectors()
    with pytest.raises(BadIndex, match="no such index folder"):
        Index(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadIndex, match="not a lookalike index"):
        Index(tmp_path / "empty")


def test_build_refuses_existing_folder(tmp_path):
    """An existing index: add to it instead; any other folder (a folder of photos given as
    --out too): not an index, so no advice to add to it."""
    (tmp_path / "ix").mkdir()
    with pytest.raises(BadIndex, match="ix: a folder that exists and is not an index; give the name of a new"):
        Index.build(SampleSource(5), tmp_path / "ix", progress=False)
    Index.build(SampleSource(5), tmp_path / "built", progress=False)
    with pytest.raises(BadIndex, match=r"built exists already; add images with `lookalike index add .*built SOURCE`"):
        Index.build(SampleSource(5), tmp_path / "built", progress=False)


def test_orphan_segment_from_a_crash_is_ignored_then_cleaned(tmp_path):
    Index.build(SampleSource(20, seed=1), tmp_path / "ix", progress=False)
    orphan = tmp_path / "ix" / "vectors" / "seg-000001-dead.npy"
    np.save(orphan, np.zeros((3, 1472), np.float32))
    assert Index(tmp_path / "ix").vectors().shape == (20, 1472)
    IndexStore(tmp_path / "ix").clean_orphans()
    assert not orphan.exists()
