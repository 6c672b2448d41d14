"""Figures, drawn with matplotlib's Agg backend (no display needed): the shared set-up and
saving, and the bench chart. The image grids are in `grids.py`.

A figure is written in the format its file name says (`IMAGE_SUFFIXES`), atomically, and
matplotlib's warnings (a glyph missing from the font for a file name in another script, a
layout that does not fit) stay off stderr: the picture is written all the same.
"""

from __future__ import annotations

import os
import textwrap
import warnings
from collections.abc import Iterable
from pathlib import Path

from ..atomic import atomic_path, check_output_file
from ..errors import InvalidParameter
from ..text import seconds

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".pdf", ".svg")


def check_figure_out(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """`out` as a picture file that can be written, before any work (see `check_output_file`):
    neither one of the files of `inputs` nor an existing file inside a folder of `inputs`
    (a picture written over one of the images it shows)."""
    inputs = [Path(p) for p in inputs]
    out = check_output_file(out, suffixes=IMAGE_SUFFIXES, what="picture", inputs=inputs)
    for folder in inputs:
        if out.is_file() and folder.is_dir() and out.resolve().is_relative_to(folder.resolve()):
            raise InvalidParameter(f"{out}: is a file of the input {folder}; writing the picture there would "
                                   "destroy it, give another name")
    return out


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _lay_out(fig) -> None:
    """tight_layout, with a figure title (suptitle) wrapped to the figure's width and room made
    for it above the axes: left to tight_layout, a long title was cut at both edges (an
    evaluation's configuration) and a title sat on the first row's captions."""
    text = getattr(fig, "_suptitle", None)
    if text is None or not text.get_text():
        fig.tight_layout()
        return
    size = text.get_fontsize()
    per_line = max(20, int(fig.get_figwidth() * 72 / (0.64 * size)))  # characters: a glyph is ~0.6 em wide
    title = "\n".join(textwrap.fill(line, per_line, break_on_hyphens=False) for line in text.get_text().splitlines())
    text.set_text(title)
    room = ((title.count("\n") + 1) * size * 1.35 + 8) / 72  # inches: its lines and a margin
    fig.tight_layout(rect=(0, 0, 1, max(0.5, 1 - room / fig.get_figheight())))


def save(fig, out: str | os.PathLike) -> Path:
    """Lay out `fig`, write it to `out` (100 dpi, in the format of its suffix), close it;
    returns the path written."""
    try:
        out = check_figure_out(out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _lay_out(fig)
            with atomic_path(out) as tmp:
                fig.savefig(tmp, dpi=100, format=out.suffix.lower().lstrip("."))
    finally:
        pyplot().close(fig)
    return out


def bench_chart(result: dict, out: str | os.PathLike) -> Path:
    """Search time per backend (log scale), labelled with the speed-up over scikit-learn."""
    plt = pyplot()
    recs = sorted(result["results"], key=lambda r: r["search_s"], reverse=True)
    names = [r["backend"] for r in recs]
    times = [r["search_s"] for r in recs]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(recs) + 1.5))
    bars = ax.barh(names, times, color=["tab:orange" if n == "lookalike" else "tab:gray" for n in names])
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())  # a narrow range labels its minor ticks over each other
    steady = result["workload"].get("steady")
    repeated = "\nrepeated searches of the queries in each process, after the first" if steady else ""
    ax.set_xlabel(f"search time, seconds (log scale; fit excluded, best of the repeats){repeated}")
    w = result["workload"]
    ax.set_title(f"kNN search: {w['nq']} queries x {w['nb']} base x {w['d']}-d, k={w['k']}, {w['metric']}",
                 fontsize=9)
    for bar, r in zip(bars, recs):
        sp = r.get("speedup_vs_sklearn")
        label = f" {seconds(r['search_s'])}"  # milliseconds below 0.1 s, as `lookalike bench` prints them
        label += f"  ({sp:.1f}x scikit-learn's speed)" if sp else ""
        if not r.get("agree", True):
            label += "  WRONG: disagrees with float64"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
    ax.set_xlim(min(times) / 2, max(times) * 8)
    return save(fig, out)
