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
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import BadIndex, write_error

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


def crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc


class SegmentedArray:
    """Several (n_i, d) memory maps seen as one (sum n_i, d) array, for the kNN engine:
    supports `shape`, `len`, `dtype`, slices of rows and integer-array row indexing."""

    def __init__(self, parts: list[np.ndarray], d: int):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.starts[-1]), d)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item):
        if isinstance(item, slice):
            lo, hi, step = item.indices(self.shape[0])
            if step != 1:
                return self[np.arange(lo, hi, step)]
            pieces = []
            for part, start in zip(self.parts, self.starts[:-1]):
                a, b = max(lo - start, 0), min(hi - start, len(part))
                if a < b:
                    pieces.append(part[a:b])
            return np.concatenate(pieces) if len(pieces) != 1 else np.asarray(pieces[0])
        rows = np.asarray(item, dtype=np.int64)
        if rows.ndim == 0:
            return self[int(rows) : int(rows) + 1][0]
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        for s in np.unique(which):
            sel = which == s
            out[sel] = self.parts[s][rows[sel] - self.starts[s]]
        return out

    def __array__(self, dtype=None, copy=None):
        full = self[0 : self.shape[0]]
        return full.astype(dtype) if dtype is not None else full


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
        if not self.path.is_dir():
            raise BadIndex(f"{self.path}: no such index folder")
        if not self.db_path.is_file():
            raise BadIndex(f"{self.path}: not a lookalike index (no meta.sqlite)")
        try:
            with self.connect() as db:
                rows = db.execute("SELECT key, value FROM manifest").fetchall()
        except sqlite3.DatabaseError as exc:
            raise BadIndex(f"{self.db_path}: unreadable index database ({exc})") from None
        manifest = {k: json.loads(v) for k, v in rows}
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BadIndex(f"{self.path}: index format {manifest.get('format_version')!r}, "
                           f"this lookalike reads format {FORMAT_VERSION}")
        return manifest

    def segments(self) -> list[tuple[str, int, int, int]]:
        with self.connect() as db:
            return db.execute("SELECT file, rows, bytes, crc32 FROM segments ORDER BY seq").fetchall()

    def vectors(self, verify: bool = True) -> SegmentedArray | np.ndarray:
        """All committed vectors, memory-mapped. Sizes are always checked; with `verify`,
        the CRC-32 of every segment too."""
        manifest = self.manifest()
        d = int(manifest["dim"])
        parts = []
        for name, rows, size, crc in self.segments():
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
            parts.append(part)
        if sum(len(p) for p in parts) != manifest["count"]:
            raise BadIndex(f"{self.path}: {sum(len(p) for p in parts)} vectors for {manifest['count']} images")
        if len(parts) == 1:
            return parts[0]
        return SegmentedArray(parts, d)

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
