"""The two pictures of images every shell draws, with one title format.

- `sample_grid`: random images of a source, each titled with its id and label (the
  tutorial's `show_image`; `lookalike show`, the demo's images.png, the notebook).
- `neighbour_grid`: each row a query, then its k nearest images by growing distance, each
  titled with its distance, key and label (the tutorial's figure; `lookalike grid`, the
  demo's grid.png, the notebook).

Images and titles come from a `Source` (rows are positions in it) or an `Index` (rows are
ids, pixels re-read from where the images came from); `tile_title` is the one title.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import SourceError
from ..text import distance, printable
from .figures import pyplot, save


def tile_title(key: str, label: str | None) -> str:
    """The title of one image: its key (or id), and its label on a second line when it has one
    (control characters of file names written as escapes)."""
    return f"{printable(key)}\n{printable(label)}" if label else printable(key)


def wrapped(text: str, width: int = 28) -> str:
    """`text` (control characters escaped) broken into lines of at most `width` characters, at
    the separators of a file name where it can be, so that titles of neighbouring tiles do not
    run into each other."""
    text = printable(text)
    lines, line = [], ""
    for part in re.split(r"(?<=[ _+./-])", text):
        while len(part) > width:                      # one part longer than a line: cut it
            if line:
                lines.append(line)
                line = ""
            lines.append(part[:width])
            part = part[width:]
        if len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    if line or not lines:
        lines.append(line)
    return "\n".join(x.rstrip() for x in lines)


def pick(total: int, n: int, seed: int = 0) -> np.ndarray:
    """`min(n, total)` distinct positions out of `total`, drawn with `seed`, in increasing order."""
    return np.sort(np.random.default_rng(seed).choice(total, min(n, total), replace=False))


def tiles(images, rows: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """(pixels (n, h, w, 3) uint8, titles) of `rows` of a `Source` (positions) or an `Index` (ids)."""
    from ..index import Index

    rows = [int(r) for r in rows]
    if isinstance(images, Index):
        return images.read_pixels(rows), [tile_title(m.key, m.label) for m in images.images(rows)]
    return images.read(rows), [tile_title(images.ids[r], images.label(r)) for r in rows]


def sample_grid(source, n: int = 8, *, out: str | os.PathLike, seed: int = 0, cols: int = 4) -> Path:
    """`n` random images of `source` (drawn with `seed`), titled with id and label; returns `out`.

    An image that fails to decode is left out of the picture and listed in `source.skipped`.
    """
    picks = pick(len(source), n, seed)
    pixels, failed = source.read_available(picks)
    shown = [int(r) for j, r in enumerate(picks) if j not in failed]
    if not shown:
        raise SourceError(f"{printable(source.name)}: none of the {len(picks)} image(s) drawn could be decoded "
                          f"(first: {printable(next(iter(failed.values())).path)})")
    titles = [tile_title(source.ids[r], source.label(r)) for r in shown]
    return image_grid(pixels, titles, out, cols=cols,
                      suptitle=f"{printable(source.name)}: {len(shown)} random images of {len(source)}")


def neighbour_grid(queries, query_rows: Sequence[int], base, distances: np.ndarray, indices: np.ndarray,
                   out: str | os.PathLike) -> Path:
    """Each query of `query_rows` in `queries`, then its neighbours `indices` in `base`.

    Parameters
    ----------
    queries, base : a `Source` (rows are positions) or an `Index` (rows are ids).
    distances, indices : ndarray of shape (n_queries, k), one row per query, nearest first
        (what `kneighbors` returns, for the rows of `query_rows`).
    """
    distances, indices = np.asarray(distances), np.asarray(indices)
    q_pixels, q_titles = tiles(queries, query_rows)
    n_pixels, n_titles = tiles(base, indices.ravel())
    nq, k = indices.shape
    return result_grid(q_pixels, q_titles, n_pixels.reshape(nq, k, *n_pixels.shape[1:]), distances,
                       [n_titles[r * k:(r + 1) * k] for r in range(nq)], out)


def result_arrays(results) -> tuple[np.ndarray, np.ndarray]:
    """(distances, ids) of shape (n_queries, k) from `Index.search_*` results."""
    return (np.array([[n.distance for n in r.neighbours] for r in results], dtype=np.float64),
            np.array([[n.id for n in r.neighbours] for r in results], dtype=np.int64))


def image_grid(images: np.ndarray, titles: Sequence[str], out: str | os.PathLike, cols: int = 4,
               suptitle: str | None = None) -> Path:
    """Draw images (n, h, w, 3) uint8 in a grid, each with its title."""
    plt = pyplot()
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
    return save(fig, out)


def result_grid(query_images: np.ndarray, query_titles: Sequence[str], neighbour_images: np.ndarray,
                distances: np.ndarray, neighbour_titles: Sequence[Sequence[str]], out: str | os.PathLike) -> Path:
    """Draw each query (titled in blue) then its k neighbours (n_queries, k, h, w, 3), each
    neighbour titled with its distance above its title."""
    plt = pyplot()
    nq, k = distances.shape
    fig, axes = plt.subplots(nq, k + 1, figsize=(2.1 * (k + 1), 2.3 * nq), squeeze=False)
    for r in range(nq):
        axes[r, 0].imshow(query_images[r])
        axes[r, 0].set_title(f"query\n{query_titles[r]}", fontsize=7, color="tab:blue")
        for c in range(k):
            axes[r, c + 1].imshow(neighbour_images[r, c])
            axes[r, c + 1].set_title(f"d={distance(distances[r, c], 3)}\n{neighbour_titles[r][c]}", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    return save(fig, out)


def misses_grid(rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                titles: Sequence[tuple[str, str, str]], out: str | os.PathLike, suptitle: str | None = None) -> Path:
    """The misses of an evaluation: each row the query (blue), what came back first (red) and
    what should have (green), each (h, w, 3) uint8 with its title; an empty list draws a
    picture that says there were none."""
    plt = pyplot()
    n = max(1, len(rows))
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.9 * n), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not rows:
        axes[0, 1].text(0.5, 0.5, "no misses: every query found its original first", ha="center", va="center",
                        fontsize=9)
    heads = (("query", "tab:blue"), ("came back first", "tab:red"), ("should have", "tab:green"))
    for r, (images, names) in enumerate(zip(rows, titles)):
        for c, (im, name, (head, colour)) in enumerate(zip(images, names, heads)):
            axes[r, c].imshow(im)
            axes[r, c].set_title(f"{head}\n{wrapped(name)}", fontsize=7, color=colour)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return save(fig, out)


def group_grid(index, groups: Sequence[Sequence[int]], out: str | os.PathLike, *, threshold: float,
               max_groups: int = 8, max_members: int = 8) -> Path:
    """The biggest near-duplicate `groups` of `index` (lists of ids, largest first): one row
    per group, its images titled with key and label; at most `max_groups` rows of
    `max_members` images (a longer group says how many more)."""
    plt = pyplot()
    shown = [list(g[:max_members]) for g in groups[:max_groups]]
    cols = max((len(g) for g in shown), default=1)
    fig, axes = plt.subplots(max(1, len(shown)), cols, figsize=(2.1 * cols, 2.7 * max(1, len(shown))),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, (group, members) in enumerate(zip(groups, shown)):
        pixels, titles = tiles(index, members)
        for c, (im, title) in enumerate(zip(pixels, titles)):
            axes[r, c].imshow(im)
            axes[r, c].set_title(f"id {members[c]}\n{title}", fontsize=7,
                                 color="tab:blue" if c == 0 else "black")
        more = f" (+{len(group) - len(members)} more)" if len(group) > len(members) else ""
        axes[r, 0].text(-0.08, 0.5, f"group {r + 1}: {len(group)}{more}", transform=axes[r, 0].transAxes,
                        rotation=90, va="center", ha="right", fontsize=8)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no near-duplicates", ha="center", va="center")
    fig.suptitle(f"{len(groups)} near-duplicate group(s) within distance {threshold:.4g}"
                 + (f"; the {len(shown)} largest" if len(groups) > len(shown) else ""), fontsize=10)
    return save(fig, out)
