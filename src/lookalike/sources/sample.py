"""An offline sample set: crops of real photographs that ship inside installed packages.

It stands in for STL-10 when STL-10 is not at hand. Each image is a random crop of one
photo (scikit-image's `skimage/data`, scikit-learn's sample images), flipped at random and
mildly recoloured, at 96 x 96. Its label is the photo it came from, so retrieval quality can
be measured: a good feature puts crops of one photo near each other. The same seed gives
the same set.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from ..errors import SourceError
from .base import Source

# Photographs only: synthetic test patterns and near-duplicate pairs (the right half of the
# motorcycle stereo pair) are left out so that each label is one distinct picture.
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
    "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png", "clock_motion.png",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def photo_paths() -> list[Path]:
    """Paths of the photographs found in installed packages, in a fixed order."""
    paths: list[Path] = []
    for package, names in (("skimage.data", SKIMAGE_PHOTOS), ("sklearn.datasets.images", SKLEARN_PHOTOS)):
        try:
            folder = resources.files(package)
        except ModuleNotFoundError:
            continue
        paths += [Path(str(folder / n)) for n in names if (folder / n).is_file()]
    return paths


@lru_cache(maxsize=None)
def _photo(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def make_crop(photo: Image.Image, rng: np.random.Generator, size: int) -> np.ndarray:
    """One random view of `photo`: a crop of 35 to 75% of its shorter side, flip, colour."""
    w, h = photo.size
    side = int(min(w, h) * rng.uniform(0.35, 0.75))
    aspect = rng.uniform(0.85, 1.15)
    cw, ch = min(w, int(side * aspect)), min(h, int(side / aspect))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = photo.crop((left, top, left + cw, top + ch)).resize((size, size), Image.Resampling.BILINEAR,
                                                              reducing_gap=3.0)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.85, 1.15))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.85, 1.15))
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.85, 1.15))
    return np.asarray(im, dtype=np.uint8)


class SampleSource(Source):
    """`n` crops of the bundled photographs, the same for the same `seed`."""

    def __init__(self, n: int = 2000, seed: int = 0, size: int = 96):
        paths = photo_paths()
        if len(paths) < 2:
            raise SourceError("sample set: scikit-image and scikit-learn sample photos not found; "
                              "install scikit-image and scikit-learn")
        if n < 1:
            raise SourceError(f"sample set: n={n}, must be at least 1")
        rng = np.random.default_rng(seed)
        photos = rng.permutation(np.arange(n) % len(paths))
        self.images = np.stack([make_crop(_photo(str(paths[p])), rng, size) for p in photos])
        self.labels = photos.astype(np.int64)
        self.label_names = [p.stem for p in paths]
        self.paths = paths
        self.n, self.seed = n, seed
        self.name = f"sample:{n}:{seed}"
        self.spec = f"sample:{n}:{seed}" if size == 96 else None
        self.image_shape = (size, size, 3)
        self.ids = [f"sample/{i:05d}" for i in range(n)]

    def read(self, indices) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]

    def location(self, i: int) -> str:
        return f"{self.paths[int(self.labels[i])]}#crop{i}"  # type: ignore[index]

    def describe(self) -> dict:
        return {**super().describe(), "n": self.n, "seed": self.seed}
