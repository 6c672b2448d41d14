"""Bad input at the command line: one line naming the problem, non-zero exit, no traceback."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from lookalike import cli
from lookalike.cli import build_parser, main
from lookalike.cli import index as index_commands
from lookalike.cli.index import expand_shorthand
from lookalike.errors import InvalidParameter, SourceError, WriteError
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


def _numpy_value_error():
    return np.zeros(3).reshape(2, 2)


@pytest.mark.parametrize("raised, code, line", [
    (InvalidParameter("--n: 0 is too few"), 2, "lookalike: error: --n: 0 is too few"),
    (SourceError("photos: no such file or folder"), 2, "lookalike: error: photos: no such file or folder"),
    (WriteError("out.png: cannot write (disk full)"), 1, "lookalike: error: out.png: cannot write (disk full)"),
    (PermissionError(13, "Permission denied", "out.png"), 1, "lookalike: error: out.png: Permission denied"),
    (KeyboardInterrupt(), 130, "lookalike: interrupted; finished work is kept, run the same command again to resume"),
])
def test_errors_by_type_one_line(raised, code, line, monkeypatch, capsys, tmp_path):
    """A LookalikeError (InvalidParameter is a ValueError too), an OSError, Ctrl-C: one line."""
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr("lookalike.sources.open_source", fail)
    assert main(["show", "sample:5", "--out", str(tmp_path / "s.png")]) == code
    assert capsys.readouterr().err.splitlines() == [line]


@pytest.mark.parametrize("bug, kind", [
    (lambda: 1 / 0, "ZeroDivisionError: division by zero"),
    (_numpy_value_error, "ValueError: cannot reshape array of size 3 into shape (2,2)"),
    (lambda: len(5), "TypeError: object of type 'int' has no len()"),
])
def test_a_bug_keeps_its_traceback(bug, kind, monkeypatch, capsys, tmp_path):
    """A plain ValueError or TypeError is not taken for a user's mistake, wherever it comes from."""
    monkeypatch.setattr("lookalike.sources.open_source", lambda *args, **kwargs: bug())
    assert main(["show", "sample:5", "--out", str(tmp_path / "s.png")]) == cli.EXIT_INTERNAL == 70
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Traceback (most recent call last):" and lines[-2] == kind
    assert lines[-1] == "lookalike: internal error (a bug; please report it with the traceback above)"


def test_a_user_mistake_in_a_subprocess_is_one_line(tmp_path):
    proc = run_cli("index", "info", str(tmp_path / "nope"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"lookalike: error: {tmp_path / 'nope'}: no such index folder"]


def test_not_a_url_is_a_download_error(tmp_path):
    assert_one_line_error(run_cli("fetch", "stl10", "--root", str(tmp_path), "--url", "not-a-url"),
                          "not-a-url: not a URL")
