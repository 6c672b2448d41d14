"""Errors lookalike raises on purpose.

`LookalikeError` is a user mistake or an unusable input: the CLI prints its message on one
line and exits with its `exit_code` (2; 1 for a `WriteError`), with no traceback. Raise one
of these, never a bare ValueError or TypeError, for a mistake a user can make: anything that
is not a `LookalikeError` (or an OSError from the machine) is a bug, and the CLI shows its
traceback and exits with status 70.
"""

from __future__ import annotations


class LookalikeError(Exception):
    """A problem the user can fix: bad path, bad value, unusable file."""

    exit_code = 2  # the CLI's exit status: a usage or data error


class InvalidParameter(LookalikeError, ValueError, TypeError):
    """A parameter, option or input array that cannot be used as given. It is a ValueError and
    a TypeError too, as scikit-learn's InvalidParameterError is, so callers that catch those
    keep working."""


class SourceError(LookalikeError, ValueError):
    """An image source cannot be read as asked."""


class ModelError(LookalikeError, ValueError):
    """An unknown model, or weights that do not fit it."""


class WeightsUnavailable(LookalikeError):
    """Pretrained weights are not cached and cannot be downloaded."""


class DownloadError(LookalikeError):
    """A download failed, was cut short or did not verify."""


class BadIndex(LookalikeError):
    """An index folder is missing, corrupt or does not match the request."""


class SearchError(LookalikeError, ValueError):
    """A search request that cannot be answered (bad k, unknown id)."""


class ClusterError(LookalikeError):
    """A Dask cluster that cannot be used: a scheduler that cannot be reached or started, a
    bad `--scheduler`, Dask not installed, or work the cluster gave up on."""


class WriteError(LookalikeError):
    """Writing failed (disk full, no permission); whatever was committed before is intact."""

    exit_code = 1


def write_error(path, exc: BaseException) -> WriteError:
    """A one-line WriteError naming `path` and the reason of an OSError."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return WriteError(f"{path}: cannot write ({reason}); is the disk full or the folder read-only? "
                      "Nothing committed before was changed")


class UnknownImage(SearchError):
    """An image id, key or source that the index does not hold (or no longer holds: removed)."""


class IndexBusy(LookalikeError):
    """Another writer holds the index's commit lock for longer than this one would wait."""

    exit_code = 1
