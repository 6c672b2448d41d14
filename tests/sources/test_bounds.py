"""Every size and count a source takes has a bound and a one-line error; limits hold for
every step of decoding; PIL's warnings never reach the user, from any thread."""

import io
import struct
import threading
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import SourceError
from lookalike.sources import ArraySource, FolderSource, SampleSource, load_image, open_source
from lookalike.sources.decode import MAX_PIXELS, MAX_SIZE, MIN_SIZE
from lookalike.sources.sample import MAX_SAMPLE


@pytest.mark.parametrize("spec, message", [
    ("sample:0", r"n=0 is out of range: 1 to 1,000,000"),
    (f"sample:{MAX_SAMPLE + 1}", r"n=1000001 is out of range"),
    ("sample:5:1:0", rf"size 0 is out of range: .* between {MIN_SIZE} and {MAX_SIZE}"),
    ("sample:5:1:100000", r"size 100000 is out of range"),
    ("sample:5:" + "9" * 30, r"seed=9{30} is out of range"),
    ("sample:5:" + "9" * 5000, r"seed=1{1}0{40} is out of range"),  # never even parsed whole
    ("sample:-5", r"expected sample, sample:N"),
    ("sample:5:-1", r"expected sample, sample:N"),
    ("sample:5:1:2:3", r"expected sample, sample:N"),
    ("sample:", r"expected sample, sample:N"),
    ("sample:٣", r"expected sample, sample:N"),  # a digit, but not an ASCII one
])
def test_sample_spec_bounds(spec, message):
    with pytest.raises(SourceError, match=message) as caught:
        open_source(spec)
    assert "\n" not in str(caught.value)


def test_sample_python_arguments_are_checked_too():
    for args in ((True,), (2.5,), (5, -1), (5, 0, 8), (5, 0, 2048)):
        with pytest.raises(SourceError):
            SampleSource(*args)
    assert SampleSource(3, 2**64 - 1, MIN_SIZE).read([2]).shape == (1, MIN_SIZE, MIN_SIZE, 3)


def test_size_is_bounded_for_folders_and_queries(tmp_path):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    for size in (0, MIN_SIZE - 1, MAX_SIZE + 1, 100_000):
        with pytest.raises(SourceError, match=rf"size {size} is out of range"):
            open_source(tmp_path, size=size, progress=False)
        with pytest.raises(SourceError, match=rf"size {size} is out of range"):
            load_image(tmp_path / "a.png", size)
    with pytest.raises(SourceError, match="not a whole number"):
        load_image(tmp_path / "a.png", 32.0)
    assert FolderSource(tmp_path, size=MAX_SIZE, progress=False).read([0]).shape == (1, MAX_SIZE, MAX_SIZE, 3)


def test_npy_images_obey_the_pixel_limit_and_have_pixels(tmp_path, monkeypatch):
    from lookalike.sources import arrays

    monkeypatch.setattr(arrays, "MAX_PIXELS", 100)
    np.save(tmp_path / "big.npy", np.zeros((2, 11, 10, 3), np.uint8))
    with pytest.raises(SourceError, match=r"images of 10x11 pixels are over lookalike's limit of 100"):
        ArraySource(tmp_path / "big.npy")
    np.save(tmp_path / "flat.npy", np.zeros((2, 0, 10, 3), np.uint8))
    with pytest.raises(SourceError, match=r"shape \(2, 0, 10, 3\) is not"):
        ArraySource(tmp_path / "flat.npy")
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(SourceError, match=r"dir.npy: is a folder, not a .npy file"):
        open_source(tmp_path / "dir.npy")


def test_one_image_named_as_a_source_says_what_to_give(tmp_path):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "photo.jpg")
    with pytest.raises(SourceError, match=r"photo.jpg: one image is not an image source; give the folder"):
        open_source(tmp_path / "photo.jpg")


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height, shown", [
    (9000, 9000, "9000x9000"),  # over lookalike's limit, under PIL's: lookalike refuses it
    (10000, 10000, "100,000,000"),  # over PIL's warning threshold
    (20000, 20000, "400,000,000"),  # over PIL's error threshold
])
def test_one_bomb_message_with_lookalikes_limit(tmp_path, width, height, shown):
    (tmp_path / "bomb.png").write_bytes(_png_header(width, height))
    message = rf"bomb.png: refused, {shown} pixels is over lookalike's limit of {MAX_PIXELS:,} pixels"
    with pytest.raises(SourceError, match=message) as caught:
        load_image(tmp_path / "bomb.png", 32)
    assert "178956970" not in str(caught.value) and "89478485" not in str(caught.value)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "ok.png")
    src = FolderSource(tmp_path, size=32, progress=False)
    assert src.ids == ["ok.png"] and src.skipped[0].reason.startswith(f"refused, {shown} pixels")


def test_no_step_is_larger_than_the_file_or_the_result(monkeypatch):
    """A strip is cropped to its centre square before it is resized: at no point is an image
    of more than max(file's pixels, size**2) pixels made."""
    largest = []
    resize, crop = Image.Image.resize, Image.Image.crop

    def watch_resize(self, size, *a, **k):
        largest.append(size[0] * size[1])
        return resize(self, size, *a, **k)

    def watch_crop(self, box=None):
        out = crop(self, box)
        largest.append(out.width * out.height)
        return out

    monkeypatch.setattr(Image.Image, "resize", watch_resize)
    monkeypatch.setattr(Image.Image, "crop", watch_crop)
    for w, h in ((60000, 1), (1, 60000), (3000, 7)):
        buf = io.BytesIO()
        Image.new("L", (w, h), 77).save(buf, "PNG")
        largest.clear()
        out = load_image(buf.getvalue(), 512)
        assert out.shape == (512, 512, 3) and (out == 77).all()
        assert max(largest) <= max(w * h, 512 * 512)


def test_jpeg_is_drafted_to_the_size_needed(monkeypatch):
    buf = io.BytesIO()
    Image.new("RGB", (1600, 1200), (10, 200, 30)).save(buf, "JPEG")
    drafted = []
    load = Image.Image.load

    def watch(self):
        drafted.append(self.size)
        return load(self)

    monkeypatch.setattr(Image.Image, "load", watch)
    out = load_image(buf.getvalue(), 96)
    assert drafted[0] == (200, 150)  # decoded at 1/8 scale, still covering 96 x 96
    assert out.shape == (96, 96, 3) and abs(int(out[..., 1].mean()) - 200) <= 3


def _jpeg_with_broken_exif() -> bytes:
    """A JPEG whose EXIF tag points past its end: PIL warns "Tag data larger than file"."""
    entry = struct.pack("<HHII", 0x010E, 2, 400, 5000)  # ImageDescription, 400 bytes at offset 5000
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (50, 60, 70)).save(buf, "JPEG", exif=b"Exif\x00\x00" + tiff)
    return buf.getvalue()


def test_pil_warnings_are_silenced_in_threads_and_filters_restored(monkeypatch):
    """Reading a file that makes PIL warn, from many threads at once, shows no warning and
    leaves the warning filters as they were; PIL's warnings outside lookalike still show."""
    data = _jpeg_with_broken_exif()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Image.open(io.BytesIO(data)).getexif()  # PIL's own warning, outside lookalike: shown
        assert [str(w.message) for w in caught] == ["Tag data larger than file. Skipping tag 270"]
        before = list(warnings.filters)
        results = []
        threads = [threading.Thread(target=lambda: results.extend(load_image(data, 32) for _ in range(20)))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 160 and len(caught) == 1, [str(w.message) for w in caught]
        assert warnings.filters == before


def test_threads_decode_within_the_pixel_budget(tmp_path, monkeypatch):
    """Many large images read at once by a folder's thread pool are decoded a few at a time."""
    from lookalike.sources import decode

    monkeypatch.setattr(decode, "DECODE_BUDGET", 2 * 300 * 200)
    for i in range(12):
        Image.fromarray(np.full((200, 300, 3), i * 20, np.uint8)).save(tmp_path / f"{i:02d}.png")
    peak, load = [], Image.Image.load

    def watch(self):
        peak.append(decode._decoding_now)
        return load(self)

    monkeypatch.setattr(Image.Image, "load", watch)
    src = FolderSource(tmp_path, size=32, progress=False)
    images = src.read(np.arange(12))
    assert [int(im.mean()) for im in images] == [i * 20 for i in range(12)]
    assert max(peak) <= 2 * 300 * 200 and decode._decoding_now == 0


def test_files_and_streams_over_the_byte_limit_are_not_read(tmp_path, monkeypatch):
    """WebP's decoder reads a whole file when it opens it: a huge file is refused by its size."""
    from lookalike.sources.decode import MAX_FILE_BYTES

    with open(tmp_path / "huge.webp", "wb") as f:  # sparse: nothing is written but the last byte
        f.seek(MAX_FILE_BYTES)
        f.write(b"\0")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "ok.png")
    src = FolderSource(tmp_path, size=16, progress=False)
    assert src.ids == ["ok.png"]
    assert src.skipped[0].reason == (f"refused, {MAX_FILE_BYTES + 1:,} bytes is over lookalike's limit of "
                                     f"{MAX_FILE_BYTES:,} bytes for an image file")

    class Endless(io.RawIOBase):  # a stream that never ends, like /dev/zero handed over open
        def readable(self):
            return True

        def readinto(self, b):
            b[:] = b"\0" * len(b)
            return len(b)

    from lookalike.sources import decode

    monkeypatch.setattr(decode, "MAX_FILE_BYTES", 10 * 2**20)  # not to fill half a gigabyte here
    with pytest.raises(SourceError, match=r"^<file>: refused, more than 10,485,760 bytes is over"):
        load_image(Endless(), 32)


def test_sample_images_at_once_is_for_small_sets():
    assert SampleSource(3).images.shape == (3, 96, 96, 3)
    with pytest.raises(SourceError, match=r"all 1,000,000 images at once would take 25.7 GiB; read them in batches"):
        SampleSource(MAX_SAMPLE).images


@pytest.mark.parametrize("spec", ["", "  "])
def test_an_empty_source_name_is_not_the_current_folder(spec):
    with pytest.raises(SourceError, match=r"^no source given \(an empty name\)"):
        open_source(spec)


def test_stl10_label_file_of_the_wrong_size_is_refused_unread(tmp_path):
    from tests.conftest import stl10_pattern, write_stl10

    write_stl10(tmp_path / "train_X.bin", stl10_pattern(3))
    with open(tmp_path / "train_y.bin", "wb") as f:  # sparse, 1 GiB: reading it would take as much
        f.seek(2**30)
        f.write(b"\1")
    with pytest.raises(SourceError, match=r"train_y.bin: 1073741825 labels for 3 images"):
        open_source(tmp_path / "train_X.bin")


def test_a_pil_without_one_format_still_reads_the_others(monkeypatch):
    """A PIL built without WebP has no WEBP opener; asking PIL for it would fail every file."""
    png, webp = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(png, "PNG")
    Image.new("RGB", (20, 20), (1, 2, 3)).save(webp, "WEBP")
    Image.init()
    monkeypatch.delitem(Image.OPEN, "WEBP")
    assert load_image(png.getvalue(), 16)[0, 0].tolist() == [1, 2, 3]
    with pytest.raises(SourceError, match="not an image file lookalike reads"):
        load_image(webp.getvalue(), 16)
