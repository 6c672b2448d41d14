"""Recursive folders of image files.

Every file is decoded once, EXIF orientation applied, made RGB, resized so that its shorter
side is `size` and centre-cropped to `size` x `size`. Files that cannot be decoded are
skipped and listed in `skipped`, never dropped silently. Images in sub-folders are labelled
with the name of their top-level sub-folder.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import SourceError
from .base import Skipped, Source

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
# Refuse images above this many pixels: a small file that decodes to gigabytes is an attack.
MAX_PIXELS = 64_000_000


def load_image(path: str | os.PathLike, size: int | None) -> np.ndarray:
    """Decode one image file to uint8 RGB (size, size, 3), or (h, w, 3) when `size` is None.

    Raises `SourceError` with the reason when the file is not a readable image.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise SourceError(
                        f"{path}: refused, {im.width}x{im.height} pixels is over the "
                        f"{MAX_PIXELS:,} limit (decompression bomb?)"
                    )
                im.seek(0)  # GIF, TIFF, WebP: first frame
                im.load()
                im = ImageOps.exif_transpose(im)
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    im = im.convert("RGBA")
                    background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(background, im)
                im = im.convert("RGB")
                if size is not None:
                    im = resize_crop(im, size)
                return np.asarray(im, dtype=np.uint8)
    except SourceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SourceError(f"{path}: refused as a decompression bomb ({exc})") from None
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except PermissionError:
        raise SourceError(f"{path}: permission denied") from None
    except Image.UnidentifiedImageError:
        raise SourceError(f"{path}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise SourceError(f"{path}: corrupt or truncated image ({exc})") from None


def resize_crop(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (antialiased), then crop the centre square."""
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def list_files(root: Path) -> tuple[list[Path], list[Skipped]]:
    """All image files below `root` in sorted order, and the other files, as skipped."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() in EXTENSIONS:
                images.append(path)
            else:
                others.append(Skipped(str(path), f"not an image file (extension {path.suffix or 'none'})"))
    return images, others


class FolderSource(Source):
    """Every image below a folder, decoded to `size` x `size`."""

    def __init__(self, root: str | os.PathLike, size: int = 96, progress: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: no such folder")
        files, skipped = list_files(self.root)
        self.name = f"folder:{self.root}"
        self.spec = str(self.root.resolve())
        self.image_shape = (size, size, 3)
        arrays, kept = self._decode(files, size, skipped, progress)
        if not kept:
            raise SourceError(
                f"{self.root}: no readable image found"
                + (f" ({len(skipped)} file(s) skipped)" if skipped else "")
            )
        self.paths = [p.resolve() for p in kept]
        self.images = np.stack(arrays)
        self.ids = [p.relative_to(self.root).as_posix() for p in kept]
        self.skipped = skipped
        tops = [p.relative_to(self.root).parts for p in kept]
        if all(len(parts) > 1 for parts in tops):
            names = sorted({parts[0] for parts in tops})
            self.label_names = names
            self.labels = np.array([names.index(parts[0]) for parts in tops], dtype=np.int64)

    @staticmethod
    def _decode(files: list[Path], size: int, skipped: list[Skipped], progress: bool):
        from ..progress import bar

        def one(path: Path):
            try:
                return load_image(path, size)
            except SourceError as exc:
                return exc

        arrays, kept = [], []
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = pool.map(one, files)
            for path, result in bar(zip(files, results), total=len(files), desc="decode", unit="img", enabled=progress):
                if isinstance(result, SourceError):
                    skipped.append(Skipped(str(path), str(result).removeprefix(f"{path}: ")))
                else:
                    arrays.append(result)
                    kept.append(path)
        return arrays, kept

    def read(self, indices) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]

    def location(self, i: int) -> str:
        return str(self.paths[i])

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.root), "skipped": len(self.skipped)}
