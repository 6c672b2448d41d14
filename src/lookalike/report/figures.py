"""Figures, drawn with matplotlib's Agg backend (no display needed): the shared set-up and
saving, and the bench chart. The image grids are in `grids.py`."""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: str | os.PathLike) -> Path:
    """Lay out `fig`, write it to `out` (PNG at 100 dpi), close it; returns the path."""
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
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
    ax.set_xlabel("search time, seconds (log scale)")
    w = result["workload"]
    ax.set_title(f"kNN search: {w['nq']} queries x {w['nb']} base x {w['d']}-d, k={w['k']}, {w['metric']}",
                 fontsize=9)
    for bar, r in zip(bars, recs):
        sp = r.get("speedup_vs_sklearn")
        label = f" {r['search_s']:.2f} s" + (f"  ({sp:.1f}x sklearn)" if sp else "")
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
    ax.set_xlim(min(times) / 2, max(times) * 8)
    return save(fig, out)
