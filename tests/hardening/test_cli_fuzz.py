"""The command line fuzzed with plausible-but-wrong values, in process (`lookalike.cli.main`).

Whatever the arguments, a command ends in 0, 1, 2 or 130 (never 70, a bug), prints no
traceback, says a usage or data error (2) in exactly one line and each failed input (1) in
one line of its own, and changes no file outside its temporary folder. Commands that load
a CNN (embed, index build, demo) are slow: they get a few explicit examples instead.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalike import bench as bench_module
from lookalike.cli import main

REPO = Path(__file__).resolve().parents[2]
NUMBERS = ["-1", "0", "1", "2", "3", "7", "100", "101", "4097", "99999999999999999999999", "-5e3", "nan", "inf",
           "-inf", "1e9", "1.5", "abc", "", " ", "١٢", "😀", "0x10", "1_0", "--", "-"]
SMALL = ["-1", "0", "1", "2", "3", "7", "40", "nan", "inf", "1.5", "abc", "", "99999999999999999999999"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A temporary folder with an index of sample:12 and files of every wrong kind."""
    root = tmp_path_factory.mktemp("fuzz")
    saved = os.environ.get("LOOKALIKE_CACHE")
    os.environ["LOOKALIKE_CACHE"] = str(root / "cache")
    with _in(root):
        code, _, err = run(["-q", "index", "sample:12", "--out", str(root / "ix")])
    assert code == 0, err
    (root / "folder").mkdir()
    (root / "text.txt").write_text("hello\n")
    (root / "empty.npy").write_bytes(b"")
    (root / "text.npy").write_text("1,2,3\n")
    (root / "ünïcödé ✓.txt").write_text("x")
    np.save(root / "one_d.npy", np.ones(10, np.float32))
    np.save(root / "three_d.npy", np.ones((20, 3, 2), np.float32))
    np.save(root / "huge.npy", np.full((30, 4), 1e200))
    np.save(root / "feats.npy", np.random.default_rng(0).random((60, 8)).astype(np.float32))
    np.save(root / "images.npy", np.zeros((3, 40, 40, 3), np.uint8))
    yield root
    if saved is None:
        os.environ.pop("LOOKALIKE_CACHE", None)
    else:
        os.environ["LOOKALIKE_CACHE"] = saved


@contextlib.contextmanager
def _in(folder: Path):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse: --help, --version, usage errors
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    return code, out.getvalue(), err.getvalue()


def check(argv: list[str], root: Path) -> int:
    with _in(root):
        code, _, err = run(argv)
    lines = err.strip().splitlines()
    assert code in (0, 1, 2, 130), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        assert len(lines) == 1, (argv, err)
    elif code == 1:
        assert lines and all(line.startswith("lookalike") for line in lines), (argv, err)
    return code


def paths(root: Path) -> list[str]:
    names = ["folder", "text.txt", "empty.npy", "text.npy", "ünïcödé ✓.txt", "one_d.npy", "three_d.npy",
             "huge.npy", "feats.npy", "images.npy", "ix", "missing.npy", "missing/deeper"]
    return [str(root / n) for n in names] + ["", " ", "-"]


@st.composite
def command_lines(draw, root: Path):
    num, small, path = st.sampled_from(NUMBERS), st.sampled_from(SMALL), st.sampled_from(paths(root))
    ix = draw(st.sampled_from([str(root / "ix"), str(root / "ix")] + paths(root)))
    png = str(root / "out" / "x.png")
    opt = lambda name, values: [name, draw(values)] if draw(st.booleans()) else []  # noqa: E731
    source = draw(st.sampled_from(["sample:4", "sample:4:3", "sample:0", "sample:-1", "sample:x", "stl10:" + str(root)])
                  | path)
    kind = draw(st.sampled_from(["show", "search", "grid", "model", "bench", "info", "misc"]))
    if kind == "show":
        outs = list(paths(root))
        return ["show", source, *opt("--n", num), *opt("--seed", num), "--out", draw(st.sampled_from([png, *outs]))]
    if kind == "search":
        images = draw(st.lists(path, max_size=2))
        return ["search", ix, *images, *opt("-k", num), *(["--id", draw(num)] if draw(st.booleans()) else []),
                *(["--json"] if draw(st.booleans()) else [])]
    if kind == "grid":
        ids = ["--query-ids", *draw(st.lists(num, min_size=1, max_size=2))] if draw(st.booleans()) else []
        return ["grid", ix, *opt("--queries", num), *opt("-k", num), *opt("--seed", num), *ids, "--out", png]
    if kind == "model":
        if draw(st.booleans()):
            return ["model", "list"]
        return ["model", "summary", draw(st.sampled_from(["efficientnet_lite0", "resnet50", "vgg", ""])),
                *opt("--input-size", st.sampled_from(["0", "31", "32", "1025", "100000", "-1", "nan", "abc", ""])),
                *opt("--pooling", st.sampled_from(["max", "avg", "none", "sum", ""]))]
    if kind == "bench":
        data = ["--features", draw(path)] if draw(st.booleans()) else ["--nb", draw(small), "--nq", draw(small),
                                                                       "--d", draw(small)]
        return ["bench", *data, *opt("-k", small), *opt("--metric", st.sampled_from(
            ["euclidean", "manhattan", "chebyshev", "cosine", "inner_product", "nonsense", ""])),
            *opt("--backends", st.sampled_from(["lookalike", "sklearn", "faiss,torch", "annoy", "lookalike@int4",
                                                ","])),
            *opt("--repeats", small), *opt("--verify-queries", small),
            *opt("--precision", st.sampled_from(["fp32", "bf16", "int8", "fp8"])),
            "--out", draw(st.sampled_from([str(root / "bench-out"), *paths(root)]))]
    if kind == "info":
        where = draw(st.sampled_from([ix, *paths(root)]))
        return ["index", "info", where, *(["--json"] if draw(st.booleans()) else [])]
    return draw(st.sampled_from([[], ["--version"], ["-h"], ["nonsense"], ["index"], ["index", "info"], ["fetch"],
                                 ["fetch", "stl10", "--root", str(root / "stl"), "--url", "not-a-url"],
                                 ["fetch", "stl10", "--root", str(root / "text.txt"), "--url", ""],
                                 ["search", ix], ["grid", ix], ["show"], ["bench", "--nb"]]))


def _worker_here(backend, data, k, metric, precision):
    """The bench's worker in this process: the fuzz checks arguments, not process isolation."""
    return bench_module.worker(backend, data, k, metric, precision)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_command_line_ends_well(world, data, monkeypatch):
    monkeypatch.setattr(bench_module, "_spawn", _worker_here)
    before = _snapshot(REPO)
    argv = data.draw(command_lines(world))
    check(["-q", *argv], world)
    assert _snapshot(REPO) == before, argv  # nothing changed outside the temporary folder


@pytest.mark.parametrize("argv", [
    ["embed", "sample:4", "--input-size", "3000", "--out", "f.npy"],
    ["embed", "sample:4", "--batch-size", "0", "--out", "f.npy"],
    ["embed", "sample:4", "--gpu-memory", "nan", "--out", "f.npy"],
    ["embed", "sample:4", "--weights", "text.txt", "--out", "f.npy"],
    ["embed", "sample:4", "--weights", "folder", "--out", "f.npy"],
    ["embed", "sample:4", "--device", "tpu", "--out", "f.npy"],
    ["embed", "sample:4", "--out", "f.csv"],
    ["embed", "sample:3", "--input-size", "32", "--out", "f.npy"],
    ["index", "build", "sample:4", "--out", "ix2", "--metric", "nonsense", "--input-size", "10"],
    ["index", "add", "ix", "text.txt"],
    ["demo", "--n", "5"],
    ["demo", "-k", "0"],
])
def test_slow_commands_with_wrong_values(world, argv):
    before = _snapshot(REPO)
    check(["-q", *argv], world)
    assert _snapshot(REPO) == before


# Found by this fuzz in code outside the numbers/arguments area, reported to its owners:
# sample specs with huge N or SEED (sources/sample.py; a huge SIZE too, left out: it may allocate), an empty .npy source
# (sources/arrays.py: EOFError), a picture written to a .txt/.npy path (report/figures.py:
# matplotlib's ValueError). They stay here until fixed there (then they pass).
# Command lines the first fuzz runs found failing in sources/ and report/ (fixed there since).
FOUND = [
    ["show", "sample:4:99999999999999999999999", "--out", "s.png"],
    ["show", "sample:999999999999", "--out", "s.png"],
    ["show", "empty.npy", "--out", "s.png"],
    ["show", "sample:4", "--out", "text.txt"],
    ["show", "sample:4", "--out", "pic.npy"],
]


@pytest.mark.parametrize("argv", FOUND)
def test_what_the_fuzz_found(world, argv):
    assert check(["-q", *argv], world) == 2  # a user's mistake, said in one line (not the out-of-memory net)


def _snapshot(root: Path) -> dict[str, float]:
    """Modification times of the worktree's files, caches aside."""
    skip = {".git", "__pycache__", ".pytest_cache", ".hypothesis", ".cache-unused", ".venv"}
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        for f in files:
            p = os.path.join(folder, f)
            out[p] = os.stat(p).st_mtime
    return out
