import numpy as np
import pytest
from PIL import Image

from lookalike.errors import SourceError
from lookalike.sources import FolderSource, load_image
from lookalike.sources import decode as decode_mod


def _photo(w=120, h=80):
    y, x = np.mgrid[:h, :w]
    return np.stack([x * 2 % 256, y * 3 % 256, (x + y) % 256], -1).astype(np.uint8)


@pytest.fixture
def mixed_folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "cats" / "deep").mkdir(parents=True)
    (root / "dogs").mkdir()
    arr = _photo()
    Image.fromarray(arr).save(root / "cats" / "a.jpg")
    Image.fromarray(arr).save(root / "cats" / "b.png")
    Image.fromarray(arr).save(root / "cats" / "deep" / "c.webp")
    Image.fromarray(arr).save(root / "dogs" / "d.bmp")
    Image.fromarray(arr).save(root / "dogs" / "e.tiff")
    frames = [Image.fromarray(arr).convert("P"), Image.fromarray(255 - arr).convert("P")]
    frames[0].save(root / "dogs" / "f.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(arr[..., 0]).save(root / "dogs" / "grey.png")  # L mode
    rgba = np.dstack([arr, np.full(arr.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "dogs" / "alpha.png")
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    good = (root / "cats" / "a.jpg").read_bytes()
    (root / "cats" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    return root


def test_folder_reads_every_format_and_reports_bad_files(mixed_folder):
    src = FolderSource(mixed_folder, size=64, progress=False)
    names = sorted(i.split("/")[-1] for i in src.ids)
    assert names == ["a.jpg", "alpha.png", "b.png", "c.webp", "d.bmp", "e.tiff", "f.gif", "grey.png"]
    assert src.read(np.arange(len(src))).shape == (8, 64, 64, 3)
    skipped = {s.path.rsplit("/", 1)[-1]: s.reason for s in src.skipped}
    assert set(skipped) == {"notes.txt", "broken.jpg", "truncated.jpg"}
    assert "not an image" in skipped["notes.txt"]
    assert src.label_names == ["cats", "dogs"]
    assert src.label(src.ids.index("cats/deep/c.webp")) == "cats"


def test_gif_first_frame_and_grey_made_rgb(mixed_folder):
    gif = load_image(mixed_folder / "dogs" / "f.gif", None)
    direct = np.asarray(Image.open(mixed_folder / "dogs" / "f.gif").convert("RGB"))
    np.testing.assert_array_equal(gif, direct)
    grey = load_image(mixed_folder / "dogs" / "grey.png", None)
    assert grey.shape == (80, 120, 3) and (grey[..., 0] == grey[..., 2]).all()


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((40, 100, 3), np.uint8)
    arr[:, :10] = 255  # a white band on the left
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "r.jpg", None)
    assert out.shape == (100, 40, 3)  # portrait once oriented
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the band is now on top


def test_resize_and_centre_crop(tmp_path):
    arr = np.zeros((50, 150, 3), np.uint8)
    arr[:, 50:100] = 255  # white centre third
    Image.fromarray(arr).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", 30)
    assert out.shape == (30, 30, 3) and out.mean() > 240  # the crop is the white centre


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_mod, "MAX_PIXELS", 100 * 100)
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "small.png")
    src = FolderSource(tmp_path, size=16, progress=False)
    assert src.ids == ["small.png"]
    assert "decompression bomb" in src.skipped[0].reason


def test_empty_or_unreadable_folder_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="no readable image"):
        FolderSource(tmp_path, progress=False)
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(SourceError, match=r"no readable image found \(1 file\(s\) skipped\)"):
        FolderSource(tmp_path, progress=False)
    with pytest.raises(SourceError, match="no such folder"):
        FolderSource(tmp_path / "missing", progress=False)
