"""Writing outputs safely: checked before any work, all or nothing, never over what is not ours.

- `check_output_file` / `check_output_folder`: everything that can be said about an output
  before the work starts (a folder where a file is wanted, a missing parent, a read-only
  folder, a wrong extension, an output that is also an input, a folder of someone else's).
- `atomic_path`: write beside, flush to disk, rename over; the file gets the mode a plain
  `open()` would give it (0666 less the umask, or the mode of the file it replaces).
- Folders lookalike makes for itself (staging, the demo's output) hold a marker file,
  `.lookalike`; only a marked folder is ever removed or written into without asking.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import InvalidParameter, WriteError, write_error

MARKER = ".lookalike"  # the file that makes a folder lookalike's own


# -- checks before the work ------------------------------------------------------------------
def check_output_file(path: str | os.PathLike, *, suffixes: Iterable[str], what: str,
                      inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """`path` as a file that can be written, or a one-line error now rather than after the work.

    Refused: a suffix not in `suffixes` (compared in lower case), an existing folder, a
    missing parent folder, a folder that cannot be written in, and a path that is one of
    `inputs` (the same file, whatever the spelling, links included).
    """
    path = Path(path)
    suffixes = tuple(suffixes)
    if path.is_dir():
        raise InvalidParameter(f"{path}: is a folder; give a file name for the {what} (ending in {_either(suffixes)})")
    if path.suffix.lower() not in suffixes:
        raise InvalidParameter(f"{path}: wrong extension for the {what}; "
                               f"give a file name ending in {_either(suffixes)}")
    for source in inputs:
        if same_file(path, source):
            raise InvalidParameter(f"{path}: is also an input ({source}); writing the {what} there would destroy "
                                   "it, give another name")
    check_writable_parent(path)
    return path


def _either(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_output_folder(path: str | os.PathLike, *, kind: str, force: bool = False) -> Path:
    """`path` as a folder that lookalike may write its `kind` of output into.

    Fine: a folder that does not exist yet (its parent must), an empty one, one marked as
    lookalike's own `kind`, or, with `force`, any folder (lookalike then replaces its own
    outputs there, by name, and touches nothing else). Anything else is refused in one
    line, before any work.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidParameter(f"{path}: is a file, not a folder; give a folder for the {kind} output")
    if not path.exists():
        check_writable_parent(path)
        return path
    if not force and any(path.iterdir()) and not is_own_folder(path, kind):
        raise InvalidParameter(f"{path}: holds files lookalike did not write; give a new or empty folder, "
                               f"or --force to write the {kind} output into it (nothing else there is touched)")
    check_writable_parent(path / MARKER)
    return path


def check_writable_parent(path: Path) -> None:
    """The folder that will hold `path` exists and takes a new file (tried, so that a
    read-only mount or /proc is found out too, for root as well)."""
    parent = path.parent
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "no such folder"
        raise InvalidParameter(f"{path}: cannot be written, {parent}: {what}")
    check_writable_folder(parent, path)


def check_writable_folder(folder: Path, name: str | os.PathLike | None = None) -> None:
    """A new file can be made in `folder` (tried); else a `WriteError` naming `name` (default
    the folder)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".lookalike-probe-", dir=folder)
    except OSError as exc:
        raise write_error(name or folder, exc) from exc
    os.close(fd)
    os.unlink(probe)


def renamed(exc: WriteError, path: str | os.PathLike) -> WriteError:
    """The write failure `exc` told of `path`, the output asked for, rather than of a hidden
    work file made on the way to it (the reason, from the OSError behind it, is kept)."""
    cause = exc.__cause__ or exc.__context__
    if not isinstance(cause, OSError):
        return exc
    new = write_error(path, cause)
    new.__cause__ = cause
    return new


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether paths `a` and `b` name one file (links followed; False when either is missing)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


# -- lookalike's own folders -------------------------------------------------------------------
def make_own_folder(path: str | os.PathLike, kind: str, known: Iterable[str] = ()) -> Path:
    """Create folder `path` (its parent must exist), or take it if it is empty, already
    lookalike's own `kind`, or holds only entries named in `known` (what lookalike put there
    before it marked its folders), and mark it as such. Refuses a folder with anything else."""
    path = Path(path)
    try:
        path.mkdir(exist_ok=True)
    except FileExistsError:
        raise InvalidParameter(f"{path}: is a file, not a folder") from None
    except OSError as exc:
        raise write_error(path, exc) from exc
    if not is_own_folder(path, kind):
        if any(p.name not in set(known) for p in path.iterdir()):
            raise InvalidParameter(f"{path}: exists and holds files lookalike did not write; move it away")
        atomic_write_text(path / MARKER, json.dumps({"lookalike": kind}))
    return path


def is_own_folder(path: str | os.PathLike, kind: str | None = None) -> bool:
    """Whether `path` is a folder holding lookalike's marker (of `kind`, when given)."""
    try:
        mark = json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(mark, dict) and "lookalike" in mark and (kind is None or mark["lookalike"] == kind)


def remove_own_folder(path: str | os.PathLike, kind: str) -> None:
    """Remove folder `path` and what it holds, if it is lookalike's own `kind`; a folder
    that is not marked so is left as it is."""
    if is_own_folder(path, kind):
        shutil.rmtree(path, ignore_errors=True)


def claim_own_folder(path: str | os.PathLike, kind: str) -> None:
    """Mark an existing folder as lookalike's own (the user said --force)."""
    if not is_own_folder(path, kind):
        atomic_write_text(Path(path) / MARKER, json.dumps({"lookalike": kind}))


# -- atomic writes -----------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from exc
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _new_file_mode(path: Path) -> int:
    """The mode `open(path, "w")` would leave: the existing file's, else 0666 less the umask
    (mkstemp makes its files 0600 whatever the umask)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~umask()


def umask() -> int:
    """This process's umask, read without changing it where Linux tells it (/proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read (set, then put back)
    os.umask(mask)
    return mask


__all__ = ["MARKER", "atomic_path", "atomic_save_npy", "atomic_write_text", "check_output_file",
           "check_output_folder", "check_writable_folder", "check_writable_parent", "claim_own_folder", "is_own_folder",
           "make_own_folder", "remove_own_folder", "renamed", "same_file", "umask"]
