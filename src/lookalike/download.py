"""Streaming HTTP downloads that resume, verify and never leave a half file in place.

Bytes go to `DEST.part`; a later call continues it with an HTTP Range request. Only a
download whose size and checksum verify is renamed to `DEST`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from .errors import DownloadError
from .progress import counter

CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK * 8):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None, sha256_prefix: str | None = None,
             progress: bool = True, timeout: float = 30.0) -> Path:
    """Download `url` to `dest`, resuming a previous partial download of it.

    Parameters
    ----------
    md5, sha256_prefix : expected checksum (full MD5 hex, or the leading hex digits of the
        SHA-256), checked before the file is put in place.

    Returns the path of the verified file. Raises `DownloadError` naming the URL and what
    went wrong; the partial file is kept so that the next call resumes.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "lookalike"})
    except ValueError as exc:  # urllib's answer to a string that is not a URL
        raise DownloadError(f"{url}: not a URL ({exc}); give an address such as https://host/file") from None
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to fetch: the part is complete
            return _verify_and_place(part, dest, url, md5, sha256_prefix, expected_size=None)
        raise DownloadError(f"{url}: server answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, socket.timeout, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"{url}: cannot download ({reason}); is this machine offline? "
            f"Copy the file by hand to {dest}"
        ) from None
    with response:
        if offset and response.status == 206:
            mode = "ab"
        else:  # the server ignored the range: start over
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        bar = counter(total=total, desc=dest.name, unit="B", enabled=progress, initial=offset, unit_scale=True)
        try:
            with open(part, mode) as f:
                while block := response.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
        except (OSError, socket.timeout) as exc:
            raise DownloadError(
                f"{url}: download broke off at {part.stat().st_size} bytes ({exc}); "
                "run the same command again to resume"
            ) from None
        finally:
            bar.close()
    return _verify_and_place(part, dest, url, md5, sha256_prefix, expected_size=total)


def _verify_and_place(part: Path, dest: Path, url: str, md5: str | None, sha256_prefix: str | None,
                      expected_size: int | None) -> Path:
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        raise DownloadError(
            f"{url}: got {size} of {expected_size} bytes; run the same command again to resume"
        )
    if md5 and file_digest(part, "md5") != md5.lower():
        part.unlink()
        raise DownloadError(f"{url}: MD5 checksum mismatch (expected {md5}); the file was removed, try again")
    if sha256_prefix and not file_digest(part, "sha256").startswith(sha256_prefix.lower()):
        part.unlink()
        raise DownloadError(
            f"{url}: SHA-256 does not start with {sha256_prefix}; the file was removed, try again"
        )
    os.replace(part, dest)
    return dest
