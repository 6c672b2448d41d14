"""Where pretrained weights live: a user cache folder, downloads that verify, local files."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from ..cache import cache_dir
from ..download import download
from ..errors import DownloadError, ModelError, WeightsUnavailable


def hash_prefix(url: str) -> str | None:
    """torchvision's convention: `name-<first hex digits of SHA-256>.pth`."""
    match = re.search(r"-([0-9a-f]{8,})\.pth?$", url.rsplit("/", 1)[-1])
    return match.group(1) if match else None


def find_cached(url: str) -> Path | None:
    """The copy of `url` in lookalike's cache or torch's hub cache, None when neither has it."""
    name = url.rsplit("/", 1)[-1]
    for path in (cache_dir() / "weights" / name, Path(torch.hub.get_dir()) / "checkpoints" / name):
        if path.is_file():
            return path
    return None


def fetch(url: str, *, offline_hint: str, progress: bool = True) -> Path:
    """Return the cached copy of `url`, downloading and checking it first if needed.

    A copy in torch's own hub cache (from torchvision, say) is used as it is.
    """
    found = find_cached(url)
    if found is not None:
        return found
    cached = cache_dir() / "weights" / url.rsplit("/", 1)[-1]
    try:
        return download(url, cached, sha256_prefix=hash_prefix(url), progress=progress)
    except DownloadError as exc:
        raise WeightsUnavailable(f"{exc}. {offline_hint}") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file: a plain state dict, or one under 'state_dict'/'model'. Anything
    else is a `ModelError` of one line (never torch's advice to load untrusted pickles)."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, not a weights file")
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save's zip, or a legacy pickle
        raise ModelError(f"{path}: not a PyTorch weights file (a .pth file is a zip archive or a pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # Python objects beyond tensors: loading them would run their code
        raise ModelError(f"{path}: not a plain PyTorch weights file: it holds Python objects beyond tensors, "
                         "which lookalike does not load") from None
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise ModelError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {first})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_into(module: nn.Module, state: dict[str, torch.Tensor], *, model: str, origin: str,
              ignore: tuple[str, ...] = ()) -> None:
    """Load `state` into `module`, naming the first layer that does not fit."""
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ModelError(
                f"{origin}: weights do not fit model {model}: {key} has shape "
                f"{tuple(value.shape)} in the file, {tuple(own[key].shape)} in the model"
            )
    missing = [k for k in own if k not in state and not k.startswith(ignore)]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelError(f"{origin}: weights do not fit model {model} ({detail})")
    module.load_state_dict(state, strict=False)


def file_digest_short(path: str | os.PathLike) -> str:
    """The first 12 hex digits of a file's SHA-256: enough to tell weights files apart."""
    from ..download import file_digest

    return file_digest(Path(path), "sha256")[:12]
