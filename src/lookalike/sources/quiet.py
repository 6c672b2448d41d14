"""PIL's warnings while lookalike decodes: none reach the user.

PIL warns about files, not about code: corrupt EXIF or TIFF tags ("Possibly corrupt EXIF
data", "Truncated File Read"), palette transparency, invalid APNG chunks. What such a
warning means for lookalike is decided where it matters (a file that does not decode is
listed as skipped; metadata that does not parse is ignored), so PIL's own words are
silenced, except `DecompressionBombWarning`, which is raised as an error so that an
oversized image is refused before it is decoded.

`warnings.catch_warnings` is not thread-safe before Python 3.14 (it swaps the process-wide
filter list on entry and back on exit, so two threads that overlap can leave each other's
filters behind), and decoding runs in a thread pool. So `pil_quiet()` keeps one shared
window instead: the first thread in adds two filters (for PIL's modules only), the last one
out removes them. While any image is being decoded, PIL's warnings from other threads of
the process are silenced too. Where warning filters are per thread and context (Python
3.14's `context_aware_warnings`), a plain `catch_warnings` per call is used instead.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

_LOCK = threading.Lock()
_users = 0
_added: list[tuple] = []


def _add_filters() -> None:
    warnings.filterwarnings("ignore", module=r"PIL(\..*)?$")
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


@contextmanager
def pil_quiet() -> Iterator[None]:
    """Within: PIL's warnings are silenced and a decompression bomb warning is raised."""
    global _users
    if getattr(sys.flags, "context_aware_warnings", False):  # Python 3.14+: filters are per thread
        with warnings.catch_warnings():
            _add_filters()
            yield
        return
    with _LOCK:
        if _users == 0:
            _add_filters()
            _added[:] = warnings.filters[:2]
        _users += 1
    try:
        yield
    finally:
        with _LOCK:
            _users -= 1
            if _users == 0:
                for entry in _added:
                    if entry in warnings.filters:  # absent when a catch_warnings block ended meanwhile
                        warnings.filters.remove(entry)
                _added.clear()
