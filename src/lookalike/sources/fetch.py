"""`lookalike fetch stl10`: the tutorial's download_and_extract, done properly.

Streaming download with a progress bar, resumed with HTTP Range after an interruption,
checked for size and checksum, then extracted into a hidden folder that is renamed into
place only when complete: a half-extracted `stl10_binary` is never visible.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..download import download
from ..errors import DownloadError
from ..text import printable
from .stl10 import FILES

STL10_URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
STL10_MD5 = "91f7769df0f17e558f3565bffb0c7dfb"  # the archive's published checksum (as torchvision checks it)


def fetch_stl10(root: str | os.PathLike | None = None, url: str | None = None, md5: str | None = None,
                progress: bool = True, keep_archive: bool = False) -> Path:
    """Download and extract STL-10 under `root`; returns the `stl10_binary` folder.

    `md5` defaults to the official archive's checksum when `url` is the official one; for
    another URL pass it to have the archive checked (its size is always checked).
    """
    from .stl10 import default_root

    root = Path(root) if root else default_root()
    target = root / "stl10_binary"
    if target.is_dir() and any((target / f).is_file() for f in FILES):
        return target
    url = url or os.environ.get("LOOKALIKE_STL10_URL") or STL10_URL  # a mirror, if the user has one
    if md5 is None and url == STL10_URL:
        md5 = STL10_MD5
    root.mkdir(parents=True, exist_ok=True)
    try:
        archive = download(url, root / url.rsplit("/", 1)[-1], md5=md5, progress=progress)
    except DownloadError as exc:  # the command that fetches takes another address (embed's weights do not)
        raise DownloadError(f"{exc}, or pass another --url (or set LOOKALIKE_STL10_URL)") from None
    extract(archive, root)
    if not keep_archive:
        archive.unlink()
    return target


def extract(archive: Path, root: Path) -> Path:
    """Extract `archive` (holding `stl10_binary/`) so that `root/stl10_binary` appears whole or not at all."""
    tmp = Path(tempfile.mkdtemp(prefix=".stl10-extract-", dir=root))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DownloadError(f"{printable(archive)}: cannot extract ({printable(exc)}); delete it and fetch again") \
                from None
        inner = tmp / "stl10_binary"
        if not inner.is_dir() or not any((inner / f).is_file() for f in FILES):
            raise DownloadError(f"{printable(archive)}: no stl10_binary/ folder with {' or '.join(FILES)} inside")
        os.replace(inner, root / "stl10_binary")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / "stl10_binary"
