"""Kill a real `lookalike index add` process at random moments: the index must always open
whole, at its old or its new state, and a rerun must finish the job."""

import resource
import signal
import subprocess
import sys
import time

import numpy as np
from lookalike.index import Index
from lookalike.sources import SampleSource


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "lookalike", "-q", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _assert_whole(path, allowed):
    index = Index(path)  # opens, sizes and checksums verify
    assert index.count in allowed
    assert index.vectors().shape == (index.count, 1472)
    assert len(index.images()) == index.count
    return index.count


def test_kill_9_at_random_points_never_leaves_a_broken_index(tmp_path):
    Index.build(SampleSource(30, seed=1), tmp_path / "ix", progress=False)
    np.save(tmp_path / "more.npy", SampleSource(300, seed=2).images)
    rng = np.random.default_rng(0)
    states = set()
    for delay in rng.uniform(0.3, 6.0, 8):
        proc = _cli("index", "add", str(tmp_path / "ix"), str(tmp_path / "more.npy"))
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        count = _assert_whole(tmp_path / "ix", {30, 330, 630, 930})
        states.add(count)
        if count > 30:
            break  # one add committed; the invariant held at every kill before it
    proc = _cli("index", "add", str(tmp_path / "ix"), str(tmp_path / "more.npy"))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    final = _assert_whole(tmp_path / "ix", {330, 630})
    assert final > max(states) - 1


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_disk_full_while_writing_is_one_line_and_changes_nothing(tmp_path):
    Index.build(SampleSource(20, seed=1), tmp_path / "ix", progress=False)
    np.save(tmp_path / "more.npy", SampleSource(100, seed=2).images)
    before = sorted(p.name for p in (tmp_path / "ix" / "vectors").iterdir())
    proc = _cli("index", "add", str(tmp_path / "ix"), str(tmp_path / "more.npy"), preexec_fn=_limit_file_size)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "cannot write" in err and "disk full" in err
    assert _assert_whole(tmp_path / "ix", {20}) == 20
    assert sorted(p.name for p in (tmp_path / "ix" / "vectors").iterdir()) == before


def test_permission_denied_is_one_line_and_changes_nothing(tmp_path, monkeypatch, capsys):
    """Root ignores file modes here, so the refusal is injected where the segment is written."""
    from lookalike.cli import main
    from lookalike.index import store

    Index.build(SampleSource(20, seed=1), tmp_path / "ix", progress=False)
    np.save(tmp_path / "more.npy", SampleSource(10, seed=2).images)
    before = sorted(p.name for p in (tmp_path / "ix" / "vectors").iterdir())

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store.np, "save", refuse)
    code = main(["-q", "index", "add", str(tmp_path / "ix"), str(tmp_path / "more.npy")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "cannot write (Permission denied)" in err
    monkeypatch.undo()
    assert _assert_whole(tmp_path / "ix", {20}) == 20
    assert sorted(p.name for p in (tmp_path / "ix" / "vectors").iterdir()) == before
