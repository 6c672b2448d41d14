"""The on-disk index: vectors in .npy segments, metadata and manifest in SQLite.

    INDEX/
      meta.sqlite      images (id, key, source, position, location, label, added, digest),
                       the manifest, and the list of committed vector segments with checksums
      manifest.json    a readable copy of the manifest, rewritten after each commit
      vectors/seg-NNNNNN-<token>.npy   float32 (n, d), memory-mappable

Commit protocol: a new segment is written under a fresh name and flushed to disk first;
then ONE SQLite transaction inserts its rows and records the segment. That transaction is
the commit point: before it, the index is the old one (an unreferenced segment file is
ignored and removed later); after it, the new one. A reader never sees a half-written state.

Format 2 added `images.digest`, a content digest of each image as it was embedded (to know
an image already indexed); a format-1 index is read as it is and upgraded by its next add.
Reading never writes (see `db.py`): a read-only index can be searched.
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
from .db import open_for_reading, open_for_writing
from .segments import SegmentedArray, crc32_file

__all__ = ["FORMAT_VERSION", "CommitWatch", "ImageMeta", "IndexStore", "SegmentedArray", "crc32_file"]

FORMAT_VERSION = 2
READS = (1, 2)  # the formats this version reads
COLUMNS = "id, key, source, position, location, label, added"
SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,      -- row of the vector, 0-based, in commit order
    key TEXT NOT NULL,           -- the id the source gave the image
    source TEXT NOT NULL,        -- the source spec it came from (sample:N:S, stl10:PATH, folder, .npy)
    position INTEGER,            -- its position in that source (STL-10 record number, array row)
    location TEXT NOT NULL,      -- file path, or FILE#record
    label TEXT,                  -- label if known
    added REAL NOT NULL,         -- unix time of the commit that added it
    digest TEXT                  -- BLAKE2b-128 of its pixels as embedded (NULL: not known)
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

    @staticmethod
    def looks_like_index(path: str | os.PathLike) -> bool:
        """Whether folder `path` holds an index and nothing else (so it may be replaced)."""
        path = Path(path)
        names = {p.name for p in path.iterdir()} if path.is_dir() else set()
        extra = names - {"meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm", "manifest.json", "vectors", ".adding"}
        vectors = path / "vectors"
        return ("meta.sqlite" in names and not extra and vectors.is_dir()
                and all(p.is_file() and p.name.startswith("seg-") for p in vectors.iterdir()))

    # -- creation --------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, manifest: dict) -> IndexStore:
        """An empty index in a new folder `path` (which must not exist yet)."""
        store = cls(path)
        store.path.mkdir()
        (store.path / "vectors").mkdir()
        with store.connect(write=True) as db:
            db.executescript(SCHEMA)
            base = {**manifest, "format_version": FORMAT_VERSION, "count": 0, "created": time.time()}
            db.executemany("INSERT INTO manifest VALUES (?, ?)", [(k, json.dumps(v)) for k, v in base.items()])
        store.write_manifest_json()
        return store

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (transactions are explicit), closed on exit so
        that the write-ahead log is checkpointed and removed when the last one closes; one
        that never writes unless `write`."""
        db = open_for_writing(self.db_path) if write else open_for_reading(self.db_path)
        try:
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
        if self.path.exists() and not self.path.is_dir():
            raise BadIndex(f"{self.path}: is a file, not an index folder")
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
        if manifest.get("format_version") not in READS:
            raise BadIndex(f"{self.path}: index format {manifest.get('format_version')!r}, "
                           f"this lookalike reads formats {' and '.join(map(str, READS))}")
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

    def check(self, checksums: bool = True) -> None:
        """Raise `BadIndex` naming the first problem: a vector file missing, of the wrong size
        or shape (or, with `checksums`, whose CRC-32 differs), or metadata rows missing."""
        self.vectors(verify=checksums)
        count = self.manifest()["count"]
        with self.connect() as db:
            rows = db.execute("SELECT COUNT(*) FROM images WHERE id < ?", (count,)).fetchone()[0]
        if rows != count:
            raise BadIndex(f"{self.path}: metadata for {rows} images, {count} vectors; the index is damaged")

    def images(self, ids: list[int] | None = None) -> list[ImageMeta]:
        count = self.manifest()["count"]
        with self.connect() as db:
            if ids is None:
                rows = db.execute(f"SELECT {COLUMNS} FROM images WHERE id < ? ORDER BY id", (count,)).fetchall()
            else:
                found = {r[0]: r for r in db.execute(
                    f"SELECT {COLUMNS} FROM images WHERE id IN ({','.join('?' * len(ids))}) AND id < ?",
                    (*ids, count))}
                missing = [i for i in ids if i not in found]
                if missing:
                    raise BadIndex(f"no image with id {missing[0]} in {self.path} (ids run from 0 to {count - 1})")
                rows = [found[i] for i in ids]
        return [ImageMeta(*r) for r in rows]

    def digests(self, ids: list[int] | None = None) -> dict[int, str | None]:
        """Image id -> its content digest (None where it is not known: a format-1 index)."""
        count = self.manifest()["count"]
        with self.connect() as db:
            if not self._has_digests(db):
                return dict.fromkeys(range(count) if ids is None else ids)
            if ids is None:
                return dict(db.execute("SELECT id, digest FROM images WHERE id < ?", (count,)).fetchall())
            marks = ",".join("?" * len(ids))
            return dict(db.execute(f"SELECT id, digest FROM images WHERE id IN ({marks}) AND id < ?", (*ids, count)))

    def origins(self) -> dict[str, list[int]]:
        """Where each committed image came from (see `origin`) -> the ids of the images from there."""
        count = self.manifest()["count"]
        with self.connect() as db:
            rows = db.execute("SELECT id, source, position, location FROM images WHERE id < ?", (count,)).fetchall()
        found: dict[str, list[int]] = {}
        for i, source, position, location in rows:
            found.setdefault(origin(source, position, location), []).append(i)
        return found

    def sources(self) -> list[str]:
        """The sources (specs) the committed images came from."""
        count = self.manifest()["count"]
        with self.connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT source FROM images WHERE id < ?", (count,))]

    @staticmethod
    def _has_digests(db: sqlite3.Connection) -> bool:
        return any(row[1] == "digest" for row in db.execute("PRAGMA table_info(images)"))

    def label_count(self) -> int:
        """How many distinct labels the committed images carry."""
        count = self.manifest()["count"]
        with self.connect() as db:
            return db.execute("SELECT COUNT(DISTINCT label) FROM images WHERE id < ?", (count,)).fetchone()[0]

    # -- committing ------------------------------------------------------------------------
    def append(self, vectors: np.ndarray, metas: list[dict]) -> int:
        """Append `vectors` (n, d) with one metadata dict each (key, source, position,
        location, label, digest); returns the new count.

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
            raise write_error(file, exc) from exc
        except BaseException:
            file.unlink(missing_ok=True)
            raise
        size, crc = file.stat().st_size, crc32_file(file)
        now = time.time()
        with self.connect(write=True) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if not self._has_digests(db):  # a format-1 index: upgraded in this same commit
                    db.execute("ALTER TABLE images ADD COLUMN digest TEXT")
                    db.execute("UPDATE manifest SET value=? WHERE key='format_version'", (json.dumps(FORMAT_VERSION),))
                count = json.loads(db.execute("SELECT value FROM manifest WHERE key='count'").fetchone()[0])
                db.execute("DELETE FROM images WHERE id >= ?", (count,))
                db.executemany(
                    f"INSERT INTO images ({COLUMNS}, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(count + j, m["key"], m["source"], m.get("position"), m["location"], m.get("label"), now,
                      m.get("digest")) for j, m in enumerate(metas)])
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
        self._db = open_for_reading(db_path, check_same_thread=False)
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


def origin(source: str, position: int | None, location: str) -> str:
    """Where an image came from, as two adds of the same image spell it: a file's path in a
    folder (its position there shifts when files are added), else the source and position."""
    if location.startswith(source.rstrip("/") + "/"):
        return location
    return f"{source}#{position}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
