"""A standing corpus of odd, broken and hostile image files, generated here, run through
every way lookalike reads images: `open_source(folder)`, reading every image, `load_image`
on every path, and the CLI (`show`, `embed`).

What must hold for every file: it is read correctly (pixel values are checked against the
policy of `sources/modes.py`) or listed in `skipped` with a reason, exactly once; nothing
warns, nothing blocks (a FIFO, a device, a link loop), and memory stays bounded (a strip of
60,000 x 1 pixels, a 20,000 x 20,000 header).
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import SourceError
from lookalike.sources import load_image, open_source
from lookalike.sources.decode import MAX_PIXELS

SRC = Path(__file__).parents[2] / "src"
FORMATS = {"PNG": ".png", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "JPEG": ".jpg"}
LOSSLESS = {"PNG", "TIFF", "BMP"}
RAMP = np.tile(np.arange(256, dtype=np.float64), (16, 1))  # 16 x 256: column j holds j


def _from(array: np.ndarray, mode: str) -> Image.Image:
    return Image.frombytes(mode, (array.shape[1], array.shape[0]), np.ascontiguousarray(array).tobytes())


def _rgba_over_black(alpha: np.ndarray) -> Image.Image:
    black = np.zeros((*alpha.shape, 3), np.uint8)
    return Image.fromarray(np.dstack([black, alpha.astype(np.uint8)]), "RGBA")


def mode_cases() -> dict[str, tuple[Image.Image, str]]:
    """name -> (an image in that mode, the ramp a correct reading shows: "up" 0..255 from left
    to right, or "down" 255..0 for black laid over white with a rising alpha)."""
    grey = Image.fromarray(np.dstack([RAMP.astype(np.uint8)] * 3), "RGB")
    cases = {m: (grey.convert(m), "up") for m in ("L", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "1")}
    cases["P"] = (grey.convert("P", palette=Image.Palette.ADAPTIVE), "up")
    sixteen = (RAMP * 257).astype(np.uint16)
    cases |= {
        "I16": (Image.fromarray(sixteen), "up"),
        "I16B": (_from(sixteen.astype(">u2"), "I;16B"), "up"),
        "I16L": (_from(sixteen.astype("<u2"), "I;16L"), "up"),
        "I16N": (_from(sixteen, "I;16N"), "up"),
        "I-8bit": (Image.fromarray(RAMP.astype(np.int32)), "up"),
        "I-16bit": (Image.fromarray((RAMP * 257).astype(np.int32)), "up"),
        "I-signed": (Image.fromarray((RAMP * 1000 - 100_000).astype(np.int32)), "up"),
        "F-unit": (Image.fromarray((RAMP / 255).astype(np.float32)), "up"),
        "F-range": (Image.fromarray((RAMP / 25.5 - 5).astype(np.float32)), "up"),
        "RGBA": (_rgba_over_black(RAMP), "down"),
        "LA": (_rgba_over_black(RAMP).convert("LA"), "down"),
        "PA": (_rgba_over_black(RAMP).convert("PA"), "down"),
        "RGBa": (_rgba_over_black(RAMP).convert("RGBa"), "down"),
        "La": (_from(np.dstack([np.zeros_like(RAMP), RAMP]).astype(np.uint8), "La"), "down"),
    }
    return cases


def reference(im: Image.Image) -> np.ndarray:
    """What the policy of sources/modes.py makes of a decoded file, written out plainly."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _grey(np.round(np.asarray(im).astype(np.float64) / 257))
    if im.mode == "I":
        v = np.asarray(im).astype(np.float64)
        if v.min() >= 0 and v.max() <= 255:
            return _grey(v)
        if v.min() >= 0 and v.max() <= 65535:
            return _grey(np.round(v / 257))
        return _grey(np.round((v - v.min()) * 255 / (v.max() - v.min())))
    if im.mode == "F":
        v = np.asarray(im).astype(np.float64)
        lo, hi = np.nanmin(v), np.nanmax(v)
        return _grey(np.round(v * 255 if lo >= 0 and hi <= 1 else (v - lo) * 255 / (hi - lo)))
    if im.mode in ("La", "RGBa"):
        v = np.asarray(im).astype(np.float64)
        out = np.clip(v[..., :-1] + 255 - v[..., -1:], 0, 255)
        return np.repeat(out, 3, axis=-1) if im.mode == "La" else out
    if im.mode in ("LA", "PA", "RGBA") or "transparency" in im.info:
        v = np.asarray(im.convert("RGBA")).astype(np.float64)
        return v[..., :3] * v[..., 3:] / 255 + 255 * (1 - v[..., 3:] / 255)
    return np.asarray(im.convert("RGB")).astype(np.float64)


def _grey(v: np.ndarray) -> np.ndarray:
    return np.repeat(v[..., None], 3, axis=-1)


def must_skip(what) -> bool:
    return isinstance(what, tuple) and what[0] == "skip"


def must_read(what) -> bool:
    return what in ("read", "reference") or (isinstance(what, tuple) and what[0] == "ramp")


def ramp_error(pixels: np.ndarray, direction: str) -> float:
    """Largest gap between the column means (in blocks of 16 columns) and the ramp expected."""
    columns = pixels.astype(np.float64).mean(axis=(0, 2)).reshape(16, 16).mean(axis=1)
    expected = RAMP[0].reshape(16, 16).mean(axis=1)
    return float(np.abs(columns - (expected if direction == "up" else 255 - expected)).max())


# -- the corpus -----------------------------------------------------------------------------

def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_of_size(width: int, height: int) -> bytes:
    """A small JPEG whose header says width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def write_corpus(root: Path) -> dict[str, object]:
    """Fill `root`; returns name -> what must become of it: ("ramp", direction, tolerance),
    "read" (read, any pixels), "either" (read or listed) or ("skip", words of the reason)."""
    expect: dict[str, object] = {}
    for name, (im, direction) in mode_cases().items():
        for fmt, ext in FORMATS.items():
            buf = io.BytesIO()
            try:
                im.save(buf, fmt)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # the format cannot hold this mode
            (root / f"mode-{name}{ext}").write_bytes(buf.getvalue())
            native = fmt in LOSSLESS and Image.open(buf).mode == im.mode
            expect[f"mode-{name}{ext}"] = ("ramp", direction, 40 if name == "1" else 3) if native else "reference"
    frames = [Image.fromarray(RAMP.astype(np.uint8)), Image.fromarray(255 - RAMP.astype(np.uint8))]
    for fmt, ext in (("GIF", ".gif"), ("PNG", ".png"), ("WEBP", ".webp"), ("TIFF", ".tif")):
        frames[0].save(root / f"frames{ext}", fmt, save_all=True, append_images=frames[1:])
        expect[f"frames{ext}"] = ("ramp", "up", 12)
    for w, h in ((1, 1), (1, 60000), (60000, 1)):
        Image.new("L", (w, h), 200).save(root / f"extreme-{w}x{h}.png")
        expect[f"extreme-{w}x{h}.png"] = "read"
    Image.new("RGB", (60000, 1), (9, 9, 9)).save(root / "extreme-60000x1.jpg")
    expect["extreme-60000x1.jpg"] = "read"
    (root / "bomb-20000x20000.png").write_bytes(_png(20000, 20000, zlib.compress(b"\0" * 20001)))
    (root / "bomb-9000x9000.jpg").write_bytes(_jpeg_of_size(9000, 9000))
    (root / "bomb-30000x30000.jpg").write_bytes(_jpeg_of_size(30000, 30000))
    for name in ("bomb-20000x20000.png", "bomb-9000x9000.jpg", "bomb-30000x30000.jpg"):
        expect[name] = ("skip", f"over lookalike's limit of {MAX_PIXELS:,} pixels")
    _corrupt(root, expect)
    _warners(root, expect)
    _specials(root, expect)
    for name in ("new\nline.png", "ünïcødé.png", "-dash.png", " spaced name .png", "esc\x1b[31mred.png"):
        Image.fromarray(RAMP.astype(np.uint8)).save(root / name)
        expect[name] = ("ramp", "up", 1)
    invalid = os.fsdecode(b"latin1-\xe9t\xe9.png")  # not UTF-8: Python keeps the byte as a lone surrogate
    Image.fromarray(RAMP.astype(np.uint8)).save(root / invalid)
    expect[invalid] = ("skip", "not valid UTF-8")
    (root / "corrupt\nname.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    expect["corrupt\nname.png"] = ("skip", "corrupt or truncated")
    return expect


def _corrupt(root: Path, expect: dict) -> None:
    """Truncated, bit-flipped and empty files of every format."""
    rng = np.random.default_rng(7)
    photo = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    kinds = [(fmt, ext, {}) for fmt, ext in FORMATS.items()]
    kinds += [("TIFF", ".tif", {"compression": c}) for c in ("tiff_lzw", "tiff_deflate", "jpeg")]  # libtiff
    for fmt, ext, options in kinds:
        buf = io.BytesIO()
        Image.fromarray(photo).save(buf, fmt, **options)
        good, tag = buf.getvalue(), options.get("compression", fmt)
        for cut in (8, len(good) // 3, len(good) - 1):
            (root / f"cut{cut}-{tag}{ext}").write_bytes(good[:cut])
            expect[f"cut{cut}-{tag}{ext}"] = "either"
        for k in range(8):
            bad = bytearray(good)
            for at in rng.integers(0, len(bad), 1 + k):
                bad[at] ^= 1 << int(rng.integers(0, 8))
            (root / f"flip{k}-{tag}{ext}").write_bytes(bytes(bad))
            expect[f"flip{k}-{tag}{ext}"] = "either"
        (root / f"empty{ext}").write_bytes(b"")
        expect[f"empty{ext}"] = ("skip", "empty file (0 bytes)")


def _warners(root: Path, expect: dict) -> None:
    """Files on which PIL warns: EXIF pointing past the end, an invalid APNG chunk."""
    entry = struct.pack("<HHII", 0x010E, 2, 400, 5000)  # a tag whose data lies past the end
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)
    Image.fromarray(RAMP.astype(np.uint8)).save(root / "warn-exif.jpg", exif=exif)
    expect["warn-exif.jpg"] = ("ramp", "up", 6)
    ramp = zlib.compress(b"".join(b"\x00" + bytes(range(256)) for _ in range(16)))
    actl = struct.pack(">II", 0, 0)  # an animation of no frames
    data = bytearray(_png(256, 16, ramp))
    at = data.index(b"IDAT") - 4
    data[at:at] = struct.pack(">I", 8) + b"acTL" + actl + struct.pack(">I", zlib.crc32(b"acTL" + actl))
    (root / "warn-apng.png").write_bytes(bytes(data))
    expect["warn-apng.png"] = ("ramp", "up", 1)


def _specials(root: Path, expect: dict) -> None:
    """A FIFO, a socket, a device, link loops, broken links, hidden names, linked folders."""
    os.mkfifo(root / "fifo.png")
    expect["fifo.png"] = ("skip", "a FIFO")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.png"))
    sock.close()
    expect["sock.png"] = ("skip", "a socket")
    os.symlink("/dev/zero", root / "zero.png")
    expect["zero.png"] = ("skip", "a character device")
    os.symlink("loop.png", root / "loop.png")
    expect["loop.png"] = ("skip", "symbolic link loop")
    os.symlink("missing.png", root / "dangling.png")
    expect["dangling.png"] = ("skip", "broken symbolic link")
    Image.fromarray(RAMP.astype(np.uint8)).save(root / ".hidden.png")
    expect[".hidden.png"] = ("skip", "hidden file")
    (root / ".cache").mkdir()
    Image.fromarray(RAMP.astype(np.uint8)).save(root / ".cache" / "x.png")
    expect[".cache"] = ("skip", "hidden folder")
    outside = root.parent / "outside"
    outside.mkdir()
    Image.fromarray(RAMP.astype(np.uint8)).save(outside / "linked.png")
    os.symlink(outside, root / "linked")
    expect["linked/linked.png"] = ("ramp", "up", 1)
    os.symlink(outside, root / "linked-again")
    expect["linked-again"] = ("skip", "walked once")
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "up")
    expect["sub/up"] = ("skip", "walked once")
    (root / "notes.txt").write_text("not an image")
    expect["notes.txt"] = ("skip", "extension .txt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening") / "corpus"
    root.mkdir()
    return root, write_corpus(root)


def within(seconds: float, fn, *args):
    """fn(*args) in a daemon thread: fail, rather than hang, if it blocks."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} still running after {seconds}s: it blocks"
    if "error" in out:
        raise out["error"]
    return out["value"]


# -- the checks -----------------------------------------------------------------------------

def test_every_file_is_read_correctly_or_listed_once(corpus):
    root, expect = corpus
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = within(120, lambda: open_source(root, size=32, progress=False))
        images, failed = within(120, source.read_available, np.arange(len(source)))
    assert caught == [], [str(w.message) for w in caught]
    assert warnings.filters == filters  # lookalike's quiet window left nothing behind
    assert images.shape == (len(source) - len(failed), 32, 32, 3) and images.dtype == np.uint8
    listed = [os.path.relpath(s.path, root) for s in source.skipped]
    assert len(listed) == len(set(listed)), "a file listed twice"
    assert all(s.reason for s in source.skipped)
    read = [i for j, i in enumerate(source.ids) if j not in failed]
    assert set(read).isdisjoint(listed) and sorted(set(read) | set(listed)) == sorted(expect)
    reasons = {os.path.relpath(s.path, root): s.reason for s in source.skipped}
    for name, what in expect.items():
        if must_read(what):
            assert name in read, f"{name!r} not read: {reasons.get(name)}"
        elif must_skip(what):
            assert what[1] in reasons.get(name, ""), f"{name!r}: {reasons.get(name)!r}"


@pytest.mark.parametrize("size", [None, 32])
def test_load_image_on_every_path_reads_correctly_or_says_why(corpus, size):
    root, expect = corpus
    names = sorted(expect) + ["linked", "sub", "sub/up"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in names:
            try:
                pixels = within(30, load_image, root / name, size)
            except SourceError as exc:
                assert str(exc).isprintable(), repr(str(exc))
                assert not must_read(expect.get(name)), f"{name!r}: {exc}"
                continue
            what = expect[name]
            folder_policy = must_skip(what) and what[1] in ("hidden file", "extension .txt", "not valid UTF-8")
            assert not must_skip(what) or folder_policy, f"{name!r} was read"  # a hidden file is an image
            assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
            if size is not None:
                assert pixels.shape == (size, size, 3)
            elif what == "reference":
                with Image.open(root / name) as im:
                    np.testing.assert_allclose(pixels, reference(im), atol=2, err_msg=name)
            elif isinstance(what, tuple) and what[0] == "ramp":
                assert ramp_error(pixels, what[1]) <= what[2], name
    assert caught == [], [str(w.message) for w in caught]


def test_every_mode_in_memory_follows_the_policy():
    """The modes no file format keeps (La, RGBa, HSV) and all the others, without a file."""
    from lookalike.sources.modes import MODES, to_rgb

    seen = set()
    for name, (im, direction) in mode_cases().items():
        seen.add(im.mode)
        pixels = np.asarray(to_rgb(im))
        np.testing.assert_allclose(pixels, reference(im), atol=2, err_msg=name)
        assert ramp_error(pixels, direction) <= (40 if name == "1" else 3), name
    assert seen == MODES


def test_a_fifo_a_device_and_a_folder_as_query_or_source_never_block(corpus, tmp_path):
    root, _ = corpus
    for path, words in ((root / "fifo.png", "a FIFO"), (Path("/dev/zero"), "a character device"),
                        (root, "is a folder, not an image file")):
        with pytest.raises(SourceError, match=words):
            within(10, load_image, path, 32)
    os.mkfifo(tmp_path / "images.npy")
    os.mkfifo(tmp_path / "train_X.bin")
    os.mkfifo(tmp_path / "plain")
    for spec, words in ((tmp_path / "images.npy", "a FIFO"), (tmp_path / "train_X.bin", "a FIFO"),
                        (tmp_path / "plain", "a FIFO"), ("/dev/zero", "a character device")):
        with pytest.raises(SourceError, match=words):
            within(10, open_source, spec)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file and lists a folder whatever their mode; "
                    "tests/sources/test_files.py covers an unlistable folder by other means")
def test_unreadable_file_and_folder_are_listed(tmp_path):
    Image.fromarray(RAMP.astype(np.uint8)).save(tmp_path / "ok.png")
    Image.fromarray(RAMP.astype(np.uint8)).save(tmp_path / "locked.png")
    (tmp_path / "closed").mkdir()
    Image.fromarray(RAMP.astype(np.uint8)).save(tmp_path / "closed" / "inside.png")
    os.chmod(tmp_path / "locked.png", 0)
    os.chmod(tmp_path / "closed", 0)
    try:
        source = open_source(tmp_path, size=32, progress=False)
    finally:
        os.chmod(tmp_path / "closed", 0o755)
    reasons = {Path(s.path).name: s.reason for s in source.skipped}
    assert source.ids == ["ok.png"] and "permission denied" in reasons["locked.png"]
    assert "cannot list this folder" in reasons["closed"]


MEMORY_SCRIPT = """
import resource, sys
from lookalike.sources import load_image
from lookalike.errors import SourceError
root = sys.argv[1]
load_image(root + "/extreme-1x1.png", 32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for name in ("extreme-1x60000.png", "extreme-60000x1.png", "extreme-60000x1.jpg",
             "bomb-20000x20000.png", "bomb-9000x9000.jpg", "bomb-30000x30000.jpg"):
    for size in (16, 96, 1024):
        try:
            load_image(root + "/" + name, size)
        except SourceError:
            pass
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_strips_and_bombs_take_little_memory(corpus):
    """In a fresh process, so the peak is this test's: strips of 60,000 pixels at every size
    and headers of up to 900 million pixels cost a few MiB, not gigabytes."""
    root, _ = corpus
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(root)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) < 64, f"peak memory grew by {proc.stdout.strip()} MiB"


@pytest.mark.parametrize("command", [["show", "--out", "grid.png"], ["embed", "--weights", "none", "--out", "f.npy"]])
def test_cli_over_the_corpus(corpus, tmp_path, command):
    root, expect = corpus
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = [sys.executable, "-m", "lookalike", "-q", command[0], str(root), *command[1:]]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()  # nothing but the list of skipped files: no warning, no libtiff
    assert lines and lines[0].startswith("skipped "), proc.stderr
    count = int(lines[0].split()[1])
    assert lines[0] == f"skipped {count} file(s):" and len(lines) == 1 + count, proc.stderr
    listed = lines[1:]
    assert all(line.startswith("  ") and line.isprintable() for line in listed)
    assert any("corrupt\\nname.png: corrupt or truncated" in line for line in listed)
    assert count >= sum(1 for what in expect.values() if isinstance(what, tuple) and what[0] == "skip")
