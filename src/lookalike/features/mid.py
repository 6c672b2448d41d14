"""Mid-level features: the pooled output of intermediate blocks, appended to the final one.

The last feature map of a CNN says what is in a picture; an intermediate block's says more
about its texture and local structure, which is what tells apart two parts of one photograph
or a photo from a crop of a similar one. Copy-detection descriptors therefore often join
several depths. Here each part is pooled, L2-normalised, weighted and concatenated with the
final descriptor, normalised too:

    [ f / |f| ,  w1 * m1 / |m1| ,  w2 * m2 / |m2| , ... ]

all inside the network's one forward pass (`models.FeatureNet`), so every runner (eager,
frozen, compiled, ONNX Runtime, OpenVINO) gives the same vector and no pass is added. A
mid-level spec is written `BLOCK:POOLING:WEIGHT`, several joined by '+': `10:max:0.5` is the
output of block 10 (0-based: `net._blocks.10` of EfficientNet-Lite0, 112 channels, stride
16; ResNet-50's 16 bottlenecks are numbered 0 to 15 the same way), max-pooled, weight 0.5.
'none' appends nothing: the network's own vector (how every index built before this option
was made, and how one without a recorded `mid` is searched).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidParameter

NONE = "none"
POOLINGS = ("max", "avg", "gem")


@dataclass(frozen=True)
class Tap:
    """One intermediate block's part of the descriptor."""

    block: int
    pooling: str
    weight: float

    def text(self) -> str:
        return f"{self.block}:{self.pooling}:{self.weight:g}"


def parse_mid(spec: str | None) -> tuple[Tap, ...]:
    """The taps of a spec like '10:max:0.5' or '10:max:0.5+12:gem:0.3' ('none' or '': none);
    a malformed one is refused in one line. Blocks are checked against a model by `check`."""
    text = NONE if spec is None else str(spec).strip()
    if text in (NONE, ""):
        return ()
    taps: list[Tap] = []
    for part in text.split("+"):
        fields = part.strip().split(":")
        if len(fields) != 3:
            raise InvalidParameter(f"mid-level features {spec!r}: give BLOCK:POOLING:WEIGHT (e.g. 10:max:0.5), "
                                   "several joined by +, or none")
        block, pooling, weight = (f.strip() for f in fields)
        if not block.isdigit():
            raise InvalidParameter(f"mid-level features {spec!r}: block {block!r} is not a whole number")
        if pooling not in POOLINGS:
            raise InvalidParameter(f"mid-level features {spec!r}: unknown pooling {pooling!r}; "
                                   f"choose one of {', '.join(POOLINGS)}")
        try:
            w = float(weight)
        except ValueError:
            w = math.nan
        if not (math.isfinite(w) and w > 0):
            raise InvalidParameter(f"mid-level features {spec!r}: weight {weight!r} must be a positive number")
        if any(t.block == int(block) and t.pooling == pooling for t in taps):
            raise InvalidParameter(f"mid-level features {spec!r}: block {block} with {pooling} pooling is "
                                   "given twice")
        taps.append(Tap(int(block), pooling, w))
    return tuple(taps)


def mid_text(taps: Sequence[Tap]) -> str:
    """The canonical spec of `taps` ('none' for none): what an index's manifest records."""
    return "+".join(t.text() for t in taps) or NONE


def check(taps: Sequence[Tap], channels: Sequence[int], model: str) -> None:
    """Refuse, in one line, a tap beyond the blocks of `model` (whose outputs have `channels`)."""
    for t in taps:
        if not 0 <= t.block < len(channels):
            raise InvalidParameter(f"mid-level block {t.block} is out of range: {model} has blocks 0 to "
                                   f"{len(channels) - 1}")


def dim(taps: Sequence[Tap], channels: Sequence[int]) -> int:
    """How many dimensions the taps add."""
    return sum(channels[t.block] for t in taps)


def describe(final: Tensor, maps: Sequence[Tensor], taps: Sequence[Tap], pool) -> Tensor:
    """The descriptor: the final pooled vector (n, c) normalised, then each tapped map (n, c_i,
    h, w), pooled by `pool(map, pooling)`, normalised and weighted, concatenated."""
    parts = [F.normalize(final, dim=1)]
    parts += [t.weight * F.normalize(pool(m, t.pooling), dim=1) for m, t in zip(maps, taps)]
    return torch.cat(parts, dim=1)
