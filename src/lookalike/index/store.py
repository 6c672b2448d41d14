"""The on-disk index: vectors in .npy segments, metadata and manifest in SQLite.

    INDEX/
      meta.sqlite      images (id, key, source, position, location, label, added, digest, row,
                       deleted), thumbnails (id, media, data), the manifest, and the list of
                       committed vector segments with their sizes and checksums
      manifest.json    a readable copy of the manifest, rewritten after each commit
      vectors/seg-<token>.npy   float32 (n, d), memory-mappable
      .lock            the commit lock (`lock.py`); .writers/  each writer's staging folder

Ids and rows: an image's `id` is given at its commit (the manifest's `next_id`, counting up)
and never changes; `row` is its vector's row in the segments taken in order. Removing an
image marks it `deleted` (its vector stays until `compact`); compacting rewrites the
segments without deleted vectors and renumbers `row`, never `id`. The manifest's `count` is
the number of live images, `rows` the number of vectors in the segments.

Commit protocol: every change happens under the commit lock. A new segment is written under
a fresh name and flushed to disk first; then ONE SQLite transaction inserts its rows and
records the segment. That transaction is the commit point: before it, the index is the old
one; after it, the new one. A reader never sees a half-written state. Segment files no
commit names are removed only under the lock (they cannot be another writer's work then).

Format 2 added `images.digest` (a content digest of each image as it was embedded, to know
an image already indexed); format 3 stable ids (`row`, `deleted`, `next_id`, `rows`) and
thumbnails. Older formats are read as they are and upgraded by their next change.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import BadIndex, UnknownImage, write_error
from .db import Readers, open_for_reading, open_for_writing
from .lock import LOCK_FILE, CommitLock
from .segments import SegmentedArray, crc32_file

__all__ = ["FORMAT_VERSION", "CommitWatch", "Committed", "ImageMeta", "IndexStore", "SegmentedArray", "crc32_file"]

FORMAT_VERSION = 3
READS = (1, 2, 3)  # the formats this version reads
COLUMNS = "id, key, source, position, location, label, added"
SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,      -- the image's id: given at commit, never changed, never reused
    key TEXT NOT NULL,           -- the id the source gave the image
    source TEXT NOT NULL,        -- the source spec it came from (sample:N:S, stl10:PATH, folder, .npy)
    position INTEGER,            -- its position in that source (STL-10 record number, array row)
    location TEXT NOT NULL,      -- file path, or FILE#record
    label TEXT,                  -- label if known
    added REAL NOT NULL,         -- unix time of the commit that added it
    digest TEXT,                 -- BLAKE2b-128 of its pixels as embedded (NULL: not known)
    row INTEGER,                 -- its vector's row in the segments (NULL: removed and compacted away)
    deleted REAL                 -- unix time it was removed (NULL: live)
);
CREATE TABLE IF NOT EXISTS segments (
    seq INTEGER PRIMARY KEY,
    file TEXT NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    crc32 INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS thumbnails (id INTEGER PRIMARY KEY, media TEXT NOT NULL, data BLOB NOT NULL);
"""
CHUNK = 500  # ids per SQL statement (SQLite's limit on bound parameters is far above)
COMPACT_BLOCK = 8192  # vectors copied at a time by `compact` (bounded memory)


@dataclass
class ImageMeta:
    id: int
    key: str
    source: str
    position: int | None
    location: str
    label: str | None
    added: float


@dataclass(frozen=True)
class Committed:
    """One committed state, read in one transaction: the manifest, the segments, and the
    live images (their ids, ascending by vector row, and those rows)."""

    manifest: dict
    segments: list[tuple[str, int, int, int]]
    ids: np.ndarray
    rows: np.ndarray


def _chunks(items: Sequence, n: int = CHUNK) -> Iterator[Sequence]:
    for lo in range(0, len(items), n):
        yield items[lo:lo + n]


def _columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(images)")}


def _manifest_value(db: sqlite3.Connection, key: str):
    row = db.execute("SELECT value FROM manifest WHERE key=?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def _set(db: sqlite3.Connection, key: str, value) -> None:
    db.execute("INSERT OR REPLACE INTO manifest VALUES (?, ?)", (key, json.dumps(value)))


def _live(db: sqlite3.Connection) -> tuple[str, str]:
    """(the SQL of an image's vector row, the SQL condition of a live image) for this
    database's format (before format 3: row = id, and the ids below `count` are live)."""
    if "deleted" in _columns(db):
        return "row", "deleted IS NULL"
    return "id", f"id < {int(_manifest_value(db, 'count'))}"


def _normalised(manifest: dict) -> dict:
    """The manifest with format 3's keys, also for an older index (where rows = count)."""
    manifest.setdefault("rows", manifest.get("count", 0))
    manifest.setdefault("next_id", manifest.get("count", 0))
    return manifest


@contextmanager
def _transaction(db: sqlite3.Connection, segment: Path | None = None) -> Iterator[None]:
    """One write transaction, the database brought to this format first: committed when the
    block ends, rolled back if it raises (then `segment`, the new vector file it would have
    referenced, is removed)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        _upgrade(db)
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        if segment is not None:
            segment.unlink(missing_ok=True)
        raise


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a format 1 or 2 database to format 3, inside the caller's transaction."""
    columns = _columns(db)
    if "digest" not in columns:
        db.execute("ALTER TABLE images ADD COLUMN digest TEXT")
    if "deleted" not in columns:
        count = int(_manifest_value(db, "count"))
        db.execute("DELETE FROM images WHERE id >= ?", (count,))
        db.execute("ALTER TABLE images ADD COLUMN row INTEGER")
        db.execute("ALTER TABLE images ADD COLUMN deleted REAL")
        db.execute("UPDATE images SET row = id")
        _set(db, "rows", count)
        _set(db, "next_id", count)
    db.execute("CREATE TABLE IF NOT EXISTS thumbnails (id INTEGER PRIMARY KEY, media TEXT NOT NULL, "
               "data BLOB NOT NULL)")
    if _manifest_value(db, "format_version") != FORMAT_VERSION:
        _set(db, "format_version", FORMAT_VERSION)


class IndexStore:
    """Low-level access to an index folder: open, read, and commit changes under the lock.

    `lock_timeout`: seconds a change waits for another writer's commit (None: the default
    of `lock.lock_timeout`).
    """

    def __init__(self, path: str | os.PathLike, lock_timeout: float | None = None):
        self.path = Path(path)
        self.db_path = self.path / "meta.sqlite"
        self.lock_timeout = lock_timeout
        self._readers: Readers | None = None

    @staticmethod
    def looks_like_index(path: str | os.PathLike) -> bool:
        """Whether folder `path` holds an index and nothing else (so it may be replaced)."""
        path = Path(path)
        names = {p.name for p in path.iterdir()} if path.is_dir() else set()
        extra = names - {"meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm", "manifest.json", "vectors", ".adding",
                         ".writers", LOCK_FILE}
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
            base = {**manifest, "format_version": FORMAT_VERSION, "count": 0, "rows": 0, "next_id": 0,
                    "created": time.time()}
            db.executemany("INSERT INTO manifest VALUES (?, ?)", [(k, json.dumps(v)) for k, v in base.items()])
        store.write_manifest_json()
        return store

    def keep_readers(self) -> None:
        """From now on, read through one connection per thread kept open (`db.Readers`)
        rather than one opened per read: for a long-lived program that reads often (a
        server). Commits by anyone stay visible to the next read. `close_readers` ends it."""
        if self._readers is None:
            self._readers = Readers(self.db_path)

    def close_readers(self) -> None:
        if self._readers is not None:
            self._readers.close()
            self._readers = None

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (transactions are explicit), closed on exit so
        that the write-ahead log is checkpointed and removed when the last one closes; one
        that never writes unless `write`. After `keep_readers`, a read gets the calling
        thread's kept connection instead."""
        readers = None if write else self._readers
        if readers is not None:
            with readers.connection() as db:
                yield db
            return
        db = open_for_writing(self.db_path) if write else open_for_reading(self.db_path)
        try:
            yield db
        finally:
            db.close()

    def lock(self, timeout: float | None = None) -> CommitLock:
        """The index's commit lock (see `lock.py`), to be held in a `with` block."""
        return CommitLock(self.path, self.lock_timeout if timeout is None else timeout)

    # -- reading ---------------------------------------------------------------------------
    def manifest(self) -> dict:
        return self.snapshot(segments=False)[0]

    def segments(self) -> list[tuple[str, int, int, int]]:
        with self.connect() as db:
            return self._segments(db)

    @staticmethod
    def _segments(db: sqlite3.Connection) -> list[tuple[str, int, int, int]]:
        return db.execute("SELECT file, rows, bytes, crc32 FROM segments ORDER BY seq").fetchall()

    def _check_folder(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise BadIndex(f"{self.path}: is a file, not an index folder")
        if not self.path.is_dir():
            raise BadIndex(f"{self.path}: no such index folder")
        if not self.db_path.is_file():
            raise BadIndex(f"{self.path}: not a lookalike index (no meta.sqlite)")

    def _read(self, db: sqlite3.Connection, segments: bool, live: bool):
        rows = db.execute("SELECT key, value FROM manifest").fetchall()
        manifest = _normalised({k: json.loads(v) for k, v in rows})
        if manifest.get("format_version") not in READS:
            raise BadIndex(f"{self.path}: index format {manifest.get('format_version')!r}, "
                           f"this lookalike reads formats {', '.join(map(str, READS))}")
        segs = self._segments(db) if segments else []
        ids = rows_ = np.empty(0, np.int64)
        if live:
            row, alive = _live(db)
            found = np.array(db.execute(f"SELECT id, {row} FROM images WHERE {alive} ORDER BY {row}").fetchall(),
                             dtype=np.int64).reshape(-1, 2)
            ids, rows_ = found[:, 0].copy(), found[:, 1].copy()
        return manifest, segs, ids, rows_

    def _snapshot(self, segments: bool, live: bool):
        self._check_folder()
        try:
            with self.connect() as db:
                db.execute("BEGIN")
                try:
                    return self._read(db, segments, live)
                finally:
                    db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise BadIndex(f"{self.db_path}: unreadable index database ({exc})") from None

    def snapshot(self, segments: bool = True) -> tuple[dict, list[tuple[str, int, int, int]]]:
        """The manifest and the segment list of one commit, read in one transaction (a
        commit by another process cannot fall between them)."""
        manifest, segs, _, _ = self._snapshot(segments, live=False)
        return manifest, segs

    def committed(self) -> Committed:
        """The manifest, segments and live images of one commit (see `Committed`)."""
        return Committed(*self._snapshot(segments=True, live=True))

    def vectors(self, verify: bool = False, opened: dict[str, np.ndarray] | None = None,
                state: Committed | None = None) -> SegmentedArray | np.ndarray:
        """All vectors of the segments (removed images' included until `compact`; see
        `committed` for the rows that are live), memory-mapped. Sizes and shapes are always
        checked; with `verify`, the CRC-32 of every segment too (reads every byte).

        `opened` (segment file -> memory map) carries segments checked before: segments never
        change once committed, so those found there are used without a second check; the
        map is left holding the current segments only. `state`: the commit to read (default:
        the latest).
        """
        for attempt in range(3):
            state = state if state is not None and attempt == 0 else self.committed()
            try:
                return self._map(state, verify, opened)
            except BadIndex:
                # a compaction may have committed and removed the old segments in between
                if attempt == 2 or self.committed().segments == state.segments:
                    raise
        raise AssertionError("unreachable")

    def _map(self, state: Committed, verify: bool, opened: dict | None):
        d = int(state.manifest["dim"])
        known = {} if opened is None else opened
        parts = []
        for name, rows, size, crc in state.segments:
            part = known.get(name)
            if part is None:
                part = self._open_segment(name, rows, size, crc, d, verify)
            parts.append(part)
        if opened is not None:
            opened.clear()
            opened.update({s[0]: p for s, p in zip(state.segments, parts)})
        if sum(len(p) for p in parts) != state.manifest["rows"]:
            raise BadIndex(f"{self.path}: {sum(len(p) for p in parts)} vectors in the segments, the manifest "
                           f"says {state.manifest['rows']}; the index is damaged")
        if not parts:
            return np.empty((0, d), np.float32)
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
        try:
            part = np.load(file, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise BadIndex(f"{file}: not a readable vector file ({exc})") from None
        if part.shape != (rows, d) or part.dtype != np.float32:
            raise BadIndex(f"{file}: holds {part.dtype} {part.shape}, expected float32 ({rows}, {d})")
        return part

    def watch(self) -> CommitWatch:
        """A cheap, thread-safe test for new commits (see `CommitWatch`)."""
        return CommitWatch(self.db_path)

    def check(self, checksums: bool = False) -> Committed:
        """Raise `BadIndex` naming the first problem: a vector file missing, of the wrong size
        or shape (or, with `checksums`, whose CRC-32 differs), or image rows that do not fit
        the vectors. Returns the state checked. (`verify.problems` lists every problem.)"""
        state = self.committed()
        self.vectors(verify=checksums, state=state)
        count, rows = int(state.manifest["count"]), int(state.manifest["rows"])
        if len(state.ids) != count:
            raise BadIndex(f"{self.path}: metadata for {len(state.ids)} images, the manifest says {count}; "
                           "the index is damaged")
        if len(state.rows) and (state.rows[0] < 0 or state.rows[-1] >= rows
                                or np.any(np.diff(state.rows) == 0)):
            raise BadIndex(f"{self.path}: image rows outside the {rows} vectors or shared; the index is damaged")
        return state

    def images(self, ids: Sequence[int] | None = None, include_removed: bool = False) -> list[ImageMeta]:
        """The metadata of images `ids` (default: every live image, by id). An id that is not
        in the index, or was removed (unless `include_removed`), is an `UnknownImage`."""
        with self.connect() as db:
            _, alive = _live(db)
            if ids is None:
                rows = db.execute(f"SELECT {COLUMNS} FROM images WHERE {alive} ORDER BY id").fetchall()
                return [ImageMeta(*r) for r in rows]
            ids = [int(i) for i in ids]
            where = "1" if include_removed else alive
            found = {}
            for part in _chunks(sorted(set(ids))):
                found.update((r[0], r) for r in db.execute(
                    f"SELECT {COLUMNS} FROM images WHERE id IN ({','.join('?' * len(part))}) AND {where}", part))
            missing = [i for i in ids if i not in found]
            if missing:
                raise self._unknown(db, missing[0])
        return [ImageMeta(*found[i]) for i in ids]

    def _unknown(self, db: sqlite3.Connection, i: int) -> UnknownImage:
        _, alive = _live(db)
        removed = db.execute(f"SELECT COUNT(*) FROM images WHERE id=? AND NOT ({alive})", (int(i),)).fetchone()[0]
        if removed:
            return UnknownImage(f"image id {i} was removed from {self.path}")
        top = _manifest_value(db, "next_id")
        if top is None:  # an index of format 1 or 2: ids ran from 0 to count - 1
            top = _manifest_value(db, "count") or 0
        return UnknownImage(f"no image with id {i} in {self.path} (ids run from 0 to {int(top) - 1})")

    def digests(self, ids: list[int] | None = None) -> dict[int, str | None]:
        """Image id -> its content digest (None where it is not known: a format-1 index)."""
        with self.connect() as db:
            _, alive = _live(db)
            if "digest" not in _columns(db):
                if ids is None:
                    return dict.fromkeys(r[0] for r in db.execute(f"SELECT id FROM images WHERE {alive}"))
                return dict.fromkeys(ids)
            if ids is None:
                return dict(db.execute(f"SELECT id, digest FROM images WHERE {alive}").fetchall())
            found = {}
            for part in _chunks(list(ids)):
                found.update(db.execute(f"SELECT id, digest FROM images WHERE id IN ({','.join('?' * len(part))})",
                                        part))
            return found

    def origins(self) -> dict[str, list[int]]:
        """Where each live image came from (see `origin`) -> the ids of the images from there."""
        with self.connect() as db:
            return self._origins(db)

    @staticmethod
    def _origins(db: sqlite3.Connection) -> dict[str, list[int]]:
        _, alive = _live(db)
        found: dict[str, list[int]] = {}
        for i, source, position, location in db.execute(
                f"SELECT id, source, position, location FROM images WHERE {alive}"):
            found.setdefault(origin(source, position, location), []).append(i)
        return found

    def sources(self) -> list[str]:
        """The sources (specs) the live images came from."""
        with self.connect() as db:
            _, alive = _live(db)
            return [r[0] for r in db.execute(f"SELECT DISTINCT source FROM images WHERE {alive}")]

    def label_count(self) -> int:
        """How many distinct labels the live images carry."""
        with self.connect() as db:
            _, alive = _live(db)
            return db.execute(f"SELECT COUNT(DISTINCT label) FROM images WHERE {alive}").fetchone()[0]

    def thumbnail(self, i: int) -> tuple[bytes, str] | None:
        """(bytes, media type) of live image `i`'s thumbnail; None when there is none."""
        with self.connect() as db:
            if not self._has_thumbnails(db):
                return None
            _, alive = _live(db)
            row = db.execute(f"SELECT t.data, t.media FROM thumbnails t JOIN images USING (id) "
                             f"WHERE id=? AND {alive}", (int(i),)).fetchone()
        return None if row is None else (bytes(row[0]), str(row[1]))

    def thumbnail_stats(self) -> tuple[int, int]:
        """(how many thumbnails, their bytes in all)."""
        with self.connect() as db:
            if not self._has_thumbnails(db):
                return 0, 0
            n, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM thumbnails").fetchone()
        return int(n), int(size)

    @staticmethod
    def _has_thumbnails(db: sqlite3.Connection) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='thumbnails'").fetchone() is not None

    # -- committing ------------------------------------------------------------------------
    def append(self, vectors: np.ndarray, metas: list[dict], thumbnails: Sequence[tuple[bytes, str] | None] = (),
               *, skip_present: bool = False, lock: bool = True) -> tuple[list[int], int]:
        """Append `vectors` (n, d) with one metadata dict each (key, source, position,
        location, label, digest) and, optionally, one thumbnail each ((bytes, media type) or
        None); returns (the new images' ids, how many were skipped).

        Under the commit lock (`lock=False`: the caller owns the folder, as a build does):
        the cheap checks first (an index that fails them is not changed), then, with
        `skip_present`, images already live in the index (same place and digest: another
        writer committed them meanwhile) are left out; the segment is written and flushed,
        then one transaction commits it.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) != len(metas) or (thumbnails and len(thumbnails) != len(metas)):
            raise ValueError("internal: one metadata record (and thumbnail) per vector")
        with self.lock() if lock else nullcontext():
            state = self.check()
            dim = state.manifest["dim"]
            if vectors.ndim != 2 or vectors.shape[1] != dim:
                raise BadIndex(f"{self.path}: vectors of shape {vectors.shape} do not fit dimension {dim}")
            keep = self._not_present(metas) if skip_present else list(range(len(metas)))
            skipped = len(metas) - len(keep)
            if not keep:
                return [], skipped
            if len(keep) < len(metas):
                vectors, metas = vectors[keep], [metas[j] for j in keep]
                thumbnails = [thumbnails[j] for j in keep] if thumbnails else ()
            self.clean_orphans()
            name, size, crc = self._write_segment(vectors)
            now = time.time()
            with self.connect(write=True) as db:
                with _transaction(db, self.path / "vectors" / name):
                    first = int(_manifest_value(db, "next_id"))
                    rows = int(_manifest_value(db, "rows"))
                    ids = list(range(first, first + len(metas)))
                    db.executemany(
                        f"INSERT INTO images ({COLUMNS}, digest, row) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(i, m["key"], m["source"], m.get("position"), m["location"], m.get("label"), now,
                          m.get("digest"), rows + j) for j, (i, m) in enumerate(zip(ids, metas))])
                    db.executemany("INSERT INTO thumbnails (id, data, media) VALUES (?, ?, ?)",
                                   [(i, t[0], t[1]) for i, t in zip(ids, thumbnails) if t is not None])
                    db.execute("INSERT INTO segments (file, rows, bytes, crc32) VALUES (?, ?, ?, ?)",
                               (name, len(vectors), size, crc))
                    _set(db, "count", int(_manifest_value(db, "count")) + len(metas))
                    _set(db, "rows", rows + len(metas))
                    _set(db, "next_id", first + len(metas))
                    _set(db, "updated", now)
            self.write_manifest_json()
        return ids, skipped

    def _not_present(self, metas: list[dict]) -> list[int]:
        """The positions of `metas` whose image is not live in the index already (same place,
        same digest); an image without a digest is kept."""
        origins = self.origins()
        ids = sorted({i for m in metas for i in origins.get(origin(m["source"], m.get("position"), m["location"]), [])})
        known = self.digests(ids) if ids else {}
        keep, seen = [], set()
        for j, m in enumerate(metas):
            place = origin(m["source"], m.get("position"), m["location"])
            here = {known.get(i) for i in origins.get(place, [])}
            if m.get("digest") is None or (m["digest"] not in here and (place, m["digest"]) not in seen):
                keep.append(j)
                seen.add((place, m.get("digest")))
        return keep

    def _write_segment(self, vectors: np.ndarray | None = None, fill=None, n: int = 0) -> tuple[str, int, int]:
        """Write a new segment file (from `vectors`, or `n` rows that `fill(array)` copies in)
        and flush it to disk; (its name, bytes, CRC-32)."""
        name = f"seg-{secrets.token_hex(8)}.npy"
        file = self.path / "vectors" / name
        try:
            if vectors is not None:
                with open(file, "wb") as f:
                    np.save(f, vectors, allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
            else:
                out = np.lib.format.open_memmap(file, mode="w+", dtype=np.float32,
                                                shape=(n, int(self.manifest()["dim"])))
                fill(out)
                out.flush()
                del out
                fd = os.open(file, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            _fsync_dir(file.parent)
        except OSError as exc:
            file.unlink(missing_ok=True)  # disk full, permissions: nothing was committed
            raise write_error(file, exc) from exc
        except BaseException:
            file.unlink(missing_ok=True)
            raise
        return name, file.stat().st_size, crc32_file(file)

    def remove(self, ids: Sequence[int] = (), keys: Sequence[str] = (), sources: Sequence[str] = ()) -> list[int]:
        """Mark the images `ids`, those with source key `keys` and those from `sources`
        (specs as given to `add`, or a folder's path) removed, in one transaction; returns
        their ids, ascending. An id, key or source that names no live image is an
        `UnknownImage`, raised before anything changes."""
        with self.lock():
            self.check()
            with self.connect(write=True) as db:
                with _transaction(db):
                    found = self._resolve(db, ids, keys, sources)
                    now = time.time()
                    for part in _chunks(found):
                        db.execute(f"UPDATE images SET deleted=? WHERE id IN ({','.join('?' * len(part))})",
                                   (now, *part))
                    _set(db, "count", int(_manifest_value(db, "count")) - len(found))
                    _set(db, "updated", now)
            self.write_manifest_json()
        return found

    def _resolve(self, db: sqlite3.Connection, ids: Sequence[int], keys: Sequence[str],
                 sources: Sequence[str]) -> list[int]:
        found: set[int] = set()
        for part in _chunks(sorted({int(i) for i in ids})):
            live = {r[0] for r in db.execute(
                f"SELECT id FROM images WHERE id IN ({','.join('?' * len(part))}) AND deleted IS NULL", part)}
            missing = [i for i in part if i not in live]
            if missing:
                raise self._unknown(db, missing[0])
            found |= live
        for key in keys:
            hits = [r[0] for r in db.execute("SELECT id FROM images WHERE key=? AND deleted IS NULL", (key,))]
            if not hits:
                raise UnknownImage(f"no image with key {key!r} in {self.path}")
            found.update(hits)
        for spec in sources:
            names = {str(spec), str(spec).rstrip("/")}
            if not str(spec).startswith(("sample", "stl10:")) or Path(spec).exists():
                names.add(str(Path(spec).resolve()))
            marks = ",".join("?" * len(names))
            hits = [r[0] for r in db.execute(
                f"SELECT id FROM images WHERE source IN ({marks}) AND deleted IS NULL", tuple(names))]
            if not hits:
                known = [r[0] for r in db.execute("SELECT DISTINCT source FROM images WHERE deleted IS NULL LIMIT 4")]
                raise UnknownImage(f"no image from source {spec!r} in {self.path} "
                                   f"(it holds images from {', '.join(map(repr, known)) or 'no source'})")
            found.update(hits)
        return sorted(found)

    def compact(self) -> tuple[int, int]:
        """Rewrite the vectors without those of removed images, into one new segment, and
        renumber the rows (never the ids) in one transaction; then remove the old segment
        files. A crash at any moment leaves the old or the new index whole. Returns (vectors
        before, vectors after)."""
        with self.lock():
            state = self.check()
            before, live = int(state.manifest["rows"]), len(state.ids)
            if before == live and len(state.segments) <= 1:
                return before, live
            vectors = self.vectors(state=state)

            def fill(out: np.ndarray) -> None:
                for lo in range(0, live, COMPACT_BLOCK):
                    out[lo:lo + COMPACT_BLOCK] = vectors[state.rows[lo:lo + COMPACT_BLOCK]]

            name, size, crc = self._write_segment(fill=fill, n=live)
            with self.connect(write=True) as db:
                with _transaction(db, self.path / "vectors" / name):
                    db.execute("DELETE FROM segments")
                    db.execute("INSERT INTO segments (file, rows, bytes, crc32) VALUES (?, ?, ?, ?)",
                               (name, live, size, crc))
                    db.execute("UPDATE images SET row=NULL WHERE deleted IS NOT NULL")
                    db.executemany("UPDATE images SET row=? WHERE id=?",
                                   [(j, int(i)) for j, i in enumerate(state.ids)])
                    db.execute("DELETE FROM thumbnails WHERE id IN (SELECT id FROM images WHERE deleted IS NOT NULL)")
                    _set(db, "rows", live)
                    _set(db, "updated", time.time())
            self.write_manifest_json()
            self.clean_orphans()
        return before, live

    def clean_orphans(self) -> list[str]:
        """Remove segment files that no commit names (left by an interrupted append or
        compaction). Only under the commit lock: no writer has an uncommitted segment then."""
        known = {row[0] for row in self.segments()}
        gone = []
        for file in (self.path / "vectors").glob("seg-*.npy"):
            if file.name not in known:
                file.unlink(missing_ok=True)
                gone.append(file.name)
        return gone

    def write_manifest_json(self) -> None:
        manifest, segments = self.snapshot()
        manifest["segments"] = [{"file": f, "rows": r, "bytes": b, "crc32": c} for f, r, b, c in segments]
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
