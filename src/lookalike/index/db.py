"""Opening an index's SQLite database: for writing, or for reading on any index, a read-only
one included (`chmod -R a-w`, a read-only mount: how a service is often deployed).

The database is in WAL mode. A reader that cannot write in the folder cannot make the
`-shm` file such a database needs, so it opens the file `immutable` (nothing may change it
while it is read: true of a read-only folder). A write-ahead log left there by a writer that
was cut off would be ignored that way, so that case is refused instead.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import BadIndex


def open_for_writing(db_path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, full sync."""
    db = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    except BaseException:
        db.close()
        raise
    return db


def open_for_reading(db_path: Path, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection that never writes: a plain one where the folder can be written (so that
    closing it tidies the write-ahead log away), else read-only, else immutable."""
    kw = {"timeout": 30, "isolation_level": None, "check_same_thread": check_same_thread, "uri": True}
    uri = db_path.resolve().as_uri()  # `mode=`: never make a database where there is none
    if os.access(db_path, os.W_OK) and os.access(db_path.parent, os.W_OK):
        db = _probe(f"{uri}?mode=rw", kw)
        if db is not None:
            return db
    db = _probe(f"{uri}?mode=ro", kw)
    if db is not None:
        return db
    wal = db_path.with_name(db_path.name + "-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        raise BadIndex(f"{db_path.parent}: a write to this index was cut off and its folder is read-only; "
                       "open it once where it can be written (any lookalike command) to finish it")
    return sqlite3.connect(f"{uri}?immutable=1", **kw)


def _probe(uri: str, kw: dict) -> sqlite3.Connection | None:
    """A connection to `uri` if it can read (a read-only folder may show only at the first
    read), else None."""
    try:
        db = sqlite3.connect(uri, **kw)
    except sqlite3.OperationalError:
        return None
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
        return None
