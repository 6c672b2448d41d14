"""Figures, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_grid(images: np.ndarray, titles: Sequence[str], out: str | os.PathLike, cols: int = 4,
               suptitle: str | None = None) -> Path:
    """Images (n, h, w, 3) uint8 in a grid, each with its title (the tutorial's show_image)."""
    plt = _plt()
    n = len(images)
    rows = max(1, -(-n // cols))
    cols = min(cols, n)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, im, title in zip(axes.ravel(), images, titles):
        ax.imshow(im)
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def result_grid(query_images: np.ndarray, query_titles: Sequence[str], neighbour_images: np.ndarray,
                distances: np.ndarray, neighbour_titles: Sequence[Sequence[str]], out: str | os.PathLike) -> Path:
    """The tutorial's figure: each row a query, then its k neighbours by growing distance,
    each neighbour titled with its distance."""
    plt = _plt()
    nq, k = distances.shape
    fig, axes = plt.subplots(nq, k + 1, figsize=(2.1 * (k + 1), 2.3 * nq), squeeze=False)
    for r in range(nq):
        axes[r, 0].imshow(query_images[r])
        axes[r, 0].set_title(f"query\n{query_titles[r]}", fontsize=7, color="tab:blue")
        for c in range(k):
            axes[r, c + 1].imshow(neighbour_images[r, c])
            axes[r, c + 1].set_title(f"d={distances[r, c]:.3f}\n{neighbour_titles[r][c]}", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def bench_chart(result: dict, out: str | os.PathLike) -> Path:
    """Search time per backend (log scale), labelled with the speed-up over scikit-learn."""
    plt = _plt()
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
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
