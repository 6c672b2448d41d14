"""Retrieval quality you can measure: the copy-detection benchmark behind `lookalike eval`.

The data flow, one module each: `edits` (what a copy may have gone through, by name) ->
`copies` (originals read whole, their edited copies, both made square for the network) ->
`configs` (how vectors are made and compared: presets and `field=value` strings) ->
`evaluate` (index, query, rank, score) -> `tables` (the figures as markdown).
Pictures of the misses are drawn by `report.grids.misses_grid`.
"""

from __future__ import annotations

from .configs import PRESETS, Config, parse_config
from .edits import DEFAULT_EDITS, EDITS, apply_edit, parse_edits
from .copies import photo_originals
from .evaluate import Evaluation, Miss, Scores, evaluate, evaluate_images, ranks_of, score

__all__ = ["DEFAULT_EDITS", "EDITS", "PRESETS", "Config", "Evaluation", "Miss", "Scores", "apply_edit", "evaluate",
           "evaluate_images", "parse_config", "photo_originals", "parse_edits", "ranks_of", "score"]
