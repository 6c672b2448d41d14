"""The on-disk index: vectors in .npy segments, metadata and manifest in SQLite.

    INDEX/
      meta.sqlite      images (id, key, source, position, location, label, added), the
                       manifest, and the list of committed vector segments with checksums
      manifest.json    a readable copy of the manifest, rewritten after each commit
      vectors/seg-NNNNNN-<token>.npy   float32 (n, d), memory-mappable

Commit protocol: a new segment is written under a fresh name and flushed to disk first;
then ONE SQLite transaction inserts its rows and records the segment. That transaction is
the commit point: before it, the index is the old one (an unreferenced segment file is
ignored and removed later); after it, the new one. A reader never sees a half-written state.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import BadIndex, write_error
from .segments import SegmentedArray, crc32_file

__all__ = ["FORMAT_VERSION", "CommitWatch", "ImageMeta", "IndexStore", "SegmentedArray", "crc32_file"]

FORMAT_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,      -- row of the vector, 0-based, in commit order
    key TEXT NOT NULL,           -- the id the source gave the image
    source TEXT NOT NULL,        -- the source spec it came from (sample:N:S, stl10:PATH, folder, .npy)
    position INTEGER,            -- its position in that source (STL-10 record number, array row)
    location TEXT NOT NULL,      -- file path, or FILE#record
    label TEXT,                  -- label if known
    added REAL NOT NULL          -- unix time of the commit that added it
);
CREATE TABLE IF NOT EXISTS segments (
    seq INTEGER PRIMARY KEY,
    file TEXT NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    crc32 INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class ImageMeta:
    id: int
    key: str
    source: str
    position: int | None
    location: str
    label: str | None
    added: float


class IndexStore:
    """Low-level access to an index folder: open, read, and commit appended vectors."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.db_path = self.path / "meta.sqlite"

    # -- creation --------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, manifest: dict) -> IndexStore:
        """An empty index in a new folder `path` (which must not exist yet)."""
        store = cls(path)
        store.path.mkdir(parents=True)
        (store.path / "vectors").mkdir()
        with store.connect() as db:
            db.executescript(SCHEMA)
            base = {**manifest, "format_version": FORMAT_VERSION, "count": 0, "created": time.time()}
            db.executemany("INSERT INTO manifest VALUES (?, ?)", [(k, json.dumps(v)) for k, v in base.items()])
        store.write_manifest_json()
        return store

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (transactions are explicit), closed on exit so
        that the write-ahead log is checkpointed and removed when the last one closes."""
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    # -- reading ---------------------------------------------------------------------------
    def manifest(self) -> dict:
        return self.snapshot(segments=False)[0]

    def segments(self) -> list[tuple[str, int, int, int]]:
        with self.connect() as db:
            return self._segments(db)

    @staticmethod
    def _segments(db: sqlite3.Connection) -> list[tuple[str, int, int, int]]:
        return db.execute("SELECT file, rows, bytes, crc32 FROM segments ORDER BY seq").fetchall()

    def snapshot(self, segments: bool = True) -> tuple[dict, list[tuple[str, int, int, int]]]:
        """The manifest and the segment list of one commit, read in one transaction (a
        commit by another process cannot fall between them)."""
        if not self.path.is_dir():
            raise BadIndex(f"{self.path}: no such index folder")
        if not self.db_path.is_file():
            raise BadIndex(f"{self.path}: not a lookalike index (no meta.sqlite)")
        try:
            with self.connect() as db:
                db.execute("BEGIN")
                rows = db.execute("SELECT key, value FROM manifest").fetchall()
                segs = self._segments(db) if segments else []
                db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise BadIndex(f"{self.db_path}: unreadable index database ({exc})") from None
        manifest = {k: json.loads(v) for k, v in rows}
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BadIndex(f"{self.path}: index format {manifest.get('format_version')!r}, "
                           f"this lookalike reads format {FORMAT_VERSION}")
        return manifest, segs

    def vectors(self, verify: bool = True, opened: dict[str, np.ndarray] | None = None) -> SegmentedArray | np.ndarray:
        """All committed vectors, memory-mapped. Sizes are always checked; with `verify`,
        the CRC-32 of every segment too.

        `opened` (segment file -> memory map) carries segments checked before: segments never
        change once committed, so those found there are used without a second check, and the
        new ones are added to it.
        """
        manifest, segments = self.snapshot()
        d = int(manifest["dim"])
        opened = {} if opened is None else opened
        parts = []
        for name, rows, size, crc in segments:
            if name not in opened:
                opened[name] = self._open_segment(name, rows, size, crc, d, verify)
            parts.append(opened[name])
        if sum(len(p) for p in parts) != manifest["count"]:
            raise BadIndex(f"{self.path}: {sum(len(p) for p in parts)} vectors for {manifest['count']} images")
        if len(parts) == 1:
            return parts[0]
        return SegmentedArray(parts, d)

    def _open_segment(self, name: str, rows: int, size: int, crc: int, d: int, verify: bool) -> np.ndarray:
        file = self.path / "vectors" / name
        if not file.is_file():
            raise BadIndex(f"{file}: vector segment missing; the index is damaged")
        if file.stat().st_size != size:
            raise BadIndex(f"{file}: size {file.stat().st_size} bytes, the index recorded {size}; "
                           "the vector file is truncated or damaged")
        if verify and crc32_file(file) != crc:
            raise BadIndex(f"{file}: checksum mismatch; the vector file is corrupted")
        part = np.load(file, mmap_mode="r")
        if part.shape != (rows, d) or part.dtype != np.float32:
            raise BadIndex(f"{file}: holds {part.dtype} {part.shape}, expected float32 ({rows}, {d})")
        return part

    def watch(self) -> CommitWatch:
        """A cheap, thread-safe test for new commits (see `CommitWatch`)."""
        return CommitWatch(self.db_path)

    def images(self, ids: list[int] | None = None) -> list[ImageMeta]:
        count = self.manifest()["count"]
        with self.connect() as db:
            if ids is None:
                rows = db.execute("SELECT * FROM images WHERE id < ? ORDER BY id", (count,)).fetchall()
            else:
                found = {r[0]: r for r in db.execute(
                    f"SELECT * FROM images WHERE id IN ({','.join('?' * len(ids))}) AND id < ?", (*ids, count))}
                missing = [i for i in ids if i not in found]
                if missing:
                    raise BadIndex(f"no image with id {missing[0]} in {self.path} (ids run from 0 to {count - 1})")
                rows = [found[i] for i in ids]
        return [ImageMeta(*r) for r in rows]

    def label_count(self) -> int:
        """How many distinct labels the committed images carry."""
        count = self.manifest()["count"]
        with self.connect() as db:
            return db.execute("SELECT COUNT(DISTINCT label) FROM images WHERE id < ?", (count,)).fetchone()[0]

    # -- committing ------------------------------------------------------------------------
    def append(self, vectors: np.ndarray, metas: list[dict]) -> int:
        """Append `vectors` (n, d) with one metadata dict each; returns the new count.

        The segment is written and flushed before the single transaction that commits it.
        """
        manifest = self.manifest()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != manifest["dim"]:
            raise BadIndex(f"{self.path}: vectors of shape {vectors.shape} do not fit dimension {manifest['dim']}")
        if len(vectors) != len(metas):
            raise ValueError("internal: one metadata record per vector")
        self.clean_orphans()
        seq = len(self.segments())
        name = f"seg-{seq:06d}-{secrets.token_hex(4)}.npy"
        file = self.path / "vectors" / name
        try:
            with open(file, "wb") as f:
                np.save(f, vectors, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(file.parent)
        except OSError as exc:
            file.unlink(missing_ok=True)  # disk full, permissions: nothing was committed
            raise write_error(file, exc) from None
        except BaseException:
            file.unlink(missing_ok=True)
            raise
        size, crc = file.stat().st_size, crc32_file(file)
        now = time.time()
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                count = json.loads(db.execute("SELECT value FROM manifest WHERE key='count'").fetchone()[0])
                db.execute("DELETE FROM images WHERE id >= ?", (count,))
                db.executemany(
                    "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(count + j, m["key"], m["source"], m.get("position"), m["location"], m.get("label"), now)
                     for j, m in enumerate(metas)])
                db.execute("INSERT INTO segments (file, rows, bytes, crc32) VALUES (?, ?, ?, ?)",
                           (name, len(vectors), size, crc))
                new_count = count + len(vectors)
                db.execute("UPDATE manifest SET value=? WHERE key='count'", (json.dumps(new_count),))
                db.execute("INSERT OR REPLACE INTO manifest VALUES ('updated', ?)", (json.dumps(now),))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                file.unlink(missing_ok=True)
                raise
        self.write_manifest_json()
        return new_count

    def clean_orphans(self) -> None:
        """Remove segment files that no commit refers to (left by an interrupted append)."""
        known = {row[0] for row in self.segments()}
        for file in (self.path / "vectors").glob("seg-*.npy"):
            if file.name not in known:
                file.unlink(missing_ok=True)

    def write_manifest_json(self) -> None:
        manifest = self.manifest()
        manifest["segments"] = [{"file": f, "rows": r, "bytes": b, "crc32": c} for f, r, b, c in self.segments()]
        atomic_write_text(self.path / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))


class CommitWatch:
    """Tells whether anyone committed to the index since the last look, without reading it.

    It keeps one SQLite connection open and asks `PRAGMA data_version`, which changes when
    any other connection, in this process or another, commits (a few microseconds, no disk
    read). Safe to share between threads; `close` it when done (it closes itself when
    garbage-collected or at exit).
    """

    def __init__(self, db_path: Path):
        self._path = db_path.parent
        self._db = sqlite3.connect(db_path, timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._close = weakref.finalize(self, self._db.close)

    def version(self) -> int:
        with self._lock:
            if not self._close.alive:
                raise BadIndex(f"{self._path}: this searcher was closed; make another with index.searcher()")
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
