"""Which files lookalike opens, and how: regular files only, and folders walked once each.

Anything that is not a regular file (a FIFO, a socket, a device such as /dev/zero) is never
opened: reading it could block forever or never end. `check_file` says so from `os.stat`,
and `open_file` opens without blocking and checks the opened file again, so a file swapped
for a FIFO in between is refused too.

`walk(root)` lists a folder the way a source uses it, and accounts for every name it meets:
each one is either an image file to use or listed as skipped, with the reason. Its policy:

- Image files are chosen by extension (`EXTENSIONS`), in sorted order, folder by folder
  (a folder's own files, then its sub-folders, depth first).
- Hidden names (starting with ".") are not used: a hidden file is listed as skipped, and a
  hidden folder is listed once, without looking inside (`.git`, `.thumbnails`, macOS `._*`).
- Symbolic links are followed, to files and to folders, also outside the folder (a folder
  of links is a common way to assemble a data set). Every real folder is walked once: a
  link back to a folder already walked (a loop) or a second link to it is listed as skipped.
  A broken link, a link loop and a folder that cannot be listed are listed as skipped.
- A name that is not valid UTF-8 is listed as skipped (ids are text that an index, JSON and
  figures must carry); rename the file to use it.
- Nothing is opened while walking (only `os.stat`), so a FIFO in the folder cannot block it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from ..errors import SourceError
from ..text import printable
from .base import Skipped

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # POSIX: opening a FIFO returns at once (Windows has none)
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def kind(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO", "a socket", ...)."""
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def stat_reason(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """Why `os.stat` or `open` failed, in the words a skipped file is listed with."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(exc, FileNotFoundError):
        return "broken symbolic link" if path is not None and os.path.islink(path) else "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, NotADirectoryError):
        return "no such file (a part of its path is not a folder)"
    return exc.strerror or type(exc).__name__


def check_file(path: str | os.PathLike, what: str = "an image file") -> os.stat_result:
    """`os.stat(path)` of a regular file; `SourceError` naming `path` (escaped) for anything
    else: missing, a folder ("is a folder, not `what`"), a FIFO, a device, a socket, a broken
    link, no permission."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SourceError(f"{printable(path)}: {stat_reason(exc, path)}") from None
    except ValueError:  # a NUL character in the name
        raise SourceError(f"{printable(path)}: not a valid file name") from None
    _refuse_irregular(path, st.st_mode, what)
    return st


def open_file(path: str | os.PathLike) -> BinaryIO:
    """Open the regular file `path` for reading, never blocking (see the module docstring)."""
    check_file(path)
    try:
        file = open(path, "rb", opener=lambda p, flags: os.open(p, flags | _NONBLOCK))  # noqa: SIM115
    except OSError as exc:
        raise SourceError(f"{printable(path)}: {stat_reason(exc, path)}") from None
    try:
        _refuse_irregular(path, os.fstat(file.fileno()).st_mode)
    except BaseException:
        file.close()
        raise
    return file


def _refuse_irregular(path: str | os.PathLike, mode: int, what: str = "an image file") -> None:
    if stat.S_ISDIR(mode):
        raise SourceError(f"{printable(path)}: is a folder, not {what}")
    if not stat.S_ISREG(mode):
        raise SourceError(f"{printable(path)}: not a regular file ({kind(mode)}); not opened")


def walk(root: Path) -> tuple[list[Path], list[Skipped]]:
    """The image files below `root` in order, and every other name met, as skipped."""
    images: list[Path] = []
    skipped: list[Skipped] = []
    walked = {_key(os.stat(root)): root}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as exc:
            skipped.append(Skipped(str(folder), f"cannot list this folder ({stat_reason(exc)}); "
                                                "nothing in it is used"))
            continue
        folders = []
        for name in names:
            path = folder / name
            entry = _sort(path, name, walked, skipped)
            if entry == "file":
                images.append(path)
            elif entry == "folder":
                folders.append(path)
        stack.extend(reversed(folders))
    return images, skipped


def _sort(path: Path, name: str, walked: dict, skipped: list[Skipped]) -> str:
    """"file" (an image to use), "folder" (to walk) or "skipped" (and listed in `skipped`)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        reason = stat_reason(exc, path)
        skipped.append(Skipped(str(path), f"hidden file, not used ({reason})" if name.startswith(".") else reason))
        return "skipped"
    is_dir = stat.S_ISDIR(st.st_mode)
    if name.startswith("."):
        skipped.append(Skipped(str(path), "hidden folder, not looked into" if is_dir else "hidden file, not used"))
        return "skipped"
    if not is_utf8(name):
        skipped.append(Skipped(str(path), f"its name is not valid UTF-8; rename the {'folder' if is_dir else 'file'} "
                                          "to use it"))
        return "skipped"
    if is_dir:
        first = walked.setdefault(_key(st), path)
        if first is not path:
            skipped.append(Skipped(str(path), f"the same folder as {printable(first)}, which is walked once "
                                              "(a symbolic link loop or a second link)"))
            return "skipped"
        return "folder"
    if not stat.S_ISREG(st.st_mode):
        skipped.append(Skipped(str(path), f"not a regular file ({kind(st.st_mode)}); not opened"))
        return "skipped"
    if path.suffix.lower() not in EXTENSIONS:
        skipped.append(Skipped(str(path), f"not an image file (extension {printable(path.suffix) or 'none'})"))
        return "skipped"
    return "file"


def is_utf8(name: str) -> bool:
    """Whether `name` is valid UTF-8 on disk (Python keeps other bytes as lone surrogates,
    which an id cannot carry into SQLite, JSON or a figure's title)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino
