"""Each writer's own staging folder: `INDEX/.writers/<key>-<n>/`.

An `add` embeds its images into a staging folder before it commits. The folder is named
after what the work is (`key`: the source, the images it holds and the model), so that an
interrupted add, run again, finds its own finished chunks and resumes; and it is held with
an OS file lock (`.owner`) for as long as its writer works, so that no other writer uses
it: a second writer doing the very same work at the same time takes `<key>-1`, and a
writer never reads, resumes or removes another's work. The kernel drops the lock when its
holder dies, so a folder left by a killed writer is free for the rerun that resumes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from ..atomic import make_own_folder, remove_own_folder
from ..errors import write_error

ROOT = ".writers"
KIND = "staging"
OWNER = ".owner"
KNOWN = (".features.npy.partial", "features.npy", "features.json", OWNER)  # what a staging folder holds


def work_key(spec: str, ids: list[str], config: dict) -> str:
    """A short name for one piece of work: the source, its images and the model."""
    text = json.dumps({"spec": spec, "ids": ids, "config": config}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Staging:
    """`with Staging(index_path, key) as stage:` a staging folder, `stage.folder`, that this
    writer alone holds; `stage.done()` removes it (after the commit)."""

    def __init__(self, index: str | os.PathLike, key: str):
        self.root = Path(index) / ROOT
        self.key = key
        self.folder: Path | None = None
        self._file = None

    def __enter__(self) -> Staging:
        try:
            self.root.mkdir(exist_ok=True)
        except OSError as exc:
            raise write_error(self.root, exc) from exc
        n = 0
        while True:
            folder = self.root / f"{self.key}-{n}"
            try:
                make_own_folder(folder, KIND, known=KNOWN)
                f = open(folder / OWNER, "a+")  # noqa: SIM115 - held until __exit__
            except FileNotFoundError:  # its last owner removed it just now: take it again
                continue
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                n += 1
                continue
            try:  # the folder may have been removed by its last owner between open and flock
                same = os.stat(folder / OWNER).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                f.close()
                continue
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid()}))
            f.flush()
            self.folder, self._file = folder, f
            return self

    def done(self) -> None:
        """The work is committed: remove the folder (still holding it, so no one takes it
        half removed)."""
        if self.folder is not None:
            remove_own_folder(self.folder, KIND)

    def __exit__(self, *exc) -> None:
        f, self._file = self._file, None
        if f is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()
