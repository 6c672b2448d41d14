"""`lookalike eval` end to end on a few real photos at a small input size, and its bad inputs."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lookalike.cli import main
from lookalike.sources.sample import photo_paths


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photo_paths()[1:15:3]:  # 5 photos
        shutil.copy(p, folder)
    return folder


def one_line_error(capsys, code, argv, *fragments):
    assert main(["-q", *argv]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for f in fragments:
        assert f in err[0], err[0]


def test_eval_writes_the_table_the_json_and_the_misses(tmp_path, photos, capsys):
    out = tmp_path / "out"
    code = main(["-q", "eval", str(photos), "--input-size", "64", "--edits", "grey,bar+text,thumb80", "-k", "3",
                 "--compare", "pooling=avg,metric=euclidean,input_size=64", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| **all** | 15 |" in printed and "recall@1 / recall@3 / MRR@3" in printed
    record = json.loads((out / "eval.json").read_text())
    first, second = record["evaluations"]
    assert first["config"]["input_size"] == 64 and second["config"]["pooling"] == "avg"
    assert set(first["per_edit"]) == {"grey", "bar+text", "thumb80"} and first["originals"] == 5
    assert first["overall"]["queries"] == second["overall"]["queries"] == 15
    report = (out / "report.md").read_text()
    assert "## Results" in report and "misses.png" in report
    assert "`efficientnet_lite0 avg euclidean 64 crop views=full+centre mid=5:gem:1+8:gem:1.25`" in report
    with Image.open(out / "misses.png") as im:  # three tiles a miss, or a line that says there were none
        assert im.size[0] > 300 and np.asarray(im.convert("L")).std() > (10 if first["misses"] else 1)
    # a second run into eval's own folder replaces its files
    assert main(["-q", "eval", str(photos), "--input-size", "64", "--edits", "grey", "--out", str(out)]) == 0


def test_bad_inputs_say_so_in_one_line(tmp_path, photos, capsys):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(photo_paths()[0], lone)
    one_line_error(capsys, 2, ["eval", str(lone), "--out", str(tmp_path / "o1")], "1 image(s)", "at least two")
    one_line_error(capsys, 2, ["eval", str(photos), "--edits", "crop50,blur", "--out", str(tmp_path / "o2")],
                   "unknown edit 'blur'", "crop50, rotate15, grey, jpeg15, thumb80, bar, text, mirror_bright")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"not a jpeg at all")
    one_line_error(capsys, 2, ["eval", str(photos), "--distractors", str(bad), "--out", str(tmp_path / "o3")],
                   "bad", "no readable image")
    np.save(tmp_path / "odd.npy", np.zeros((3, 8, 8), np.float32))
    one_line_error(capsys, 2, ["eval", str(photos), "--distractors", str(tmp_path / "odd.npy"),
                               "--out", str(tmp_path / "o4")], "odd.npy")
    one_line_error(capsys, 2, ["eval", str(photos), "--compare", "pooling=median", "--out", str(tmp_path / "o5")],
                   "pooling 'median'")
    (tmp_path / "taken").write_text("x")
    one_line_error(capsys, 2, ["eval", str(photos), "--out", str(tmp_path / "taken")], "is a file")
    for name in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / name).exists(), name  # refused before anything was written


def test_a_photo_that_fails_to_decode_is_listed_once_by_name(tmp_path, photos, capsys):
    """A file whose header reads but whose pixels do not is left out and listed, its name
    said once (the list printed 'path: path: corrupt ...')."""
    Image.open(next(photos.iterdir())).convert("RGB").save(tmp_path / "whole.jpg", quality=90)
    whole = (tmp_path / "whole.jpg").read_bytes()
    (photos / "cut.jpg").write_bytes(whole[: len(whole) * 6 // 10])
    assert main(["-q", "eval", str(photos), "--input-size", "64", "--edits", "grey", "-k", "3",
                 "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "skipped 1 file(s):" and err[1].count("cut.jpg") == 1 and "corrupt or truncated" in err[1]
