"""Stable ids, remove, compact, verify, the commit lock and thumbnails, on indexes built from
known vectors (no model needed), so that results can be checked against a brute force."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from lookalike.cli import main
from lookalike.errors import BadIndex, IndexBusy, InvalidParameter, UnknownImage
from lookalike.index import Index, IndexStore
from lookalike.index import store as store_mod
from lookalike.index.lock import CommitLock
from lookalike.index.staging import Staging
from lookalike.index.verify import problems
from lookalike.sources import SampleSource

CONFIG = {"model": "test", "weights": "random:0", "pooling": "max", "input_shape": [32, 32, 3], "dim": 8}


def make(path: Path, n: int = 40, seed: int = 0) -> tuple[Index, np.ndarray]:
    vectors = np.random.default_rng(seed).random((n, 8), dtype=np.float32)
    return Index.from_features(vectors, SampleSource(n, seed=1, size=32), CONFIG, path), vectors


def brute(vectors: np.ndarray, live: list[int], query: int, k: int) -> list[int]:
    """The k nearest live ids of id `query` (itself left out), by float64 distance, ties by id."""
    others = [i for i in live if i != query]
    d = np.linalg.norm(vectors[others].astype(np.float64) - vectors[query], axis=1)
    return [others[j] for j in np.lexsort((others, d))[:k]]


def files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def one_line(capsys, argv: list[str], fragment: str, expected: int = 2) -> None:
    code = main(["-q", *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and code == expected and len(lines) == 1 and fragment in lines[0], (code, err)


def test_remove_search_compact_search_keeps_ids_and_results(tmp_path):
    index, vectors = make(tmp_path / "ix")
    searcher = Index(tmp_path / "ix").searcher()  # a long-lived reader: sees the removes by itself
    first = [n.id for n in searcher.search_ids([0], 5)[0].neighbours]
    assert first == brute(vectors, list(range(40)), 0, 5)
    gone = index.remove(ids=[first[0], first[2], 39])
    assert gone == sorted([first[0], first[2], 39]) and index.count == 37
    live = [i for i in range(40) if i not in gone]
    after_remove = {q: [n.id for n in searcher.search_ids([q], 5)[0].neighbours] for q in (0, 7, 21)}
    for q, got in after_remove.items():
        assert got == brute(vectors, live, q, 5) and not set(got) & set(gone)
    assert searcher.count == 37
    # k results while k live images exist, also k = all the others
    assert len(searcher.search_ids([0], 36)[0].neighbours) == 36
    assert index.compact() == (40, 37)
    assert Index(tmp_path / "ix").vectors().shape == (37, 8)
    for q, got in after_remove.items():
        assert [n.id for n in searcher.search_ids([q], 5)[0].neighbours] == got  # same ids after compact
        assert [n.id for n in Index(tmp_path / "ix").search_ids([q], 5)[0].neighbours] == got
    np.testing.assert_array_equal(Index(tmp_path / "ix").vectors(), vectors[live])
    assert Index(tmp_path / "ix").ids() == live
    assert [m.id for m in index.images()] == live and index.image(38).key == "sample/00038"
    with pytest.raises(UnknownImage, match="was removed"):
        index.image(39)
    with pytest.raises(UnknownImage, match="was removed"):
        searcher.search_ids([first[0]], 2)
    assert index.problems() == []
    # new images get new ids, never a removed one's
    added, _ = IndexStore(tmp_path / "ix").append(np.zeros((2, 8), np.float32), [
        {"key": f"new{j}", "source": "sample:2:9:32", "position": j, "location": f"n{j}", "label": None,
         "digest": None} for j in range(2)])
    assert added == [40, 41] and Index(tmp_path / "ix").count == 39


def test_many_removed_images_are_stepped_over_or_left_out_of_the_fit(tmp_path):
    index, vectors = make(tmp_path / "ix", n=400)
    searcher = index.searcher()
    gone = index.remove(ids=list(range(0, 400, 2))[:300])  # 200 removed: within the overfetch
    live = [i for i in range(400) if i not in gone]
    assert [n.id for n in searcher.search_ids([1], 4)[0].neighbours] == brute(vectors, live, 1, 4)
    gone += index.remove(ids=list(range(1, 200, 2)))  # 300 removed: the live rows fitted alone
    live = [i for i in range(400) if i not in gone]
    assert [n.id for n in searcher.search_ids([201], 4)[0].neighbours] == brute(vectors, live, 201, 4)
    D, I = searcher.search_vectors(vectors[[201]], 3)
    assert I[0].tolist() == [201, *brute(vectors, live, 201, 2)]


def test_remove_unknown_changes_nothing(tmp_path, capsys):
    index, _ = make(tmp_path / "ix")
    before = files(tmp_path / "ix")
    with pytest.raises(UnknownImage, match="no image with id 99"):
        index.remove(ids=[3, 99])
    with pytest.raises(UnknownImage, match="no image with key 'nope'"):
        index.remove(ids=[3], keys=["nope"])
    with pytest.raises(UnknownImage, match="no image from source 'stl10:x'"):
        index.remove(sources=["stl10:x"])
    with pytest.raises(InvalidParameter, match="nothing to remove"):
        index.remove()
    one_line(capsys, ["index", "remove", str(tmp_path / "ix"), "--id", "3", "99"], "no image with id 99")
    one_line(capsys, ["index", "remove", str(tmp_path / "ix"), "--key", "x"], "no image with key 'x'")
    one_line(capsys, ["index", "remove", str(tmp_path / "ix")], "say what to remove")
    assert files(tmp_path / "ix") == before and Index(tmp_path / "ix").count == 40
    assert main(["-q", "index", "remove", str(tmp_path / "ix"), "--key", "sample/00003", "--id", "4"]) == 0
    assert "removed 2 image(s)" in capsys.readouterr().out
    assert index.remove(sources=["sample:40:1:32"]) == [i for i in range(40) if i not in (3, 4)]
    assert Index(tmp_path / "ix").count == 0 and Index(tmp_path / "ix").compact() == (40, 0)
    assert Index(tmp_path / "ix").problems() == []


def test_a_crash_during_compact_leaves_the_old_or_the_new_index(tmp_path, monkeypatch):
    index, vectors = make(tmp_path / "ix")
    index.remove(ids=[1, 2, 3])
    old_segments = set(index.store.segments())

    def crash(*a, **kw):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # cut off after the new segment is written, before the commit
        m.setattr(store_mod, "_fsync_dir", crash)
        with pytest.raises(KeyboardInterrupt):
            index.compact()
    again = Index(tmp_path / "ix")
    assert set(again.store.segments()) == old_segments and again.problems() == []
    assert again.search_ids([0], 2)[0].neighbours[0].id == brute(vectors, [i for i in range(40) if i > 3 or i == 0],
                                                                  0, 1)[0]
    with monkeypatch.context() as m:  # cut off after the commit, before the old files are removed
        m.setattr(IndexStore, "clean_orphans", crash)
        with pytest.raises(KeyboardInterrupt):
            index.compact()
    again = Index(tmp_path / "ix")
    assert again.vectors().shape == (37, 8) and again.problems() == [] and again.ids()[:2] == [0, 4]
    assert len(list((tmp_path / "ix" / "vectors").iterdir())) == 2  # the old segment, orphaned
    assert again.compact() == (37, 37)
    IndexStore(tmp_path / "ix").append(np.zeros((1, 8), np.float32), [
        {"key": "z", "source": "s", "position": 0, "location": "z", "label": None, "digest": None}])
    assert len(list((tmp_path / "ix" / "vectors").iterdir())) == 2  # orphan gone, one new segment


def test_verify_finds_a_flipped_byte_a_truncated_segment_and_a_damaged_database(tmp_path, capsys):
    make(tmp_path / "ix")
    assert main(["-q", "index", "verify", str(tmp_path / "ix")]) == 0
    assert "whole (40 images" in capsys.readouterr().out
    seg = next((tmp_path / "ix" / "vectors").iterdir())
    data = bytearray(seg.read_bytes())
    data[-5] ^= 0x01
    seg.write_bytes(bytes(data))
    assert Index(tmp_path / "ix").search_ids([0], 2)  # opening checks sizes only
    assert main(["-q", "index", "verify", str(tmp_path / "ix")]) == 2
    out, err = capsys.readouterr()
    assert out.strip().splitlines() == [f"{seg}: checksum mismatch (the vector file is corrupted)"]
    assert err.strip() == f"lookalike: error: {tmp_path / 'ix'}: 1 problem(s) found; the index is damaged"
    seg.write_bytes(bytes(data[:-64]))
    assert any("truncated" in p for p in Index(tmp_path / "ix").problems())
    # add / compact on an index that fails the cheap checks: one line, nothing changed
    before = files(tmp_path / "ix")
    one_line(capsys, ["index", "compact", str(tmp_path / "ix")], "truncated or damaged")
    one_line(capsys, ["index", "remove", str(tmp_path / "ix"), "--id", "1"], "truncated or damaged")
    assert files(tmp_path / "ix") == before

    make(tmp_path / "iy")
    db = tmp_path / "iy" / "meta.sqlite"
    with sqlite3.connect(db) as con:
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        root = con.execute("SELECT rootpage FROM sqlite_master WHERE name='images'").fetchone()[0]
    con.close()
    raw = bytearray(db.read_bytes())
    at = (root - 1) * page_size
    raw[at:at + 12] = b"\x0d" + b"\xff" * 11  # the images table's page header, scribbled over
    db.write_bytes(bytes(raw))
    lines = problems(IndexStore(tmp_path / "iy"))
    assert lines and all(str(db) in line for line in lines)
    assert main(["-q", "index", "verify", str(tmp_path / "iy")]) == 2
    capsys.readouterr()


def test_a_writer_that_cannot_get_the_lock_says_who_holds_it(tmp_path, capsys):
    index, _ = make(tmp_path / "ix")
    held, release = threading.Event(), threading.Event()

    def holder():
        with CommitLock(tmp_path / "ix"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        held.wait(10)
        before = files(tmp_path / "ix")
        with pytest.raises(IndexBusy, match=r"holds the index's commit lock \(process \d+ on .+, since .+ s ago\)"):
            Index(tmp_path / "ix", lock_timeout=0.2).remove(ids=[1])
        one_line(capsys, ["index", "compact", str(tmp_path / "ix"), "--lock-timeout", "0.1"], "waited 0.1 s",
                 expected=1)
        assert files(tmp_path / "ix") == before
        assert Index(tmp_path / "ix").search_ids([1], 2)  # readers are never blocked
    finally:
        release.set()
        t.join()
    assert Index(tmp_path / "ix", lock_timeout=0.2).remove(ids=[1]) == [1]


def test_each_writer_stages_in_its_own_folder_and_a_rerun_takes_its_own(tmp_path):
    (tmp_path / "ix").mkdir()
    with Staging(tmp_path / "ix", "abc") as a, Staging(tmp_path / "ix", "abc") as b, \
            Staging(tmp_path / "ix", "xyz") as c:
        assert len({a.folder, b.folder, c.folder}) == 3  # same work at once: each its own folder
        (a.folder / "features.npy").write_bytes(b"mine")
    with Staging(tmp_path / "ix", "abc") as again:  # a rerun after the writer ended: takes its folder back
        assert again.folder == a.folder and (again.folder / "features.npy").read_bytes() == b"mine"
        again.done()
    assert not a.folder.exists()


def test_thumbnails_stand_in_for_moved_files_and_can_be_left_out(tmp_path, capsys):
    from PIL import Image

    from lookalike.index.index import _thumbnails
    from lookalike.sources import files_source

    photos = tmp_path / "photos"
    photos.mkdir()
    images = SampleSource(5, seed=2, size=32).images
    for j, im in enumerate(images):
        Image.fromarray(im).save(photos / f"p{j}.png")
    source = files_source([photos / "p3.png", photos / "p1.png"], size=32)
    assert source.ids == ["p3.png", "p1.png"]
    vectors = np.random.default_rng(0).random((2, 8), dtype=np.float32)
    index = Index.from_features(vectors, source, CONFIG, tmp_path / "ix", thumbnails=_thumbnails(source, 8))
    data, media = index.thumbnail(0)
    assert media == "image/jpeg" and 200 < len(data) < 8000
    assert Image.open(io.BytesIO(data)).size == (32, 32)
    info = index.info()
    assert info["thumbnails"] == 2 and info["thumbnail_bytes"] > 400
    (photos / "p3.png").unlink()  # the file is gone: the picture comes from the thumbnail
    shown = index.read_pixels([0, 1])
    assert np.abs(shown[0].astype(int) - images[3]).mean() < 8 and (shown[1] == images[1]).all()
    assert main(["-q", "grid", str(tmp_path / "ix"), "--query-ids", "0", "-k", "1",
                 "--out", str(tmp_path / "g.png")]) == 0
    capsys.readouterr()
    index.remove(ids=[0])
    assert index.thumbnail(0) is None and index.thumbnail(7) is None
    bare = Index.from_features(vectors, files_source([photos / "p1.png", photos / "p2.png"], 32), CONFIG,
                               tmp_path / "bare")
    assert bare.thumbnail(0) is None and bare.info()["thumbnails"] == 0
    with pytest.raises(Exception, match="p9.png"):
        files_source([photos / "p9.png"])


def test_an_older_index_is_upgraded_by_its_first_change(tmp_path):
    index, vectors = make(tmp_path / "ix", n=10)
    with sqlite3.connect(tmp_path / "ix" / "meta.sqlite") as db:  # as lookalike format 2 wrote it
        db.execute("ALTER TABLE images DROP COLUMN row")
        db.execute("ALTER TABLE images DROP COLUMN deleted")
        db.execute("DROP TABLE thumbnails")
        db.execute("UPDATE manifest SET value='2' WHERE key='format_version'")
        db.execute("DELETE FROM manifest WHERE key IN ('rows', 'next_id')")
    db.close()
    old = Index(tmp_path / "ix")
    assert old.count == 10 and old.search_ids([0], 2)[0].neighbours[0].id == brute(vectors, list(range(10)), 0, 1)[0]
    assert old.thumbnail(0) is None and old.problems() == []
    with pytest.raises(UnknownImage, match=r"no image with id 12 .*\(ids run from 0 to 9\)"):  # not a TypeError
        old.images([12])
    assert old.remove(ids=[5]) == [5]
    new = Index(tmp_path / "ix")
    assert new.manifest["format_version"] == 3 and new.count == 9 and new.manifest["next_id"] == 10
    assert new.problems() == []


def test_bad_lock_timeout_is_a_usage_error(tmp_path, capsys):
    make(tmp_path / "ix", n=4)
    for bad in ("-1", "soon", "nan", "1e30"):
        with pytest.raises(SystemExit) as exit_:
            main(["-q", "index", "compact", str(tmp_path / "ix"), "--lock-timeout", bad])
        assert exit_.value.code == 2 and "--lock-timeout" in capsys.readouterr().err
    with pytest.raises(BadIndex, match="no such index folder"):
        Index(tmp_path / "nope").remove(ids=[1])


def test_add_to_a_damaged_index_is_refused_before_any_work(tmp_path):
    make(tmp_path / "ix")
    seg = next((tmp_path / "ix" / "vectors").iterdir())
    seg.write_bytes(seg.read_bytes()[:-32])
    before = files(tmp_path / "ix")
    with pytest.raises(BadIndex, match="truncated or damaged"):  # not the model "test", which is unknown
        Index(tmp_path / "ix").add_images(SampleSource(3, seed=5, size=32), progress=False)
    assert files(tmp_path / "ix") == before


def test_threads_of_one_process_commit_one_at_a_time_and_all_land(tmp_path):
    make(tmp_path / "ix", n=4)
    store = IndexStore(tmp_path / "ix")
    got: list[list[int]] = []

    def writer(w: int) -> None:
        for b in range(3):
            metas = [{"key": f"w{w}b{b}i{j}", "source": f"t{w}", "position": 3 * b + j, "location": f"w{w}/{b}/{j}",
                      "label": None, "digest": f"{w}-{b}-{j}"} for j in range(3)]
            got.append(store.append(np.full((3, 8), w + b / 10, np.float32), metas, skip_present=True)[0])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = sorted(i for g in got for i in g)
    assert ids == list(range(4, 4 + 36)) and Index(tmp_path / "ix").count == 40
    assert len({m.key for m in Index(tmp_path / "ix").images()}) == 40 and Index(tmp_path / "ix").problems() == []
    # the same images committed again by a writer that raced another: skipped at commit
    again = store.append(np.zeros((3, 8), np.float32), [
        {"key": "w0b0i0", "source": "t0", "position": j, "location": f"w0/0/{j}", "label": None,
         "digest": f"0-0-{j}"} for j in range(3)], skip_present=True)
    assert again == ([], 3)
