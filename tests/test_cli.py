"""Bad input at the command line: one line naming the problem, non-zero exit, no traceback."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from lookalike.cli import build_parser, main
from lookalike.cli import index as index_commands
from lookalike.cli.index import expand_shorthand
from lookalike.features.resnet import ResNet50Trunk


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lookalike", "-q", *args], capture_output=True, text=True)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_unreadable_path(tmp_path):
    assert_one_line_error(run_cli("embed", str(tmp_path / "missing"), "--out", str(tmp_path / "f.npy")),
                          "missing: no such file or folder")


def test_wrong_extension(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert_one_line_error(run_cli("show", str(tmp_path / "a.txt"), "--out", str(tmp_path / "s.png")),
                          "a.txt: not an image source")
    assert_one_line_error(run_cli("embed", "sample:10", "--out", str(tmp_path / "f.csv")), "f.csv", ".npy")


def test_stl10_wrong_size(tmp_path):
    (tmp_path / "unlabeled_X.bin").write_bytes(b"\0" * 1000)
    assert_one_line_error(run_cli("show", str(tmp_path / "unlabeled_X.bin"), "--out", str(tmp_path / "s.png")),
                          "unlabeled_X.bin: size 1000 bytes")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("embed", str(tmp_path / "empty"), "--out", str(tmp_path / "f.npy")),
                          "empty: no readable image found")


def test_unknown_model(tmp_path):
    assert_one_line_error(run_cli("embed", "sample:10", "--model", "vgg16", "--out", str(tmp_path / "f.npy")),
                          "unknown model 'vgg16'")


def test_weights_for_another_model(tmp_path):
    torch.save(ResNet50Trunk().state_dict(), tmp_path / "r50.pth")
    assert_one_line_error(run_cli("embed", "sample:10", "--weights", str(tmp_path / "r50.pth"),
                                  "--out", str(tmp_path / "f.npy")),
                          "weights do not fit model efficientnet_lite0")


def test_embed_then_bench_on_features(tmp_path, capsys):
    out = tmp_path / "f.npy"
    assert main(["-q", "embed", "sample:60", "--out", str(out)]) == 0
    assert np.load(out).shape == (60, 1280)
    assert "wrote" in capsys.readouterr().out


def test_model_list_and_summary(capsys):
    assert main(["model", "list"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    assert main(["model", "summary", "efficientnet_lite0"]) == 0
    assert "Total params" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expanded", [
    (["index", "photos", "--out", "ix"], ["index", "build", "photos", "--out", "ix"]),
    (["-q", "index", "sample:5", "--out", "ix"], ["-q", "index", "build", "sample:5", "--out", "ix"]),
    (["index", "build", "add", "--out", "ix"], None),
    (["index", "add", "ix", "photos"], None),
    (["index", "info", "ix", "--json"], None),
    (["index", "--help"], None),
    (["index"], None),
    (["search", "index", "q.png"], None),  # `index` as another command's argument
])
def test_index_shorthand_only_where_unambiguous(argv, expanded):
    assert expand_shorthand(argv) == (expanded or argv)


def test_index_actions_are_subcommands():
    parse = build_parser().parse_args
    args = parse(expand_shorthand(["index", "photos", "--out", "ix", "--metric", "cosine"]))
    assert args.run is index_commands.build and (args.source, args.out, args.metric) == ("photos", "ix", "cosine")
    args = parse(["index", "add", "ix", "add"])
    assert args.run is index_commands.add and (args.index, args.source, args.model) == ("ix", "add", None)
    args = parse(["index", "info", "ix", "--json"])
    assert args.run is index_commands.info and args.json


@pytest.mark.parametrize("command", [["search", "ix", "--id", "1"], ["grid", "ix", "--out", "g.png"], ["demo"],
                                     ["bench"]])
@pytest.mark.parametrize("k, message", [("0", "k=0 is out of range"), ("-2", "k=-2 is out of range"),
                                        ("abc", "k='abc' is not an integer"), ("1.5", "k='1.5' is not an integer")])
def test_k_is_checked_the_same_everywhere(command, k, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*command, "-k", k])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"argument -k/--k: {message}" in lines[0], lines
