"""`index duplicates` on real photographs: planted exact and altered copies among distinct
photos are found, and nothing else; the groups match a brute force over all pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from lookalike.cli import main
from lookalike.errors import InvalidParameter
from lookalike.index import Index
from lookalike.index.groups import check_threshold, near_duplicates

PHOTOS = ["astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page", "clock", "horse",
          "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "logo", "gravel", "brick"]
PLANTED = {"astronaut_copy.png": "astronaut.png", "coffee_q90.jpg": "coffee.png",
           "rocket_bright.png": "rocket.png", "horse_crop.png": "horse.png"}


def photo(name: str) -> Image.Image:
    import skimage.data

    a = getattr(skimage.data, name)()
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    if a.dtype != np.uint8:
        a = (a * 255).astype(np.uint8) if a.max() <= 1 else a.astype(np.uint8)
    im = Image.fromarray(a[..., :3]).convert("RGB")
    im.thumbnail((160, 160))
    return im


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("dups")
    folder = root / "photos"
    folder.mkdir()
    ims = {n: photo(n) for n in PHOTOS}
    for n, im in ims.items():
        im.save(folder / f"{n}.png")
    ims["astronaut"].save(folder / "astronaut_copy.png")  # an exact copy under another name
    ims["coffee"].save(folder / "coffee_q90.jpg", quality=90)  # re-encoded
    ImageEnhance.Brightness(ims["rocket"]).enhance(1.1).save(folder / "rocket_bright.png")  # brightened
    w, h = ims["horse"].size
    ims["horse"].crop((2, 2, w - 2, h - 2)).resize((w, h)).save(folder / "horse_crop.png")  # cropped a little
    assert main(["-q", "index", "build", str(folder), "--out", str(root / "ix"), "--input-size", "128"]) == 0
    return root / "ix"


def test_planted_copies_are_found_and_nothing_else(photo_index, tmp_path, capsys):
    out, pic = tmp_path / "groups.json", tmp_path / "groups.png"
    assert main(["-q", "index", "duplicates", str(photo_index), "--out", str(out), "--picture", str(pic)]) == 0
    printed = capsys.readouterr().out
    assert "4 group(s) of near-duplicates, 8 of 21 images" in printed
    found = json.loads(out.read_text())
    index = Index(photo_index)
    keys = {m.id: m.key for m in index.images()}
    groups = {frozenset(keys[i] for i in g) for g in found["groups"]}
    assert groups == {frozenset(pair) for pair in PLANTED.items()}
    assert found["default_threshold"] and found["threshold"] > 0
    assert Image.open(pic).size[0] > 200

    # the same pairs as a brute force over all pairs at that threshold
    metric = index.metric  # the model's own (cosine for the default model)
    assert metric in ("euclidean", "cosine")
    v = np.asarray(index.vectors(), dtype=np.float64)
    if metric == "cosine":
        u = v / np.linalg.norm(v, axis=1, keepdims=True)
        d = 1 - u @ u.T
    else:
        d = np.linalg.norm(v[:, None] - v[None], axis=2)
    ids = index.ids()
    brute = {(ids[a], ids[b]) for a, b in zip(*np.nonzero(np.triu(d <= found["threshold"], 1)))}
    assert set(near_duplicates(index.vectors(), ids, metric, found["threshold"], progress=False).distances) == brute
    # threshold 0: only the exact copy
    exact = near_duplicates(index.vectors(), ids, metric, 0.0, progress=False)
    assert [{keys[i] for i in g} for g in exact.groups] == [{"astronaut.png", "astronaut_copy.png"}]
    # a removed image is in no group
    index.remove(keys=["coffee_q90.jpg"])
    again = near_duplicates(Index(photo_index).vectors(), Index(photo_index).ids(), metric, found["threshold"],
                            progress=False)
    assert len(again.groups) == 3 and all("coffee.png" not in {keys[i] for i in g} for g in again.groups)


def test_bad_thresholds_are_one_line(photo_index, capsys):
    for bad in ("-1", "nan", "inf", "abc", "1e300"):
        with pytest.raises(SystemExit) as exit_:
            main(["-q", "index", "duplicates", str(photo_index), "--threshold", bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and "--threshold" in err[0]
    with pytest.raises(InvalidParameter, match="not a number"):
        check_threshold("x")
    assert main(["-q", "index", "duplicates", str(photo_index), "--out", str(Path(photo_index) / "g.txt")]) == 2
    assert "wrong extension" in capsys.readouterr().err
