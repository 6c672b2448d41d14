"""Test-time views: an image seen several ways, one descriptor per view, summed.

Copy-detection and instance-retrieval systems describe an image by more than one view of it
and aggregate the views' descriptors: each L2-normalised, summed, and the sum normalised
again (as multi-scale GeM descriptors and test-time augmentation in copy detection do). A copy that
lost part of the picture (a crop, a rotation's black corners, a caption) then still shares
most of one view with its original. Views are computed from the square the network is given
(`Embedder.input_size`), so every caller (index build, search, the service, Dask) gets them
alike, and index and queries are described the same way.

==========  ==========================================================================
full        the whole square (what a single-view embedder sees)
centre      the centre CENTRE x CENTRE of the square, scaled back up to the input side
mirror      the square mirrored left to right
grey        the square in greyscale (ITU-R 601 luma in all three channels)
==========  ==========================================================================

`views="full"` is the single view: its vectors are the network's own, not normalised (how
lookalike always embedded, and how an index without a recorded `views` was built).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidParameter

VIEWS = ("full", "centre", "mirror", "grey")
SINGLE = "full"  # the single view: vectors as the network gives them
CENTRE = 0.7  # the centre view's side, a share of the square's (keeps half the area)
LUMA = (0.299, 0.587, 0.114)


def parse_views(spec: str | Iterable[str]) -> str:
    """Views from 'full+centre' (or a list of names), checked, as their canonical string
    (names in the order given, each once); an unknown one is refused in one line."""
    names = [n.strip() for n in (spec.split("+") if isinstance(spec, str) else spec)]
    if not names or any(not n for n in names):
        raise InvalidParameter(f"views {spec!r}: give view names joined by +, e.g. full+centre")
    for name in names:
        if name not in VIEWS:
            raise InvalidParameter(f"unknown view {name!r}; known views: {', '.join(VIEWS)} (join them with +)")
    return "+".join(dict.fromkeys(names))


def render(x: Tensor, view: str) -> Tensor:
    """View `view` of float pixels `x` (n, 3, s, s) on the 0-255 scale, same shape."""
    if view == "full":
        return x
    if view == "mirror":
        return torch.flip(x, dims=(3,))
    if view == "grey":
        luma = sum(w * x[:, c : c + 1] for c, w in enumerate(LUMA))
        return luma.expand_as(x)
    if view == "centre":
        s = x.shape[-1]
        side = max(1, round(s * CENTRE))
        lo = (s - side) // 2
        inner = x[..., lo : lo + side, lo : lo + side]
        return F.interpolate(inner, size=(s, s), mode="bilinear", align_corners=False)
    raise InvalidParameter(f"unknown view {view!r}; known views: {', '.join(VIEWS)}")


def aggregate(parts: Sequence[Tensor]) -> Tensor:
    """Descriptors (n, d) of each view -> (n, d): each L2-normalised, summed, normalised."""
    total = sum(F.normalize(p.float(), dim=1) for p in parts)
    return F.normalize(total, dim=1)
