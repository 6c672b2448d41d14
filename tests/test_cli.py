"""Bad input at the command line: one line naming the problem, non-zero exit, no traceback."""

import json
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


def test_embed_then_bench_on_features(tmp_path, capsys, monkeypatch):
    from lookalike import bench

    monkeypatch.setattr(bench, "_spawn", bench.worker)  # each backend in this process: quicker
    out = tmp_path / "f.npy"
    assert main(["-q", "embed", "sample:60", "--out", str(out)]) == 0
    assert np.load(out).shape == (60, 1472)
    assert "wrote" in capsys.readouterr().out
    bench_out = tmp_path / "b"
    assert main(["-q", "bench", "--features", str(out), "--backends", "lookalike,sklearn",
                 "--out", str(bench_out)]) == 0
    printed = capsys.readouterr().out
    assert "workload: 6 queries x 54 base x 1472-d, k=3" in printed and "verified on 6 queries" in printed
    result = json.loads((bench_out / "bench.json").read_text())
    assert result["workload"]["source"] == str(out) and result["disagree"] == []
    ours = result["results"][0]
    assert ours["backend"] == "lookalike" and ours["frac_neighbor_sets_differ"] == 0.0


def test_model_list_and_summary(capsys):
    from lookalike.features import Embedder

    assert main(["model", "list"]) == 0
    listed = capsys.readouterr().out
    # the length each model's default vectors have, as embed writes them (mid-level parts counted)
    dim = Embedder("efficientnet_lite0", weights="none", progress=False).dim
    assert f"efficientnet_lite0   {dim}-d (1280 final + {dim - 1280} mid-level" in listed
    assert "resnet50             2048-d  max pooling, euclidean" in listed
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


def test_another_command_after_index_is_named_as_a_mistake(tmp_path, monkeypatch, capsys):
    """`lookalike index search IX Q` meant `lookalike search IX Q`: one line that says so, not
    `index build`'s "--out is required" (the word taken for a source)."""
    monkeypatch.chdir(tmp_path)
    assert main(["index", "search", "ix", "q.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lookalike: error: index search: search is not an action of index but a command of its own: "
                   "lookalike search ... (see 'lookalike search --help')"]
    (tmp_path / "search").mkdir()  # a folder of that name is a source as any other
    assert expand_shorthand(["index", "search", "--out", "ix"]) == ["index", "build", "search", "--out", "ix"]
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(index_commands.COMMANDS) == set(commands) - {"index"}


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
    (KeyboardInterrupt(), 130, "lookalike: interrupted"),  # show keeps nothing: promises no resumption
])
def test_errors_by_type_one_line(raised, code, line, monkeypatch, capsys, tmp_path):
    """A LookalikeError (InvalidParameter is a ValueError too), an OSError, Ctrl-C: one line."""
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr("lookalike.sources.open_source", fail)
    assert main(["show", "sample:5", "--out", str(tmp_path / "s.png")]) == code
    assert capsys.readouterr().err.splitlines() == [line]


def test_only_a_resumable_command_promises_to_resume(monkeypatch, capsys, tmp_path):
    """Ctrl-C in embed, index build or add, fetch or the demo: finished work is kept and the
    same command resumes; in any other command nothing is promised."""
    from lookalike.cli import RESUMABLE, build_parser

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lookalike.sources.open_source", interrupted)
    assert main(["embed", "sample:5", "--out", str(tmp_path / "f.npy")]) == 130
    assert capsys.readouterr().err.splitlines() == [
        "lookalike: interrupted; finished work is kept, run the same command again to resume"]
    assert main(["index", "build", "sample:5", "--out", str(tmp_path / "ix")]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert main(["eval", "sample:5", "--out", str(tmp_path / "ev")]) == 130
    assert capsys.readouterr().err.splitlines() == ["lookalike: interrupted"]
    parse = build_parser().parse_args
    named = {"fetch": ["fetch", "stl10"], "embed": ["embed", "x", "--out", "f.npy"], "demo": ["demo"],
             "index build": ["index", "build", "x", "--out", "ix"], "index add": ["index", "add", "ix", "x"]}
    assert set(named) == RESUMABLE
    from lookalike.cli import _resumes
    assert all(_resumes(parse(argv)) for argv in named.values())
    assert not any(_resumes(parse(argv)) for argv in (["index", "compact", "ix"], ["search", "ix", "q.png"]))


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


def _numeric_options(parser, command=""):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _numeric_options(sub, f"{command} {name}".strip())
        elif action.option_strings and action.type is not None and action.type not in (str,):
            yield command, action


def test_every_number_a_user_can_type_is_bounded():
    """No numeric option keeps a plain int/float: each has a bound (common.BOUNDS, README Limits)."""
    from lookalike.cli.common import UNBOUNDED

    options = list(_numeric_options(build_parser()))
    assert len(options) >= 15
    for command, action in options:
        assert action.type not in UNBOUNDED, (command, action.option_strings)
        with pytest.raises(Exception):  # argparse.ArgumentTypeError or ValueError: never accepted
            action.type("99999999999999999999999999")


@pytest.mark.parametrize("argv, fragment", [
    (["show", "sample:4", "--seed", "-1", "--out", "s.png"], "argument --seed: -1 is out of range: 0 to 4294967295"),
    (["show", "sample:4", "--n", "1000000", "--out", "s.png"], "argument --n: 1000000 is out of range: 1 to 100"),
    (["grid", "ix", "--seed", "-1", "--out", "g.png"], "argument --seed: -1 is out of range"),
    (["grid", "ix", "--query-ids", "99999999999999999999999", "--out", "g.png"], "(23 digits) is out of range"),
    (["search", "ix", "--id", "-1"], "argument --id: -1 is out of range"),
    (["model", "summary", "resnet50", "--input-size", "100000"], "argument --input-size: 100000 is out of range: 32"),
    (["embed", "sample:4", "--input-size", "3000", "--out", "f.npy"], "3000 is out of range: 32 to 1024"),
    (["embed", "sample:4", "--batch-size", "100000", "--out", "f.npy"], "100000 is out of range: 1 to 4096"),
    (["embed", "sample:4", "--gpu-memory", "nan", "--out", "f.npy"], "nan MiB is out of range"),
    (["embed", "sample:4", "--gpu-memory=-inf", "--out", "f.npy"], "-inf MiB is out of range"),
    (["bench", "--nb", "1000000000"], "argument --nb: 1000000000 is out of range: 1 to 100000000"),
    (["bench", "--d", "nan"], "argument --d: 'nan' is not an integer"),
    (["search", "ix", "--id", "1", "-k", "1000000"], "k=1000000 is out of range: at most 100000"),
])
def test_numbers_out_of_bounds_are_one_line(argv, fragment, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and fragment in lines[0], lines


def test_ctrl_c_while_the_parser_loads_is_130(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["model", "list"]) == 130
    assert capsys.readouterr().err.startswith("lookalike: interrupted")


def test_ctrl_c_while_python_imports_the_cli_is_130(monkeypatch, capsys):
    import builtins

    from lookalike import __main__ as entry_point

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "cli" or name.endswith(".cli"):
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert entry_point.entry() == 130
    assert capsys.readouterr().err == "lookalike: interrupted\n"


def test_ctrl_c_in_the_first_second_of_a_real_process():
    import os
    import signal
    import time

    def as_from_a_shell():  # Ctrl-C's default disposition, unblocked, whatever this test process's is
        # (in the whole suite an earlier test left it ignored or blocked, and the child inherited that)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    for delay in (0.1, 0.4, 1.0):
        proc = subprocess.Popen([sys.executable, "-m", "lookalike", "model", "summary", "resnet50"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ,
                                preexec_fn=as_from_a_shell)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err and proc.returncode in (130, -signal.SIGINT), (delay, proc.returncode, err)


HELD = """
import os, signal
from lookalike.cli import _interrupts_held

seen = []

def loads():
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):  # Python checks for a signal between bytecodes: none may come here
        seen.append(1)

try:
    _interrupts_held(loads)
    print("not raised")
except KeyboardInterrupt:
    print("raised after", len(seen), signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set()))
"""


def test_an_interrupt_while_the_parser_loads_is_held_until_it_is_built():
    """Ctrl-C while `build_parser` imports torch and numba is held back (their C++
    initialisation aborted the process, exit -6, when one landed inside it) and comes
    right after: a KeyboardInterrupt, which `main` turns into exit 130. In a process of its
    own, as at a command line's start (one thread; in this test process, other threads would
    take a signal sent to the process)."""
    import signal

    def as_from_a_shell():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    proc = subprocess.run([sys.executable, "-c", HELD], capture_output=True, text=True, timeout=120,
                          preexec_fn=as_from_a_shell)
    assert proc.stdout.strip() == "raised after 1000 False", (proc.stdout, proc.stderr)


def test_bench_exits_1_naming_a_backend_that_disagrees(tmp_path, monkeypatch, capsys):
    from lookalike import bench

    real_check = bench.check
    calls = []

    def check(*args, **kwargs):  # the second backend checked gets a wrong answer
        calls.append(1)
        return real_check(*args, **kwargs) | ({"agree": False, "frac_neighbor_sets_differ_beyond_ties": 0.25}
                                              if len(calls) == 2 else {})

    monkeypatch.setattr(bench, "check", check)
    monkeypatch.setattr(bench, "_spawn", bench.worker)  # in this process: quicker
    code = main(["-q", "bench", "--nb", "200", "--nq", "10", "--d", "8", "--backends", "lookalike,sklearn",
                 "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("lookalike: error: disagree with the float64 reference: sklearn (25.00%")


def test_running_out_of_memory_is_one_line(monkeypatch, capsys, tmp_path):
    def too_much(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.28 TiB for an array with shape (1000000000000,)")

    monkeypatch.setattr("lookalike.sources.open_source", too_much)
    assert main(["show", "sample:5", "--out", str(tmp_path / "s.png")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "lookalike: error: out of memory (Unable to allocate 7.28 TiB for an array with shape (1000000000000,)); "
        "ask for less"]
