"""Retrieval quality on real photographs: index the photos, query with altered copies.

The photographs are the ones the sample set crops (they ship inside scikit-image and
scikit-learn). Each is altered five ways -- cropped to 70%, flipped, brightened, re-saved
as JPEG at quality 30, rotated 10 degrees -- and a query succeeds when its own photo comes
back first.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance

from .sources.folder import resize_crop
from .sources.sample import photo_paths


def _crop70(im: Image.Image) -> Image.Image:
    w, h = im.size
    cw, ch = int(w * 0.7), int(h * 0.7)
    return im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def _jpeg30(im: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=30)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


ALTERATIONS = {
    "crop70": _crop70,
    "flip": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "brighten": lambda im: ImageEnhance.Brightness(im).enhance(1.4),
    "jpeg30": _jpeg30,
    "rotate10": lambda im: im.rotate(10, resample=Image.Resampling.BILINEAR),
}


def altered_copies(size: int = 96) -> tuple[np.ndarray, list[str], np.ndarray, list[str], np.ndarray]:
    """(originals, photo names, altered copies, alteration names, photo of each copy)."""
    photos = [Image.open(p).convert("RGB") for p in photo_paths()]
    names = [p.stem for p in photo_paths()]
    originals = np.stack([np.asarray(resize_crop(im, size)) for im in photos])
    copies, kinds, truth = [], [], []
    for j, im in enumerate(photos):
        for kind, alter in ALTERATIONS.items():
            copies.append(np.asarray(resize_crop(alter(im), size)))
            kinds.append(kind)
            truth.append(j)
    return originals, names, np.stack(copies), kinds, np.array(truth)


def altered_copy_accuracy(embedder, metric: str = "euclidean") -> dict:
    """Share of altered copies whose own photo is the nearest indexed image, overall and per alteration."""
    from .knn import NearestNeighbors

    originals, names, copies, kinds, truth = altered_copies(embedder.input_size)
    base = embedder.embed_array(originals)
    found = NearestNeighbors(1, metric=metric).fit(base).kneighbors(embedder.embed_array(copies),
                                                                     return_distance=False)[:, 0]
    hit = found == truth
    per = {kind: float(hit[[k == kind for k in kinds]].mean()) for kind in ALTERATIONS}
    return {"photos": len(names), "queries": len(copies), "top1": float(hit.mean()), "per_alteration": per,
            "misses": [f"{kinds[i]} of {names[truth[i]]} -> {names[found[i]]}" for i in np.flatnonzero(~hit)]}
