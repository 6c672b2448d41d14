"""`db.Readers`: read connections kept per thread, which still see every commit."""

import sqlite3
import subprocess
import sys
import threading

import pytest

from lookalike.index.db import Readers, open_for_writing


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "meta.sqlite"
    db = open_for_writing(path)
    db.execute("CREATE TABLE t (x INTEGER)")
    db.execute("INSERT INTO t VALUES (1)")
    db.close()
    return path


def count(readers: Readers) -> int:
    with readers.connection() as db:
        return db.execute("SELECT count(*) FROM t").fetchone()[0]


def commit_elsewhere(path, sql: str) -> None:
    """`sql` committed by another process."""
    code = f"import sqlite3; db = sqlite3.connect({str(path)!r}); db.execute({sql!r}); db.commit(); db.close()"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_kept_connection_sees_commits_of_other_processes_and_connections(db_path):
    readers = Readers(db_path)
    try:
        assert count(readers) == 1
        with readers.connection() as first:
            pass
        commit_elsewhere(db_path, "INSERT INTO t VALUES (2)")
        assert count(readers) == 2
        writer = open_for_writing(db_path)
        writer.execute("DELETE FROM t WHERE x = 1")
        writer.close()
        assert count(readers) == 1
        with readers.connection() as again:
            assert again is first  # the same connection, kept
    finally:
        readers.close()


def test_a_transaction_left_open_by_an_error_is_rolled_back(db_path):
    readers = Readers(db_path)
    try:
        with pytest.raises(RuntimeError), readers.connection() as db:
            db.execute("BEGIN")
            db.execute("SELECT count(*) FROM t").fetchone()  # a read snapshot is held from here
            raise RuntimeError("a reader failed half-way")
        commit_elsewhere(db_path, "INSERT INTO t VALUES (3)")
        assert count(readers) == 2  # not the snapshot of the failed read
        with pytest.raises(sqlite3.OperationalError), readers.connection() as db:
            db.execute("SELECT nothing FROM nowhere")
        assert count(readers) == 2  # a connection that failed is replaced
    finally:
        readers.close()


def test_one_connection_per_thread_all_closed_together(db_path):
    readers = Readers(db_path)
    seen = []

    def read():
        with readers.connection() as db:
            seen.append(db)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(db) for db in seen}) == 3
    readers.close()
    for db in seen:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            db.execute("SELECT 1")
    assert count(readers) == 1  # a read after close opens a new connection
    readers.close()
