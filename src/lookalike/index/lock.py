"""The index's commit lock: one writer commits at a time; everything before the commit
(reading images, running the CNN) runs in parallel.

The lock is an OS file lock (`fcntl.flock`) on `INDEX/.lock`, taken on a new open file
each time, so it serialises threads of one process as well as processes. The kernel drops
it when its holder dies (kill -9 included): a lock is never left behind. Its holder writes
who it is (pid, host, since when) into the file, so that a writer that waits in vain can
say whom it waited for. The file itself is never removed (removing a lock file races with
the next writer opening it).

Held while: a segment is written and committed (`IndexStore.append`), images are marked
removed, the index is compacted, and orphaned segment files are cleaned. Because no
segment is ever written outside the lock, a segment file that no commit names, seen while
holding the lock, is provably an orphan (its writer died or rolled back).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..errors import IndexBusy, write_error

LOCK_FILE = ".lock"
DEFAULT_TIMEOUT = 120.0  # seconds a writer waits for another's commit (a compaction can take a while)
_POLL = 0.02


def lock_timeout(value: float | None = None) -> float:
    """The wait for the lock: `value`, else $LOOKALIKE_LOCK_TIMEOUT, else `DEFAULT_TIMEOUT`."""
    if value is not None:
        return float(value)
    return float(os.environ.get("LOOKALIKE_LOCK_TIMEOUT", DEFAULT_TIMEOUT))


def holder(path: Path) -> str:
    """Who holds (or last held) the lock of index `path`, in words."""
    try:
        info = json.loads((path / LOCK_FILE).read_text())
        since = float(info["since"])
        return (f"process {int(info['pid'])} on {info['host']}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))} ({time.time() - since:.0f} s ago)")
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


class CommitLock:
    """`with CommitLock(index_path, timeout):` holds the index's commit lock, or raises
    `IndexBusy` naming the holder once `timeout` seconds have passed."""

    def __init__(self, path: str | os.PathLike, timeout: float | None = None):
        self.path = Path(path)
        self.timeout = lock_timeout(timeout)
        self._file = None

    def __enter__(self) -> CommitLock:
        file = self.path / LOCK_FILE
        try:
            f = open(file, "a+")  # noqa: SIM115 - held until __exit__
        except OSError as exc:
            raise write_error(file, exc) from exc
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    who = holder(self.path)
                    f.close()
                    raise IndexBusy(f"{self.path}: another writer holds the index's commit lock ({who}); "
                                    f"waited {self.timeout:g} s. Nothing was changed; try again later, or "
                                    "give more time with --lock-timeout") from None
                time.sleep(_POLL)
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        f, self._file = self._file, None
        if f is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()
