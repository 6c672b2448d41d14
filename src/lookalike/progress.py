"""Progress bars: one place decides how long work is shown (tqdm, with rate and ETA)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def bar(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
        enabled: bool = True, initial: int = 0) -> Iterator[T]:
    """Wrap `iterable` in a tqdm bar on stderr, or return it unchanged when not `enabled`."""
    if not enabled:
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr,
                     dynamic_ncols=True, smoothing=0.1))


def counter(*, total: int | None, desc: str, unit: str, enabled: bool = True, initial: int = 0,
            unit_scale: bool = False):
    """A bar that the caller advances with `.update(n)`; a no-op object when disabled."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, unit_scale=unit_scale, unit_divisor=1024 if unit == "B" else 1000)
