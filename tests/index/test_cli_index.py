"""The index commands as a user runs them, including every bad input of the issue."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.knn import calibrate
from lookalike.knn.metrics import get_metric
from lookalike.sources import SampleSource


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lookalike", "-q", *args], capture_output=True, text=True)


def one_line_error(proc, fragment):
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    photos = root / "photos"
    (photos / "a").mkdir(parents=True)
    (photos / "b").mkdir()
    src = SampleSource(40, seed=9)
    for i in range(40):
        Image.fromarray(src.images[i]).save(photos / ("a" if i % 2 else "b") / f"img{i:02d}.png")
    (photos / "a" / "broken.jpg").write_bytes(b"no")
    proc = cli("index", "build", str(photos), "--out", str(root / "ix"))
    assert proc.returncode == 0, proc.stderr
    assert "indexed 40 image(s)" in proc.stdout and "broken.jpg" in proc.stderr
    return root


def test_info(index_dir):
    proc = cli("index", "info", str(index_dir / "ix"), "--json")
    info = json.loads(proc.stdout)
    # the default model's own metric (features/models.py, chosen by `lookalike eval`: docs/quality.md)
    assert info["count"] == 40 and info["labels"] == 2 and info["metric"] == "cosine"


def test_info_says_which_screen_a_search_takes(index_dir, capsys):
    from lookalike.cli import main

    def info(*flags):
        assert main(["index", "info", str(index_dir / "ix"), *flags]) == 0
        return capsys.readouterr().out

    calibrate.forget()  # none in this process either (the cache folder is this test's own)
    first = json.loads(info("--json"))["screen"]  # info measures nothing
    assert first.startswith("auto, not calibrated on this machine yet")
    calibrate.calibration(torch.device("cpu"), get_metric("cosine"), 1280)  # what a first search does
    about = json.loads(info("--json"))
    assert " screen by calibration (cpu/cosine/d2048; predicted for 1 query x 40 rows: " in about["screen"]
    assert "predicted for 64 queries x 40 rows: " in about["screen_batch"]
    text = info()
    assert "\nscreen          " in text and "\nscreen_batch    " in text


def test_search_text_and_json(index_dir):
    q = index_dir / "photos" / "a" / "img01.png"
    text = cli("search", str(index_dir / "ix"), str(q), "-k", "2")
    assert text.returncode == 0
    first = text.stdout.splitlines()[1]  # the image itself, up to batch-size rounding
    assert text.stdout.startswith("query: ") and "img01.png" in first
    assert float(first.split("distance")[1].split()[0]) < 0.01
    js = json.loads(cli("search", str(index_dir / "ix"), "--id", "3", "--json").stdout)
    assert js[0]["query"] == "id 3" and len(js[0]["neighbours"]) == 3
    assert all(n["id"] != 3 for n in js[0]["neighbours"])
    assert {"distance", "id", "key", "label", "location"} <= set(js[0]["neighbours"][0])


def test_search_bad_query_image_others_still_answer(index_dir):
    bad = index_dir / "photos" / "a" / "broken.jpg"
    good = index_dir / "photos" / "a" / "img03.png"
    proc = cli("search", str(index_dir / "ix"), str(bad), str(good))
    assert proc.returncode == 1
    assert "img03.png" in proc.stdout and proc.stdout.count("1. distance") == 1
    assert "broken.jpg" in proc.stderr and "Traceback" not in proc.stderr


def test_grid(index_dir):
    out = index_dir / "grid.png"
    proc = cli("grid", str(index_dir / "ix"), "--queries", "3", "-k", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).size[0] > 300
    assert proc.stdout.strip() == f"wrote {out}"
    # more queries asked for than the index holds: all of them drawn, and said
    proc = cli("grid", str(index_dir / "ix"), "--queries", "60", "-k", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (f"wrote {out} (40 queries: the index holds 40 image(s), fewer than "
                                   "--queries 60)")


@pytest.mark.parametrize("args, fragment", [
    (["search", "{root}/nope", "--id", "1"], "no such index folder"),
    (["search", "{ix}", "--id", "1", "-k", "0"], "k=0 is out of range"),
    (["search", "{ix}", "--id", "1", "-k", "41"], "k=41 is out of range"),
    (["search", "{ix}", "--id", "77"], "no image with id 77"),
    (["search", "{ix}", "{root}/photos/a/broken.jpg"], "broken.jpg: not an image"),
    (["index", "add", "{ix}", "sample:5", "--model", "resnet50"], "not resnet50"),
    (["grid", "{ix}", "-k", "50", "--out", "{root}/g.png"], "k=50 is out of range"),
])
def test_bad_input(index_dir, args, fragment):
    before = (index_dir / "ix" / "meta.sqlite").read_bytes()
    args = [a.format(root=index_dir, ix=index_dir / "ix") for a in args]
    one_line_error(cli(*args), fragment)
    assert (index_dir / "ix" / "meta.sqlite").read_bytes() == before


def test_add_then_search_finds_new_images(index_dir, tmp_path):
    import shutil

    ix = tmp_path / "ix"
    shutil.copytree(index_dir / "ix", ix)
    np.save(tmp_path / "new.npy", SampleSource(6, seed=11).images)
    proc = cli("index", "add", str(ix), str(tmp_path / "new.npy"))
    assert proc.returncode == 0 and "40 -> 46" in proc.stdout, proc.stderr
    js = json.loads(cli("search", str(ix), "--id", "44", "--json", "-k", "1").stdout)
    assert js[0]["neighbours"][0]["id"] != 44


def test_a_source_named_like_an_action(index_dir, tmp_path, monkeypatch):
    """A folder named `add` is built with `index build add`; `index add` is always the action."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "add").mkdir()
    for i in range(3):
        Image.fromarray(SampleSource(3, seed=5).images[i]).save(tmp_path / "add" / f"{i}.png")
    proc = cli("index", "build", "add", "--out", "ix")
    assert proc.returncode == 0 and "indexed 3 image(s) into ix" in proc.stdout, proc.stderr
    proc = cli("index", "add", "ix", "add")  # the same images again: skipped, and said so
    assert proc.returncode == 0 and "3 -> 3; skipped 3 already in the index" in proc.stdout, proc.stderr
    proc = cli("index", "add", "ix", "add", "--keep-duplicates")
    assert proc.returncode == 0 and "3 -> 6" in proc.stdout, proc.stderr
    proc = cli("index", "add", "--out", "ix2")  # the shorthand cannot mean a source named add
    assert proc.returncode == 2 and "lookalike index add: error:" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "ix2").exists()


def _truncated_jpeg(path, seed=0):
    """A JPEG whose header reads (the folder keeps it) but whose pixels do not decode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(SampleSource(1, seed=seed).images[0]).resize((200, 200)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])


def test_a_folder_added_again_whose_only_new_file_is_corrupt(tmp_path, monkeypatch):
    """Syncing a folder again where nothing is new but a file that does not decode adds
    nothing and says so (exit 0), the file listed as the folder names it; it was an error
    ('none of its 1 image(s) could be decoded'), so such a folder could never be synced."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    for i, im in enumerate(SampleSource(3, seed=5).images):
        Image.fromarray(im).save(tmp_path / "photos" / f"{i}.png")
    _truncated_jpeg(tmp_path / "photos" / "broken.jpg")
    proc = cli("index", "build", "photos", "--out", "ix")
    assert proc.returncode == 0 and "indexed 3 image(s)" in proc.stdout, proc.stderr
    proc = cli("index", "add", "ix", "photos")
    assert proc.returncode == 0 and "added 0 image(s) to ix: 3 -> 3; skipped 3 already" in proc.stdout, proc.stderr
    assert "photos/broken.jpg: corrupt or truncated image" in proc.stderr and str(tmp_path) not in proc.stderr


def test_nothing_decodes_is_one_error_after_the_list_and_nothing_written(tmp_path, monkeypatch):
    """A folder where no image decodes: `embed` and `index build` both list the files
    skipped, then one line (exit 2); no features file, no index."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.jpg").write_bytes(b"")
    _truncated_jpeg(tmp_path / "bad" / "cut.jpg")
    for args, made in ((("embed", "bad", "--out", "f.npy"), ["f.npy", "f.json"]),
                       (("index", "build", "bad", "--out", "ix"), ["ix"])):
        proc = cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines[0] == "skipped 2 file(s):" and len(lines) == 4, proc.stderr
        assert "none of its 1 image(s) could be decoded" in lines[-1], proc.stderr
        assert not any((tmp_path / m).exists() for m in made)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]  # no work folder left either
