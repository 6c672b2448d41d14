"""`lookalike index verify`: every check of an index, each problem said in one line.

What opening an index checks (sizes and shapes of the segments, counts) is cheap; this
reads every byte: SQLite's own `integrity_check`, each segment's size, header and CRC-32,
the images' rows against the vectors, the counts against the manifest, `manifest.json`
against the database, and that every thumbnail decodes.
"""

from __future__ import annotations

import io
import json
import sqlite3

import numpy as np

from .segments import crc32_file
from .store import IndexStore, _columns, _live, _normalised


def problems(store: IndexStore) -> list[str]:
    """Every problem found in the index of `store`, one line each; empty when it is whole."""
    store._check_folder()
    found: list[str] = []
    try:
        with store.connect() as db:
            found += _database(store, db)
            if found:
                return found  # a damaged database: the rest would read garbage
            db.execute("BEGIN")
            manifest = _normalised({k: json.loads(v) for k, v in db.execute("SELECT key, value FROM manifest")})
            segments = store._segments(db)
            row, alive = _live(db)
            live = np.array(db.execute(f"SELECT {row} FROM images WHERE {alive} ORDER BY {row}").fetchall(),
                            dtype=np.int64).reshape(-1)
            thumbs = (db.execute("SELECT id, data FROM thumbnails").fetchall()
                      if store._has_thumbnails(db) else [])
            ids = {r[0] for r in db.execute("SELECT id FROM images")}
            deleted = "deleted" in _columns(db)
            db.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        return [*found, f"{store.db_path}: unreadable index database ({exc})"]
    found += _segments(store, manifest, segments)
    found += _rows(store, manifest, live, deleted)
    found += _manifest_json(store, manifest, segments)
    found += _thumbnails(store, thumbs, ids)
    return found


def _database(store: IndexStore, db: sqlite3.Connection) -> list[str]:
    try:
        rows = [r[0] for r in db.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [f"{store.db_path}: unreadable index database ({exc})"]
    if rows == ["ok"]:
        return []
    return [f"{store.db_path}: SQLite integrity check: {r}" for r in rows[:20]]


def _segments(store: IndexStore, manifest: dict, segments: list) -> list[str]:
    found = []
    d = int(manifest.get("dim", 0))
    total = 0
    for name, rows, size, crc in segments:
        file = store.path / "vectors" / name
        total += rows
        if not file.is_file():
            found.append(f"{file}: vector segment missing")
            continue
        if file.stat().st_size != size:
            found.append(f"{file}: size {file.stat().st_size} bytes, the index recorded {size} (truncated or damaged)")
            continue
        if crc32_file(file) != crc:
            found.append(f"{file}: checksum mismatch (the vector file is corrupted)")
            continue
        try:
            part = np.load(file, mmap_mode="r")
            shape, dtype = part.shape, part.dtype
        except (ValueError, OSError) as exc:
            found.append(f"{file}: not a readable vector file ({exc})")
            continue
        if shape != (rows, d) or dtype != np.float32:
            found.append(f"{file}: holds {dtype} {shape}, expected float32 ({rows}, {d})")
    if total != manifest["rows"]:
        found.append(f"{store.path}: the segments hold {total} vectors, the manifest says {manifest['rows']}")
    return found


def _rows(store: IndexStore, manifest: dict, live: np.ndarray, deleted: bool) -> list[str]:
    found = []
    if len(live) != manifest["count"]:
        found.append(f"{store.path}: {len(live)} live images in the database, the manifest says {manifest['count']}")
    if len(live) and (live[0] < 0 or live[-1] >= manifest["rows"]):
        found.append(f"{store.path}: image rows outside the {manifest['rows']} vectors")
    if np.any(np.diff(live) == 0):
        found.append(f"{store.path}: two live images share a vector row")
    if deleted and len(live) > manifest["rows"]:
        found.append(f"{store.path}: more live images than vectors")
    return found


def _manifest_json(store: IndexStore, manifest: dict, segments: list) -> list[str]:
    file = store.path / "manifest.json"
    try:
        copy = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        return [f"{file}: unreadable ({exc.__class__.__name__}); any change to the index rewrites it"]
    wrong = [k for k in ("count", "dim", "model", "metric") if k in manifest and copy.get(k) != manifest[k]]
    listed = [s.get("file") for s in copy.get("segments", [])] if isinstance(copy.get("segments"), list) else None
    if listed is not None and listed != [s[0] for s in segments]:
        wrong.append("segments")
    if wrong:
        return [f"{file}: differs from the database in {', '.join(wrong)}"]
    return []


def _thumbnails(store: IndexStore, thumbs: list, ids: set[int]) -> list[str]:
    from PIL import Image

    found = []
    for i, data in thumbs:
        if i not in ids:
            found.append(f"{store.db_path}: a thumbnail for id {i}, which is no image of the index")
            continue
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad image
            found.append(f"{store.db_path}: the thumbnail of image {i} does not decode ({exc.__class__.__name__})")
    return found
