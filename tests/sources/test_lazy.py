"""Sources decode images when they are read, not when they are opened; a file that breaks
only when decoded is left out, said once, and never given a wrong image."""

import io
import json
import time

import numpy as np
import pytest
from PIL import Image, ImageFile

from lookalike.errors import SourceError
from lookalike.features import Embedder, read_features
from lookalike.sources import FolderSource, SampleSource, open_source
from lookalike.sources import sample as sample_mod


@pytest.fixture
def decodes(monkeypatch):
    """Files whose pixels were decoded: every path to pixels in PIL goes through
    ImageFile.load (called again, as a no-op, by later steps on the same image). lookalike
    opens each file itself (never blocking) and hands PIL the open file, whose name is the path."""
    calls = []
    original = ImageFile.ImageFile.load

    def load(self):
        name = getattr(self, "filename", None) or getattr(getattr(self, "fp", None), "name", None)
        if name:  # a later no-op call has neither: the file is closed
            calls.append(name)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


def _noise_jpeg(seed: int, w=200, h=150) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def folder_with_late_failure(tmp_path):
    """Six good photos and one whose header reads but whose pixels stop halfway."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(6):
        (root / f"img{i}.jpg").write_bytes(_noise_jpeg(i))
    (root / "img3b.jpg").write_bytes(_noise_jpeg(99)[:3000])  # between img3 and img4 in order
    (root / "garbage.png").write_bytes(b"no header at all")
    return root


def test_opening_a_folder_decodes_nothing(tmp_path, decodes):
    for i in range(30):
        Image.fromarray(np.full((40, 50, 3), i * 8, np.uint8)).save(tmp_path / f"{i:02d}.png")
    src = open_source(tmp_path, size=32, progress=False)
    assert len(src) == 30 and decodes == []
    images = src.read([3, 17])
    assert {p.rsplit("/", 1)[-1] for p in decodes} == {"03.png", "17.png"} and images.shape == (2, 32, 32, 3)
    assert images[0].mean() == pytest.approx(24) and images[1].mean() == pytest.approx(136)


def test_opening_the_sample_set_renders_nothing(monkeypatch):
    rendered = []
    original = sample_mod.make_crop
    monkeypatch.setattr(sample_mod, "make_crop", lambda *a: (rendered.append(1), original(*a))[1])
    t0 = time.perf_counter()
    big = SampleSource(200_000, seed=2)
    assert time.perf_counter() - t0 < 2.0 and rendered == []
    crop = big.read([123_456])
    assert len(rendered) == 1
    # crop i is a function of (seed, i) alone: a smaller set of the same seed holds it too
    small = SampleSource(123_457, seed=2)
    np.testing.assert_array_equal(small.read([123_456]), crop)
    assert small.label(123_456) == big.label(123_456)


@pytest.mark.parametrize("n", [1, 19, 20, 21, 57, 1000])
def test_sample_labels_stay_balanced(n):
    src = SampleSource(n, seed=5)
    counts = np.bincount(src.labels, minlength=len(src.label_names))
    assert counts.max() - counts.min() <= 1 and counts.sum() == n


def test_a_file_that_breaks_when_decoded_is_skipped_once(folder_with_late_failure):
    src = FolderSource(folder_with_late_failure, size=48, progress=False)
    assert src.ids == ["img0.jpg", "img1.jpg", "img2.jpg", "img3.jpg", "img3b.jpg", "img4.jpg", "img5.jpg"]
    assert [s.path.rsplit("/", 1)[-1] for s in src.skipped] == ["garbage.png"]  # its header did not read
    with pytest.raises(SourceError, match=r"img3b.jpg: corrupt or truncated image"):
        src.read([2, 4])
    images, failed = src.read_available([2, 4, 5])
    assert images.shape == (2, 48, 48, 3) and list(failed) == [1]
    np.testing.assert_array_equal(images[1], src.read([5])[0])
    batches = list(src.batches(3))
    assert [(b.start, b.stop, len(b.ids)) for b in batches] == [(0, 3, 3), (3, 6, 2), (6, 7, 1)]
    assert batches[1].ids == ["img3.jpg", "img4.jpg"] and list(batches[1].failed) == [4]
    late = [s for s in src.skipped if s.path.endswith("img3b.jpg")]
    assert len(late) == 1 and "truncated" in late[0].reason  # listed once, read three times


def test_features_and_index_leave_a_broken_image_out_and_say_so(folder_with_late_failure, tmp_path):
    from lookalike.index import Index

    src = FolderSource(folder_with_late_failure, size=64, progress=False)
    embedder = Embedder(progress=False, batch_size=4)
    feats, kept = embedder.embed(src, tmp_path / "f.npy", return_kept=True)
    assert feats.shape == (6, 1472) and kept.tolist() == [0, 1, 2, 3, 5, 6]
    on_disk, meta = read_features(tmp_path / "f.npy")
    assert len(on_disk) == len(meta["ids"]) == 6 and "img3b.jpg" not in meta["ids"]
    assert [s["id"] for s in meta["skipped"]] == ["img3b.jpg"] and "truncated" in meta["skipped"][0]["reason"]
    np.testing.assert_allclose(feats[4], embedder.embed_array(src.read([5]))[0], rtol=1e-4, atol=1e-4)

    src = FolderSource(folder_with_late_failure, size=64, progress=False)
    index = Index.build(src, tmp_path / "ix", embedder=embedder, progress=False)
    assert index.count == 6 and "img3b.jpg" not in [m.key for m in index.images()]
    assert sum(s.path.endswith("img3b.jpg") for s in src.skipped) == 1


def test_a_resumed_run_still_lists_what_the_first_run_skipped(folder_with_late_failure, tmp_path, monkeypatch):
    from lookalike.features import embed as embed_mod

    monkeypatch.setattr(embed_mod, "CHUNK", 5)  # img3b (position 4) is in the first chunk
    first = FolderSource(folder_with_late_failure, size=64, progress=False)
    e = Embedder(progress=False, batch_size=2)
    calls = []
    original = e._forward

    def dies_in_the_second_chunk(x):
        calls.append(len(x))
        if len(calls) == 3:  # the second chunk's first batch ([4] failed to decode: nothing to run)
            raise KeyboardInterrupt
        return original(x)

    e._forward = dies_in_the_second_chunk
    with pytest.raises(KeyboardInterrupt):
        e.embed(first, tmp_path / "f.npy")
    work = tmp_path / ".f.npy.partial"
    assert sorted(p.name for p in work.iterdir()) == ["000000000000.json", "000000000000.npy", "job.json"]
    assert json.loads((work / "000000000000.json").read_text())["failed"][0][0] == 4
    second = FolderSource(folder_with_late_failure, size=64, progress=False)
    e2 = Embedder(progress=False, batch_size=2)
    seen = []
    original2 = e2._forward
    e2._forward = lambda x: (seen.append(len(x)), original2(x))[1]
    feats, kept = e2.embed(second, tmp_path / "f.npy", return_kept=True)
    assert sum(seen) == 2 and len(feats) == 6 and kept.tolist() == [0, 1, 2, 3, 5, 6]  # only chunk 2 was run
    assert [s.path.rsplit("/", 1)[-1] for s in second.skipped] == ["garbage.png", "img3b.jpg"]
    assert [s["id"] for s in read_features(tmp_path / "f.npy")[1]["skipped"]] == ["img3b.jpg"]


def test_empty_source_when_every_image_breaks(tmp_path):
    from lookalike.index import Index

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(_noise_jpeg(1)[:3000])
    src = FolderSource(tmp_path / "photos", size=64, progress=False)
    with pytest.raises(SourceError, match="none of its 1 image"):
        Index.build(src, tmp_path / "ix", embedder=Embedder(progress=False), progress=False)
