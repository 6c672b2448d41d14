"""`load_image` takes a path, bytes, a binary file or an array, and decodes each the same way."""

import io

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import SourceError
from lookalike.sources import decode as decode_mod
from lookalike.sources import load_image


def _photo(w=120, h=80):
    y, x = np.mgrid[:h, :w]
    return np.stack([x * 2 % 256, y * 3 % 256, (x + y) % 256], -1).astype(np.uint8)


class _Stream(io.RawIOBase):
    """A binary file that cannot seek, like a socket or an upload stream."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        chunk = self._data.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(_photo()).save(path)
    return path


@pytest.mark.parametrize("size", [None, 32])
def test_path_bytes_files_and_array_decode_alike(png, size):
    from_path = load_image(png, size)
    data = png.read_bytes()
    with open(png, "rb") as file:
        for other in (str(png), data, bytearray(data), memoryview(data), io.BytesIO(data), file,
                      _Stream(data), _photo()):
            np.testing.assert_array_equal(load_image(other, size), from_path)
    assert from_path.shape == ((80, 120, 3) if size is None else (32, 32, 3)) and from_path.dtype == np.uint8


def test_exif_orientation_from_bytes():
    arr = np.zeros((40, 100, 3), np.uint8)
    arr[:, :10] = 255
    im, buf = Image.fromarray(arr), io.BytesIO()
    exif = im.getexif()
    exif[0x0112] = 6  # display needs 90 degrees clockwise
    im.save(buf, "JPEG", exif=exif, quality=95)
    out = load_image(buf.getvalue(), None)
    assert out.shape == (100, 40, 3) and out[:10].mean() > 200


def test_arrays_grey_and_alpha():
    grey = _photo()[..., 0]
    out = load_image(grey, None)
    assert out.shape == (80, 120, 3) and (out[..., 0] == grey).all() and (out[..., 2] == grey).all()
    np.testing.assert_array_equal(load_image(grey[..., None], None), out)
    rgba = np.zeros((10, 10, 4), np.uint8)  # fully transparent black: white once laid on white
    rgba[:5, :, 3] = 255  # top half opaque black
    out = load_image(rgba, None)
    assert (out[:5] == 0).all() and (out[5:] == 255).all()
    # the same as an RGBA PNG file
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    np.testing.assert_array_equal(load_image(buf.getvalue(), None), out)


@pytest.mark.parametrize("array, message", [
    (np.zeros((8, 8, 3), np.float32), r"<array>: pixels of dtype float32; give uint8"),
    (np.zeros((8, 8, 2), np.uint8), r"<array>: shape \(8, 8, 2\) is not an image"),
    (np.zeros((2, 8, 8, 3), np.uint8), r"<array>: shape \(2, 8, 8, 3\) is not an image"),
    (np.zeros((0, 8, 3), np.uint8), r"<array>: shape \(0, 8, 3\) is not an image"),
])
def test_arrays_refused_clearly(array, message):
    with pytest.raises(SourceError, match=message):
        load_image(array, 16)


def test_errors_name_the_input(tmp_path):
    with pytest.raises(SourceError, match=r"^<bytes>: not an image file lookalike reads \(JPEG, PNG, WebP"):
        load_image(b"not an image", 16)
    with pytest.raises(SourceError, match=r"^<file>: not an image file lookalike reads"):
        load_image(_Stream(b"not an image"), 16)
    with pytest.raises(SourceError, match=r"nope.png: no such file"):
        load_image(tmp_path / "nope.png", 16)
    with pytest.raises(SourceError, match=r"^<unknown>: expected a path, bytes, a binary file or an array"):
        load_image(42, 16)
    good = io.BytesIO()
    Image.fromarray(np.full((300, 400, 3), 7, np.uint8)).save(good, "PNG")
    with pytest.raises(SourceError, match=r"^<bytes>: corrupt or truncated image"):
        load_image(good.getvalue()[:-200], 16)


def test_pixel_limit_holds_for_every_input(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_mod, "MAX_PIXELS", 100 * 100)
    big = np.zeros((200, 200, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG")
    for image, name in ((buf.getvalue(), "<bytes>"), (big, "<array>")):
        with pytest.raises(SourceError, match=rf"{name}: refused, 200x200 pixels is over lookalike's limit of "
                                              r"10,000 pixels \(a decompression bomb\?\)"):
            load_image(image, 16)
