"""Outputs, data loss, resume and the index on disk, as a hostile new user tries them.

Each test asserts one line (or a correct result), the documented exit status, no traceback,
and no change to files that were there before (hashed before and after). Indexes are made
from random vectors where no model is needed, so that the file stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.atomic import atomic_write_text, umask
from lookalike.cli import main
from lookalike.errors import BadIndex, InvalidParameter, SearchError, WriteError
from lookalike.features import Embedder
from lookalike.features import embed as embed_mod
from lookalike.features.files import image_digests
from lookalike.index import Index
from lookalike.sources import SampleSource, open_source

SRC = str(Path(__file__).parents[2] / "src")
CONFIG = {"model": "test", "weights": "random:0", "pooling": "max", "input_shape": [96, 96, 3], "dim": 8}


def cli(*args, user: int | None = None) -> subprocess.CompletedProcess:
    """`lookalike -q ARGS` in a fresh process (as `user`, through setpriv, when given)."""
    prefix = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([*prefix, sys.executable, "-m", "lookalike", "-q", *args], capture_output=True,
                          text=True, env=env)


def one_line(code: int, err: str, fragment: str, expected: int) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert code == expected and len(lines) == 1 and fragment in lines[0], (code, err)


def refused(capsys, argv: list[str], fragment: str, expected: int = 2) -> None:
    """`lookalike ARGS` in this process ends in one line holding `fragment`, with `expected`."""
    code = main(["-q", *argv])
    one_line(code, capsys.readouterr().err, fragment, expected)


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def small_index(path: Path, source=None, digests=None) -> Index:
    source = source or SampleSource(12, seed=3)
    vectors = np.random.default_rng(0).random((len(source), 8), dtype=np.float32)
    return Index.from_features(vectors, source, CONFIG, path, digests=digests)


# -- outputs are checked before the work, and never an input ----------------------------------
def test_embed_out_is_its_own_input(tmp_path, capsys):
    np.save(tmp_path / "mine.npy", SampleSource(4, seed=1).images)
    (tmp_path / "link.npy").symlink_to(tmp_path / "mine.npy")
    before = hashes(tmp_path)
    refused(capsys, ["embed", str(tmp_path / "mine.npy"), "--out", str(tmp_path / "mine.npy")], "is also an input")
    refused(capsys, ["embed", str(tmp_path / "link.npy"), "--out", str(tmp_path / "mine.npy")], "is also an input")
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("out, fragment, code", [
    ("dir.npy", "dir.npy: is a folder", 2),
    ("missing/f.npy", "missing: no such folder", 2),
    ("f.csv", "wrong extension for the features", 2),
    ("/proc/f.npy", "/proc/f.npy: cannot write", 1),
])
def test_embed_out_checked_before_any_work(tmp_path, capsys, monkeypatch, out, fragment, code):
    (tmp_path / "dir.npy").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Embedder, "__init__", lambda *a, **k: pytest.fail("a model was loaded"))
    before = hashes(tmp_path)
    refused(capsys, ["embed", "sample:4", "--out", out], fragment, code)
    assert hashes(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["dir.npy"]


def test_a_sidecar_lookalike_did_not_write_is_kept(tmp_path, capsys):
    (tmp_path / "f.json").write_text('{"my": "notes"}')
    before = hashes(tmp_path)
    refused(capsys, ["embed", "sample:4", "--out", str(tmp_path / "f.npy")], "not a sidecar lookalike wrote")
    assert hashes(tmp_path) == before


def test_a_sidecar_lookalike_wrote_is_replaced(tmp_path, capsys):
    out = tmp_path / "f.npy"
    assert main(["-q", "embed", "sample:3", "--out", str(out)]) == 0
    assert main(["-q", "embed", "sample:5", "--out", str(out)]) == 0
    assert json.loads((tmp_path / "f.json").read_text())["shape"] == [5, 1472]
    assert f"wrote {out} (5, 1472)" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["show", "grid"])
@pytest.mark.parametrize("out, fragment", [
    ("D", "D: is a folder"), ("noext", "wrong extension for the picture"), ("x.txt", "wrong extension"),
])
def test_picture_out_checked_up_front(tmp_path, capsys, monkeypatch, command, out, fragment):
    small_index(tmp_path / "ix")
    (tmp_path / "D").mkdir()
    monkeypatch.chdir(tmp_path)
    before = hashes(tmp_path)
    source = "sample:4" if command == "show" else "ix"
    refused(capsys, [command, source, "--out", out], fragment)
    assert hashes(tmp_path) == before and not list(tmp_path.glob("noext*")) + list(tmp_path.glob("D.*"))


@pytest.mark.parametrize("name", ["s.jpg", "s.pdf", "s.svg", "s.png"])
def test_picture_written_in_the_format_named_and_reported(tmp_path, capsys, name):
    assert main(["-q", "show", "sample:4", "--out", str(tmp_path / name)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / name}"
    head = (tmp_path / name).read_bytes()[:8]
    assert {"jpg": b"\xff\xd8", "pdf": b"%PDF", "svg": b"<?xml", "png": b"\x89PNG"}[name[2:]] in head
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left


def test_show_does_not_overwrite_one_of_its_images(tmp_path, capsys):
    (tmp_path / "ph").mkdir()
    for i, im in enumerate(SampleSource(3, seed=2).images):
        Image.fromarray(im).save(tmp_path / "ph" / f"{i}.png")
    before = hashes(tmp_path)
    refused(capsys, ["show", str(tmp_path / "ph"), "--out", str(tmp_path / "ph" / "1.png")], "is a file of the input")
    assert hashes(tmp_path) == before


def test_grid_does_not_overwrite_an_indexed_image(tmp_path, capsys):
    (tmp_path / "ph").mkdir()
    for i, im in enumerate(SampleSource(4, seed=2).images):
        Image.fromarray(im).save(tmp_path / "ph" / f"{i}.png")
    small_index(tmp_path / "ix", open_source(tmp_path / "ph", progress=False))
    before = hashes(tmp_path)
    refused(capsys, ["grid", str(tmp_path / "ix"), "-k", "1", "--out", str(tmp_path / "ph" / "0.png")],
            "is a file of the input")
    assert hashes(tmp_path) == before


def test_build_out_names_the_path_asked_for(tmp_path, capsys):
    refused(capsys, ["index", "build", "sample:4", "--out", "/proc/x"], "/proc/x: cannot write", 1)
    with pytest.raises(WriteError, match="^/proc/x: cannot write"):
        small_index(Path("/proc/x"))
    (tmp_path / "f").write_text("mine")
    refused(capsys, ["index", "build", "sample:4", "--out", str(tmp_path / "f")], "is a file")
    assert (tmp_path / "f").read_text() == "mine"


def test_staging_folder_of_someone_else_is_refused_and_kept(tmp_path):
    (tmp_path / ".ix.building").mkdir()
    (tmp_path / ".ix.building" / "thesis.tex").write_text("years of work")
    before = hashes(tmp_path)
    with pytest.raises(InvalidParameter, match="holds files lookalike did not write"):
        small_index(tmp_path / "ix")
    assert hashes(tmp_path) == before and not (tmp_path / "ix").exists()


def test_files_get_the_mode_open_would_give(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask()
    os.chmod(tmp_path / "a.txt", 0o640)
    atomic_write_text(tmp_path / "a.txt", "y")  # replacing a file keeps its mode, as open() does
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


def test_no_matplotlib_warnings_for_names_in_other_scripts(tmp_path):
    from lookalike.report.grids import sample_grid

    (tmp_path / "ph").mkdir()
    for name, im in zip(["日本語.png", "a\tb.png", "😀.png"], SampleSource(3).images):
        Image.fromarray(im).save(tmp_path / "ph" / name)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        sample_grid(open_source(tmp_path / "ph", progress=False), 3, out=tmp_path / "s.png")
    assert not [str(w.message) for w in seen]


# -- the demo's output folder ----------------------------------------------------------------
def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    small_index(proj / "index")
    (proj / "report.md").write_text("my notes")
    (proj / "features.npy").write_bytes(b"mine")
    before = hashes(proj)
    refused(capsys, ["demo", "--out", str(proj), "--n", "50"], "holds files lookalike did not write")
    shutil.rmtree(proj / "index")
    (proj / "index").mkdir()
    (proj / "index" / "keep.txt").write_text("mine")
    before = hashes(proj)
    refused(capsys, ["demo", "--out", str(proj), "--n", "50", "--force"], "index: holds files lookalike did not")
    refused(capsys, ["demo", "--out", str(proj / "report.md"), "--n", "50"], "is a file, not a folder")
    assert hashes(proj) == before


def test_demo_takes_its_own_folder_back(tmp_path):
    from lookalike.atomic import make_own_folder
    from lookalike.demo import KIND, check_demo_out

    proj = make_own_folder(tmp_path / "proj", KIND)
    small_index(proj / "index")
    assert check_demo_out(proj) == proj  # a second run replaces its own index
    (proj / "index" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidParameter, match="holds files lookalike did not write"):
        check_demo_out(proj, force=True)


# -- resume is tied to the pixels read -----------------------------------------------------------
def _interrupted(embed, after_calls: int):
    calls = []
    original = embed._forward

    def dies(x):
        calls.append(len(x))
        if len(calls) == after_calls:
            raise KeyboardInterrupt
        return original(x)

    embed._forward = dies
    return embed


def test_resume_does_not_reuse_chunks_of_replaced_images(tmp_path, monkeypatch):
    monkeypatch.setattr(embed_mod, "CHUNK", 4)
    old, new = SampleSource(12, seed=1).images, SampleSource(12, seed=2).images
    np.save(tmp_path / "images.npy", old)
    with pytest.raises(KeyboardInterrupt):
        _interrupted(Embedder(progress=False, batch_size=4), 3).embed(open_source(tmp_path / "images.npy"),
                                                                     tmp_path / "f.npy")
    assert len(list((tmp_path / ".f.npy.partial").glob("0*.npy"))) == 2
    np.save(tmp_path / "images.npy", np.concatenate([old[:4], new[4:]]))  # same shape, other pictures
    e = Embedder(progress=False, batch_size=4)
    seen = []
    original = e._forward
    e._forward = lambda x: (seen.append(len(x)), original(x))[1]
    resumed = e.embed(open_source(tmp_path / "images.npy"), tmp_path / "f.npy")
    assert sum(seen) == 8  # the first chunk is the same and kept; the second changed and was redone
    fresh = Embedder(progress=False, batch_size=4).embed_array(np.load(tmp_path / "images.npy"))
    np.testing.assert_allclose(resumed, fresh, rtol=1e-4, atol=1e-4)


def test_a_work_folder_with_foreign_files_is_not_cleared(tmp_path):
    work = tmp_path / ".f.npy.partial"
    work.mkdir()
    (work / "job.json").write_text("{}")
    (work / "mine.txt").write_text("keep")
    with pytest.raises(InvalidParameter, match="'mine.txt', which lookalike did not write"):
        Embedder(progress=False).embed(SampleSource(2), tmp_path / "f.npy")
    assert (work / "mine.txt").read_text() == "keep"


# -- the index on disk ------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX modes")
def test_a_read_only_index_is_searched_and_described():
    user = None
    if os.geteuid() == 0:  # root writes anywhere: run as nobody, as a service would
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv cannot see a read-only folder")
        user = 65534
    base = Path(tempfile.mkdtemp(prefix="lookalike-ro-"))  # pytest's own folders are private to root
    os.chmod(base, 0o755)
    ro = base / "ro"
    small_index(ro)
    for p in [ro, *ro.rglob("*")]:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    before = hashes(ro)
    try:
        proc = cli("search", str(ro), "--id", "2", "-k", "3", user=user)
        assert proc.returncode == 0 and proc.stdout.count("distance") == 3, proc.stderr
        proc = cli("index", "info", str(ro), user=user)
        assert proc.returncode == 0 and "count           12" in proc.stdout, proc.stderr
        proc = cli("index", "add", str(ro), "sample:2", user=user)
        one_line(proc.returncode, proc.stderr, "cannot write", 1)
        assert hashes(ro) == before and sorted(p.name for p in ro.iterdir()) == ["manifest.json", "meta.sqlite",
                                                                                  "vectors"]
    finally:
        for p in [ro, *ro.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        shutil.rmtree(base)


def test_k_message_when_searching_by_id(tmp_path, capsys):
    index = small_index(tmp_path / "ix")
    assert len(index.search_ids([0], 11)[0].neighbours) == 11
    with pytest.raises(SearchError, match="holds 12 image.s., 11 besides the query, so 1 <= k <= 11"):
        index.search_ids([0], 12)
    refused(capsys, ["search", str(tmp_path / "ix"), "--id", "0", "-k", "12"], "11 besides the query")
    refused(capsys, ["grid", str(tmp_path / "ix"), "-k", "12", "--out", str(tmp_path / "g.png")],
            "11 besides the query")


def test_a_file_given_as_index(tmp_path, capsys):
    (tmp_path / "f.npy").write_bytes(b"x")
    refused(capsys, ["search", str(tmp_path / "f.npy"), "--id", "1"], "is a file, not an index folder")
    refused(capsys, ["index", "info", str(tmp_path / "f.npy")], "is a file, not an index folder")


@pytest.mark.parametrize("damage, fragment, quick_code", [
    ("truncate", "truncated or damaged", 2), ("remove", "vector segment missing", 2),
    ("flip", "checksum mismatch", 0),
])
def test_info_says_when_vector_files_are_damaged(tmp_path, capsys, damage, fragment, quick_code):
    small_index(tmp_path / "ix")
    seg = next((tmp_path / "ix" / "vectors").iterdir())
    data = bytearray(seg.read_bytes())
    if damage == "truncate":
        seg.write_bytes(bytes(data[:-40]))
    elif damage == "remove":
        seg.unlink()
    else:
        data[-5] ^= 0x10
        seg.write_bytes(bytes(data))
    refused(capsys, ["index", "info", str(tmp_path / "ix")], fragment)
    code = main(["-q", "index", "info", str(tmp_path / "ix"), "--quick"])
    assert code == quick_code
    capsys.readouterr()


def test_grid_when_the_source_shrank_or_changed(tmp_path, capsys):
    images = SampleSource(8, seed=4).images
    np.save(tmp_path / "a.npy", images)
    source = open_source(tmp_path / "a.npy")
    index = small_index(tmp_path / "ix", source, image_digests(images))
    np.testing.assert_array_equal(index.read_pixels([6]), images[[6]])
    np.save(tmp_path / "a.npy", images[:5])  # fewer images now
    assert main(["-q", "grid", str(tmp_path / "ix"), "--query-ids", "6", "-k", "2",
                 "--out", str(tmp_path / "g.png")]) == 0
    assert not Index(tmp_path / "ix").read_pixels([6]).any()  # a black tile stands in
    np.save(tmp_path / "a.npy", images[::-1])  # same shape, other pictures at each place
    assert not Index(tmp_path / "ix").read_pixels([2]).any()  # not another picture under its name
    capsys.readouterr()


def test_re_adding_the_same_images_skips_them(tmp_path, capsys):
    np.save(tmp_path / "a.npy", SampleSource(6, seed=5).images)
    index = Index.build(open_source(tmp_path / "a.npy"), tmp_path / "ix", progress=False)
    code = main(["-q", "index", "add", str(tmp_path / "ix"), str(tmp_path / "a.npy")])
    out = capsys.readouterr().out
    assert code == 0 and "added 0 image(s)" in out and "6 -> 6; skipped 6 already in the index" in out
    images = SampleSource(6, seed=5).images
    images[2] = SampleSource(6, seed=6).images[2]  # one picture changed at its place
    np.save(tmp_path / "a.npy", images)
    assert index.add_images(open_source(tmp_path / "a.npy"), progress=False).__dict__ == {"added": 1,
                                                                                          "duplicates": 5, "ids": [6]}
    assert index.add(open_source(tmp_path / "a.npy"), progress=False, keep_duplicates=True) == 6
    assert Index(tmp_path / "ix").count == 13


def test_a_format_1_index_is_read_and_its_duplicates_found_by_vector(tmp_path):
    np.save(tmp_path / "a.npy", SampleSource(5, seed=7).images)
    Index.build(open_source(tmp_path / "a.npy"), tmp_path / "ix", progress=False)
    with sqlite3.connect(tmp_path / "ix" / "meta.sqlite") as db:  # as lookalike 0.x wrote it
        db.execute("ALTER TABLE images DROP COLUMN digest")
        db.execute("UPDATE manifest SET value='1' WHERE key='format_version'")
    db.close()
    index = Index(tmp_path / "ix")
    assert index.search_ids([0], 2)[0].neighbours and index.manifest["format_version"] == 1
    assert index.add_images(open_source(tmp_path / "a.npy"), progress=False).__dict__ == {"added": 0,
                                                                                          "duplicates": 5, "ids": []}
    assert index.add(SampleSource(3, seed=8), progress=False) == 3
    assert Index(tmp_path / "ix").manifest["format_version"] == 3 and Index(tmp_path / "ix").count == 8


def test_unreadable_index_database_is_one_line(tmp_path):
    small_index(tmp_path / "ix")
    (tmp_path / "ix" / "meta.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(BadIndex, match="unreadable index database"):
        Index(tmp_path / "ix")


def test_show_when_no_drawn_image_decodes(tmp_path, capsys):
    (tmp_path / "ph").mkdir()
    for i in range(2):  # headers read, pixels cut off: they fail only when decoded
        Image.fromarray(SampleSource(2).images[i]).save(tmp_path / "ph" / f"{i}.jpg")
        data = (tmp_path / "ph" / f"{i}.jpg").read_bytes()
        (tmp_path / "ph" / f"{i}.jpg").write_bytes(data[: len(data) // 3])
    refused(capsys, ["show", str(tmp_path / "ph"), "--out", str(tmp_path / "s.png")], "none of the 2 image(s)")
    assert not (tmp_path / "s.png").exists()


def _small_files():
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


@pytest.mark.parametrize("args, name", [(["index", "build", "sample:40", "--out", "ix"], "ix"),
                                        (["embed", "sample:40", "--out", "f.npy"], "f.npy")])
def test_disk_full_names_the_output_asked_for(tmp_path, args, name):
    proc = subprocess.run([sys.executable, "-m", "lookalike", "-q", *args], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": SRC}, preexec_fn=_small_files)
    one_line(proc.returncode, proc.stderr, f"lookalike: error: {name}: cannot write", 1)
    assert not (tmp_path / name).exists()


def test_an_in_memory_set_is_refused_before_the_work(tmp_path, monkeypatch):
    from lookalike.errors import SourceError
    from lookalike.sources import ArraySource

    monkeypatch.setattr(Embedder, "embed_rows", lambda *a, **k: pytest.fail("images were embedded"))
    with pytest.raises(SourceError, match="in-memory image set cannot be indexed"):
        Index.build(ArraySource(SampleSource(3).images), tmp_path / "ix", progress=False)
    assert not list(tmp_path.iterdir())


def test_work_left_by_an_older_lookalike_is_taken_over(tmp_path):
    """Staging and work folders an older version left (no marker, format-1 chunks) are its own:
    redone, not refused and not trusted."""
    work = tmp_path / ".ix.building" / ".features.npy.partial"
    work.mkdir(parents=True)
    (work / "job.json").write_text('{"n": 3}')
    np.save(work / "000000000000.npy", np.zeros((3, 1472), np.float32))
    (work / "000000000000.failed.json").write_text("[]")
    index = Index.build(SampleSource(3, seed=1), tmp_path / "ix", progress=False)
    assert np.asarray(index.vectors()).any() and sorted(p.name for p in tmp_path.iterdir()) == ["ix"]
