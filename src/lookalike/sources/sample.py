"""An offline sample set: crops of real photographs that ship inside installed packages.

It stands in for STL-10 when STL-10 is not at hand. Each image is a random crop of one
photo (scikit-image's `skimage/data`, scikit-learn's sample images), flipped at random and
mildly recoloured, at 96 x 96. Its label is the photo it came from, so retrieval quality can
be measured: a good feature puts crops of one photo near each other. The same seed gives
the same set, and crop i depends on (seed, i) alone, so it is rendered when it is read.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from ..errors import SourceError
from .base import Source
from .decode import check_size

# Bounds of `sample:N:SEED:SIZE`. Opening holds a label (8 bytes) and an id (about 70 bytes
# as a Python string) per image, so a million images cost about 80 MB before any is read;
# reading renders crops one at a time. The seed is a non-negative 64-bit integer.
MAX_SAMPLE = 1_000_000
MAX_SEED = 2**64 - 1
MAX_IMAGES_BYTES = 2 * 2**30  # the most `images` renders at once

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
def _photo(path: str) -> np.ndarray:
    """A photo's RGB pixels, decoded once per process and shared read-only by every crop."""
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    pixels.flags.writeable = False
    return pixels


def make_crop(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """One random view of `photo` (h, w, 3): a crop of 35 to 75% of its shorter side, flip, colour."""
    h, w = photo.shape[:2]
    side = int(min(w, h) * rng.uniform(0.35, 0.75))
    aspect = rng.uniform(0.85, 1.15)
    cw, ch = min(w, int(side * aspect)), min(h, int(side / aspect))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = Image.fromarray(photo[top : top + ch, left : left + cw]).resize(
        (size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.85, 1.15))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.85, 1.15))
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.85, 1.15))
    return np.asarray(im, dtype=np.uint8)


def _mix(seed: int, i: np.ndarray) -> np.ndarray:
    """SplitMix64 of (seed, i): well-spread uint64 keys, a pure function of both."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + i.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_labels(n: int, seed: int, n_photos: int) -> np.ndarray:
    """The photo of each of the first `n` crops: every run of `n_photos` crops (0 to P-1,
    P to 2P-1, ...) takes each photo once, in an order drawn from (seed, position), so the
    labels are balanced for any `n` and crop i's photo does not depend on `n`."""
    blocks = -(-n // n_photos)
    keys = _mix(seed, np.arange(blocks * n_photos)).reshape(blocks, n_photos)
    return np.argsort(keys, axis=1, kind="stable").reshape(-1)[:n].astype(np.int64)


class SampleSource(Source):
    """`n` crops of the bundled photographs, the same for the same `seed`.

    Crop i is a pure function of (seed, i): reading it renders it and nothing else, and a
    process that reopens `sample:N:SEED` renders the same pixels.
    """

    def __init__(self, n: int = 2000, seed: int = 0, size: int = 96):
        paths = photo_paths()
        if len(paths) < 2:
            raise SourceError("sample set: scikit-image and scikit-learn sample photos not found; "
                              "install scikit-image and scikit-learn")
        for field, value in (("n", n), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise SourceError(f"sample set: {field}={value!r} is not a whole number")
        if not 1 <= n <= MAX_SAMPLE:
            raise SourceError(f"sample set: n={n} is out of range: 1 to {MAX_SAMPLE:,} images")
        if not 0 <= seed <= MAX_SEED:
            raise SourceError(f"sample set: seed={seed} is out of range: 0 to 2**64 - 1")
        size = check_size(size, "sample set: size")
        n, seed = int(n), int(seed)
        self.labels = sample_labels(n, seed, len(paths))
        self.label_names = [p.stem for p in paths]
        self.paths = paths
        self.n, self.seed, self.size = n, seed, size
        self.name = f"sample:{n}:{seed}"
        self.spec = f"sample:{n}:{seed}" if size == 96 else f"sample:{n}:{seed}:{size}"
        self.image_shape = (size, size, 3)
        self.ids = [f"sample/{i:05d}" for i in range(n)]

    @property
    def images(self) -> np.ndarray:
        """Every image, rendered now: uint8 (n, size, size, 3). For small sets: one of more
        than `MAX_IMAGES_BYTES` is refused (read it in batches: `batches`, `read`)."""
        need = self.n * self.size * self.size * 3
        if need > MAX_IMAGES_BYTES:
            raise SourceError(f"{self.name}: all {self.n:,} images at once would take {need / 2**30:.1f} GiB; "
                              f"read them in batches (source.batches) instead")
        return self.read(np.arange(self.n))

    def crop(self, i: int) -> np.ndarray:
        """Render crop `i`: uint8 (size, size, 3)."""
        if not 0 <= i < self.n:
            raise SourceError(f"sample set: no image {i} in {self.n}")
        photo = _photo(str(self.paths[int(self.labels[i])]))
        return make_crop(photo, np.random.default_rng([self.seed, i]), self.size)

    def read(self, indices) -> np.ndarray:
        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.image_shape), dtype=np.uint8)
        for j, i in enumerate(rows):
            out[j] = self.crop(int(i))
        return out

    def location(self, i: int) -> str:
        return f"{self.paths[int(self.labels[i])]}#crop{i}"  # type: ignore[index]

    def describe(self) -> dict:
        return {**super().describe(), "n": self.n, "seed": self.seed}
