"""PIL's complaints while lookalike decodes: none reach the user's terminal.

PIL speaks about damaged files on three channels: Python warnings (corrupt EXIF or TIFF
tags, "Truncated File Read", palette transparency, invalid APNG chunks), its loggers ("More
samples per pixel than can be decoded") and, for compressed TIFFs, libtiff's C library,
which prints to the process's stderr ("ZIPDecode: Decoding error at scanline 0"). What
such a message means for lookalike is decided where it matters (a file that does not
decode is listed as skipped, with PIL's reason; metadata that does not parse is ignored),
so the messages themselves are silenced, except `DecompressionBombWarning`, which is raised
as an error so that an oversized image is refused before it is decoded.

`warnings.catch_warnings` is not thread-safe before Python 3.14 (it swaps the process-wide
filter list on entry and back on exit, so two threads that overlap can leave each other's
filters behind), and decoding runs in a thread pool. So `pil_quiet()` keeps one shared
window instead: the first thread in adds two warning filters (for PIL's modules only) and
turns libtiff's message handlers off; the last one out restores both. While any image is
being decoded, PIL's messages from other threads of the process are silenced too. Where
warning filters are per thread and context (Python 3.14's `context_aware_warnings`), a
plain `catch_warnings` per call is used for the warnings instead.

PIL's loggers get a `logging.NullHandler` (once, on first use): their records still reach
the handlers an application configures, but are no longer printed by logging's last-resort
handler when there are none.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

_LOCK = threading.Lock()
_users = 0
_added: list[tuple] = []
_libtiff_handlers: list[int | None] = []  # libtiff's (error, warning) handlers while silenced


@contextmanager
def pil_quiet() -> Iterator[None]:
    """Within: PIL's warnings, log records and libtiff's messages are silenced, and a
    decompression bomb warning is raised."""
    global _users
    context_aware = getattr(sys.flags, "context_aware_warnings", False)
    with _LOCK:
        if _users == 0:
            _quiet_logging()
            _silence_libtiff()
            if not context_aware:
                _add_filters()
                _added[:] = warnings.filters[:2]
        _users += 1
    try:
        if context_aware:  # Python 3.14+: filters are per thread and context
            with warnings.catch_warnings():
                _add_filters()
                yield
        else:
            yield
    finally:
        with _LOCK:
            _users -= 1
            if _users == 0:
                for entry in _added:
                    if entry in warnings.filters:  # absent when a catch_warnings block ended meanwhile
                        warnings.filters.remove(entry)
                _added.clear()
                _restore_libtiff()


def _add_filters() -> None:
    warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def _quiet_logging() -> None:
    logger = logging.getLogger("PIL")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _silence_libtiff() -> None:
    lib = _libtiff()
    if lib is not None:
        _libtiff_handlers[:] = [lib.TIFFSetErrorHandler(None), lib.TIFFSetWarningHandler(None)]


def _restore_libtiff() -> None:
    lib = _libtiff()
    if lib is not None and _libtiff_handlers:
        error, warning = _libtiff_handlers
        lib.TIFFSetErrorHandler(error)
        lib.TIFFSetWarningHandler(warning)
        _libtiff_handlers.clear()


_LIBTIFF: list = []  # [the ctypes library, or None when it cannot be found], once looked up


def _libtiff():
    """The libtiff that PIL loaded in this process (ctypes), or None if it cannot be found."""
    if not _LIBTIFF:
        _LIBTIFF.append(_find_libtiff())
    return _LIBTIFF[0]


def _find_libtiff():
    from PIL import _imaging  # noqa: F401  (loads PIL's libtiff, when it links one)

    candidates = []
    maps = Path("/proc/self/maps")  # Linux: the libraries mapped into this process
    if maps.is_file():
        lines = maps.read_text(errors="replace").splitlines()
        candidates = sorted({line.split(maxsplit=5)[-1] for line in lines if "libtiff" in line and "/" in line})
    candidates += sorted(str(p) for p in (Path(Image.__file__).parent / ".dylibs").glob("libtiff*"))  # macOS wheels
    for path in candidates:
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
            for name in ("TIFFSetErrorHandler", "TIFFSetWarningHandler"):
                getattr(lib, name).restype = ctypes.c_void_p
                getattr(lib, name).argtypes = [ctypes.c_void_p]
        except (OSError, AttributeError):
            continue
        return lib
    return None
