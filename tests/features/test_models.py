import hashlib

import pytest
import torch

from lookalike.errors import ModelError, WeightsUnavailable
from lookalike.features import build
from lookalike.features.resnet import ResNet50Trunk
from lookalike.features.summary import summary


def test_resnet50_uses_torchvision_parameter_names():
    keys = set(ResNet50Trunk().state_dict())
    for k in ("conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight", "layer4.2.conv3.weight",
              "layer3.5.bn2.bias"):
        assert k in keys
    assert sum(p.numel() for p in ResNet50Trunk().parameters()) == 23_508_032  # ResNet-50 without fc


@pytest.mark.parametrize("pooling, dim", [("max", 2048), ("avg", 2048), ("none", 2048 * 9)])
def test_resnet50_poolings(pooling, dim):
    net, _, ident = build("resnet50", "none", pooling)
    with torch.no_grad():
        out = net(torch.randn(2, 3, 96, 96))
    assert out.shape == (2, dim) and ident == "random:seed0"


def test_lite0_loads_packaged_imagenet_weights():
    net, spec, ident = build("efficientnet_lite0")
    assert ident.startswith("imagenet:") and spec.channels == 1280
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 96, 96)).shape == (1, 1280)


def test_random_weights_are_the_same_every_time():
    a, _, _ = build("resnet50", "none")
    b, _, _ = build("resnet50", "none")
    torch.testing.assert_close(a.trunk.conv1.weight, b.trunk.conv1.weight)


def _torchvision_style_file(path):
    """What torchvision publishes: a full ResNet-50 state dict, fc included."""
    state = ResNet50Trunk().state_dict()
    state["fc.weight"] = torch.zeros(1000, 2048)
    state["fc.bias"] = torch.zeros(1000)
    torch.save(state, path)
    return state


def test_weights_from_local_file(tmp_path):
    state = _torchvision_style_file(tmp_path / "r50.pth")
    net, _, ident = build("resnet50", str(tmp_path / "r50.pth"))
    torch.testing.assert_close(net.trunk.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    assert ident.startswith("file:")


def test_weights_for_another_model_are_refused(tmp_path):
    lite, _, _ = build("efficientnet_lite0", "none")
    torch.save(lite.trunk.net.state_dict(), tmp_path / "lite.pth")
    with pytest.raises(ModelError, match="weights do not fit model resnet50"):
        build("resnet50", str(tmp_path / "lite.pth"))
    bad = ResNet50Trunk().state_dict()
    bad["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match=r"conv1.weight has shape \(64, 3, 3, 3\) in the file, \(64, 3, 7, 7\)"):
        build("resnet50", str(tmp_path / "bad.pth"))


def test_unknown_model_and_pooling():
    with pytest.raises(ModelError, match="unknown model 'vgg'"):
        build("vgg")
    with pytest.raises(ModelError, match="unknown pooling 'sum'"):
        build("resnet50", "none", "sum")


def test_imagenet_weights_download_once_and_verify(http_server, monkeypatch, tmp_path):
    url, www, _, log = http_server
    _torchvision_style_file(tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    name = f"resnet50-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # torchvision's naming
    (www / name).write_bytes(data)
    monkeypatch.setenv("LOOKALIKE_RESNET50_URL", f"{url}/{name}")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "no-hub"))
    net, _, ident = build("resnet50", "imagenet", progress=False)
    assert ident == f"imagenet:{name}" and len(log) == 1
    build("resnet50", "imagenet", progress=False)
    assert len(log) == 1  # cached: no second download


def test_imagenet_weights_with_wrong_checksum_are_refused(http_server, monkeypatch, tmp_path):
    url, www, _, _ = http_server
    (www / "resnet50-deadbeef.pth").write_bytes(b"not the weights")
    monkeypatch.setenv("LOOKALIKE_RESNET50_URL", f"{url}/resnet50-deadbeef.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "no-hub"))
    with pytest.raises(WeightsUnavailable, match="SHA-256 does not start with deadbeef"):
        build("resnet50", "imagenet", progress=False)


def test_imagenet_offline_says_what_to_do(closed_port_url, monkeypatch, tmp_path):
    monkeypatch.setenv("LOOKALIKE_RESNET50_URL", closed_port_url.replace(".tar.gz", "-0676ba61.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "no-hub"))
    with pytest.raises(WeightsUnavailable, match="efficientnet_lite0 works offline") as info:
        build("resnet50", "imagenet", progress=False)
    assert "--weights PATH" in str(info.value) and "\n" not in str(info.value)
    assert "--url" not in str(info.value)  # an option of `fetch`, not of `embed`


def test_summary_lists_layers_shapes_and_params():
    text = summary("resnet50")
    assert "layer4.2" in text and "(1, 2048, 3, 3)" in text and "Total params: 23,508,032" in text
    assert "Output: 2048-d" in text
    assert "Output: 1280-d" in summary("efficientnet_lite0")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50"])
def test_both_models_run_at_the_smallest_input_size(name):
    net, spec, _ = build(name, "none", "none", 32)
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, spec.channels)  # a 1 x 1 feature map


@pytest.mark.parametrize("size", [31, 1025, 100_000, 0, -1, 96.5, True, "96"])
def test_input_size_is_bounded_in_the_library(size):
    from lookalike.errors import InvalidParameter

    with pytest.raises(InvalidParameter, match="input size"):
        build("resnet50", "none", "max", size)
    with pytest.raises(InvalidParameter, match="input size"):
        summary("efficientnet_lite0", size)


def test_batch_size_fits_in_memory_or_is_refused_up_front(monkeypatch):
    from lookalike.errors import InvalidParameter
    from lookalike.features import models

    monkeypatch.setattr(models, "_free_bytes", lambda device: 2 * 2**30)  # 1 GiB usable
    assert models.fit_batch("resnet50", 96, None) == models.DEFAULT_BATCH  # small images: the default
    # a GPU's default is larger (its free memory, 2 GiB here, asked of the device: no CUDA needed)
    assert models.fit_batch("resnet50", 96, None, torch.device("cuda")) == models.GPU_BATCH
    fits = models.fit_batch("resnet50", 1024, None)
    assert 0 < fits < models.DEFAULT_BATCH  # large images: fewer at a time, on its own
    assert models.batch_bytes(models.get_spec("resnet50"), 1024, fits) <= 2**30
    with pytest.raises(InvalidParameter, match=f"use --batch-size {fits} or less"):
        models.fit_batch("resnet50", 1024, fits + 1)
    monkeypatch.setattr(models, "_free_bytes", lambda device: 2**28)
    with pytest.raises(InvalidParameter, match="for one image, more than half"):
        models.fit_batch("resnet50", 1024)
    with pytest.raises(InvalidParameter, match="batch size must be a whole number from 1 to 4096"):
        models.fit_batch("resnet50", 96, 0)


@pytest.mark.parametrize("content, message", [
    (b"hello, not weights\n", "not a PyTorch weights file"),
    (b"", "not a PyTorch weights file"),
    (b"PK\x03\x04garbage", "not a readable PyTorch weights file .RuntimeError: PytorchStreamReader failed"),
])
def test_a_file_that_is_not_weights_is_one_line(tmp_path, content, message):
    (tmp_path / "w.pth").write_bytes(content)
    with pytest.raises(ModelError, match=message) as caught:
        build("resnet50", str(tmp_path / "w.pth"))
    assert "\n" not in str(caught.value) and "weights_only" not in str(caught.value)


def test_weights_holding_python_objects_are_refused_without_loading_them(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1), "extra": ModelError("x")}, tmp_path / "obj.pth")
    with pytest.raises(ModelError, match="holds Python objects beyond tensors") as caught:
        build("resnet50", str(tmp_path / "obj.pth"))
    assert "\n" not in str(caught.value) and "weights_only" not in str(caught.value)
    with pytest.raises(ModelError, match="is a folder"):
        build("resnet50", str(tmp_path))
