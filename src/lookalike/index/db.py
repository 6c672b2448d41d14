"""Opening an index's SQLite database: for writing, or for reading on any index, a read-only
one included (`chmod -R a-w`, a read-only mount: how a service is often deployed).

`Readers` keeps one read connection per thread open for a long-lived program (a server),
which would otherwise open one per read: a kept connection sees every commit made since its
last read, by this process or another, because each read starts a new read transaction.

The database is in WAL mode. A reader that cannot write in the folder cannot make the
`-shm` file such a database needs, so it opens the file `immutable` (nothing may change it
while it is read: true of a read-only folder). A write-ahead log left there by a writer that
was cut off would be ignored that way, so that case is refused instead.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from contextlib import contextmanager
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


class Readers:
    """Read connections to `db_path` kept open, one per thread (`open_for_reading`'s).

    `connection()` lends the calling thread's own, opened on its first use. A read made
    through it sees the latest commit, as a fresh connection would, as long as no transaction
    is left open on it: one left open by an error is rolled back when it is given back, and
    a connection that failed with a database error is closed and opened again next time.
    `close` closes them all (also done when the object is collected, or at exit).
    """

    def __init__(self, db_path: Path):
        self.db_path = db_path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[sqlite3.Connection] = []
        self._finalizer = weakref.finalize(self, _close_all, self._open, self._lock)

    @contextmanager
    def connection(self):
        db = getattr(self._local, "db", None)
        if db is None:
            db = open_for_reading(self.db_path, check_same_thread=False)  # closed by `close`, from any thread
            with self._lock:
                self._open.append(db)
            self._local.db = db
        try:
            yield db
        except sqlite3.DatabaseError:
            self._drop(db)
            raise
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if db.in_transaction:  # a read that forgot its COMMIT must not pin its snapshot
            db.execute("ROLLBACK")

    def _drop(self, db: sqlite3.Connection) -> None:
        self._local.db = None
        with self._lock:
            if db in self._open:
                self._open.remove(db)
        db.close()

    def close(self) -> None:
        """Close every kept connection; a thread that reads again opens a new one."""
        _close_all(self._open, self._lock)
        self._local = threading.local()


def _close_all(connections: list[sqlite3.Connection], lock: threading.Lock) -> None:
    with lock:
        for db in connections:
            db.close()
        connections.clear()
