"""Several real writer processes on one index, a reader searching all the while, and a writer
killed with SIGKILL in the middle of its work: every image lands exactly once, the reader
never errors, the index verifies, and the killed writer's rerun resumes its own work."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lookalike.features import embed as embed_mod
from lookalike.index import Index
from lookalike.sources import open_source

SRC = str(Path(__file__).resolve().parents[2] / "src")
WRITER = """
import sys
from lookalike.features import embed
from lookalike.index import Index
from lookalike.sources import open_source
embed.CHUNK = 32  # small resumable pieces, so that a kill falls between two of them
index = Index(sys.argv[1], lock_timeout=300)
for spec in sys.argv[2:]:
    index.add_images(open_source(spec, size=32), progress=False)
"""
READER = """
import json, sys, time
import numpy as np
from pathlib import Path
from lookalike.index import Index
searcher = Index(sys.argv[1]).searcher()
stop, counts, searches, errors = Path(sys.argv[2]), set(), 0, []
query = np.asarray(searcher.index.vectors()[:1])
while not stop.exists():
    try:
        D, I = searcher.search_vectors(query, 3)
        assert I.shape == (1, 3) and (I >= 0).all()
        counts.add(searcher.count)
        searches += 1
    except Exception as exc:
        errors.append(repr(exc))
    time.sleep(0.05)
Path(sys.argv[3]).write_text(json.dumps({"searches": searches, "counts": sorted(counts), "errors": errors}))
"""


def start(code: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def landed(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path / "meta.sqlite") as db:
        rows = db.execute("SELECT source, position FROM images WHERE deleted IS NULL").fetchall()
    db.close()
    return rows


@pytest.mark.slow
def test_four_writers_a_reader_and_a_killed_writer(tmp_path, monkeypatch):
    ix = tmp_path / "ix"
    Index.build(open_source("sample:8:1:32"), ix, input_size=32, progress=False)
    batches = [[f"sample:6:{10 + 3 * w + b}:32" for b in range(3)] for w in range(4)]
    victim_spec = "sample:160:99:32"
    reader = start(READER, ix, tmp_path / "stop", tmp_path / "reader.json")
    victim = start(WRITER, ix, victim_spec)
    writers = [start(WRITER, ix, *specs) for specs in batches]
    partial = None
    deadline = time.monotonic() + 240
    while partial is None and time.monotonic() < deadline and victim.poll() is None:
        partial = next((ix / ".writers").glob("*/.features.npy.partial/000000000032.npy"), None)
        time.sleep(0.05)
    assert partial is not None, victim.communicate()
    victim.send_signal(signal.SIGKILL)  # after its second piece of work was saved, before its commit
    victim.wait()
    for w in writers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    (tmp_path / "stop").touch()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    seen = json.loads((tmp_path / "reader.json").read_text())
    assert seen["errors"] == [] and seen["searches"] > 0
    assert set(seen["counts"]) <= {8 + 6 * n for n in range(13)}  # only whole commits were ever seen

    rows = landed(ix)
    assert len(rows) == 8 + 4 * 3 * 6 and len(set(rows)) == len(rows)  # every image once
    assert {s for s, _ in rows} == {"sample:8:1:32", *(s for specs in batches for s in specs)}
    assert Index(ix).problems() == []
    left = [p for p in (ix / ".writers").iterdir()]
    assert left == [partial.parent.parent]  # only the killed writer's work is left, kept for its rerun

    embedded = []
    run = embed_mod.Embedder._embed_run
    monkeypatch.setattr(embed_mod, "CHUNK", 32)
    monkeypatch.setattr(embed_mod.Embedder, "_embed_run",
                        lambda self, source, lo, hi, bar: embedded.append(hi - lo) or run(self, source, lo, hi, bar))
    added = Index(ix).add_images(open_source(victim_spec, size=32), progress=False)
    assert added.added == 160 and len(added.ids) == 160
    assert sum(embedded) <= 160 - 64  # the rerun resumed: the pieces saved before the kill were kept
    rows = landed(ix)
    assert len(rows) == 8 + 72 + 160 and len(set(rows)) == len(rows)
    assert Index(ix).problems() == [] and list((ix / ".writers").iterdir()) == []
