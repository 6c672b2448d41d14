"""The edits do what their names say, and the same seed gives the same copy."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from lookalike.errors import InvalidParameter
from lookalike.quality.copies import make_copies
from lookalike.quality.edits import DEFAULT_EDITS, EDITS, apply_edit, parse_edits


@pytest.fixture(scope="module")
def photo():
    from lookalike.sources.sample import photo_paths

    with Image.open(next(p for p in photo_paths() if p.name == "chelsea.png")) as im:
        return im.convert("RGB")  # 451 x 300


def edit(name, im, seed=0):
    return np.asarray(apply_edit(name, im, np.random.default_rng(seed)))


def test_same_seed_same_copy_other_seed_other_place(photo):
    for name in [*EDITS, "crop50+jpeg15"]:
        assert np.array_equal(edit(name, photo, 1), edit(name, photo, 1)), name
    for name in ("crop50", "bar", "text"):  # the generator decides where
        assert not np.array_equal(edit(name, photo, 1), edit(name, photo, 2)), name
    a = make_copies([photo, photo], ["grey", "crop50"], seed=3)
    b = make_copies([photo, photo], ["crop50"], seed=3)  # copy (j, e) does not depend on the others made
    assert [(c.original, c.edit) for c in a] == [(0, "grey"), (0, "crop50"), (1, "grey"), (1, "crop50")]
    assert np.array_equal(np.asarray(a[3].image), np.asarray(make_copies([photo, photo], ["grey", "crop50"],
                                                                         seed=3)[3].image))
    assert len(b) == 2


def test_crop50_keeps_half_the_area_cut_from_the_photo(photo):
    out = edit("crop50", photo)
    h, w = out.shape[:2]
    assert abs(w * h / (photo.width * photo.height) - 0.5) < 0.01
    src = np.asarray(photo)
    found = [(y, x) for y in range(photo.height - h + 1) for x in range(photo.width - w + 1)
             if np.array_equal(src[y, x:x + 4], out[0, :4]) and np.array_equal(src[y:y + h, x:x + w], out)]
    assert len(found) >= 1


def test_rotate_grey_jpeg_thumb_mirror(photo):
    src = np.asarray(photo).astype(int)
    rot = edit("rotate15", photo)
    assert rot.shape == src.shape and (rot[0, 0] == 0).all() and (rot[-1, -1] == 0).all()
    assert not np.array_equal(rot, src)
    g = edit("grey", photo)
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    j = edit("jpeg15", photo).astype(int)
    assert j.shape == src.shape and 0 < np.abs(j - src).mean() < 12  # lossy, but the same picture
    t = edit("thumb80", photo)
    assert max(t.shape[:2]) == 80 and abs(t.shape[1] / t.shape[0] - photo.width / photo.height) < 0.03
    m = edit("mirror_bright", photo)
    want = ImageEnhance.Brightness(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).enhance(1.3)
    assert np.array_equal(m, np.asarray(want)) and m.mean() > src.mean()


@pytest.mark.parametrize("name", ["bar", "text"])
def test_bar_and_text_cover_a_fifth_and_nothing_else(photo, name):
    src = np.asarray(photo)
    out = edit(name, photo)
    changed_rows = np.flatnonzero((out != src).any(axis=(1, 2)))
    band = round(photo.height / 5)
    assert changed_rows.max() - changed_rows.min() + 1 <= band
    assert changed_rows.max() - changed_rows.min() + 1 >= band * 0.9
    if name == "bar":
        assert (out[changed_rows] == 0).all()
    else:  # white letters on a dark band
        assert (out[changed_rows] == 255).all(axis=-1).sum() > 50 and (out[changed_rows] == 32).sum() > 0


def test_a_pair_is_one_edit_then_the_other(photo):
    rng = np.random.default_rng(5)
    first = apply_edit("crop50", photo, rng)
    both = apply_edit("crop50+grey", photo, np.random.default_rng(5))
    assert np.array_equal(np.asarray(both), np.asarray(first.convert("L").convert("RGB")))


def test_edit_names_are_checked():
    assert parse_edits("crop50, grey+thumb80") == ("crop50", "grey+thumb80")
    assert set(DEFAULT_EDITS) >= set(EDITS)
    with pytest.raises(InvalidParameter, match=r"unknown edit 'blur'; known edits: crop50, rotate15, grey"):
        parse_edits("crop50,blur")
    with pytest.raises(InvalidParameter, match="unknown edit 'sepia'"):
        parse_edits("grey+sepia")
    with pytest.raises(InvalidParameter, match="names separated by commas"):
        parse_edits("crop50,,grey")
