"""The demo end to end on a small sample set, with the copy-detection table of the default and tutorial settings."""

from lookalike.demo import run_demo


def test_demo_writes_every_output(tmp_path):
    report = run_demo(tmp_path / "out", n=300, progress=False)
    out = tmp_path / "out"
    for name in ("grid.png", "bench.png", "bench.json", "report.md", "images.png", "features.npy"):
        assert (out / name).is_file(), name
    text = report.read_text()
    for section in ("## Timings", "## Backends", "## Verification", "## Retrieval quality", "sklearn",
                    "largest absolute distance difference", "neighbour set differs", "Copy detection",
                    "| **all** | 240 |", "`default`", "| crop50 | 20 |"):
        assert section in text, section
    assert "`tutorial`" in text or "`previous`" in text  # resnet50's weights are not downloaded in the tests
    assert "lookalike" in (out / "bench.json").read_text()


def test_demo_stl10_setting(tmp_path, http_server, monkeypatch):
    """--dataset stl10: STL-10 unlabeled, resnet50 with 'imagenet' weights (served on loopback
    here, downloaded once from download.pytorch.org for real users), max pooling, k=3."""
    import hashlib

    import torch

    from lookalike.features.resnet import ResNet50Trunk
    from tests.conftest import stl10_pattern, write_stl10

    url, www, _, _ = http_server
    state = ResNet50Trunk().state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(state, tmp_path / "w.pth")
    name = f"resnet50-{hashlib.sha256((tmp_path / 'w.pth').read_bytes()).hexdigest()[:8]}.pth"
    (tmp_path / "w.pth").rename(www / name)
    monkeypatch.setenv("LOOKALIKE_RESNET50_URL", f"{url}/{name}")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    write_stl10(tmp_path / "stl10" / "stl10_binary" / "unlabeled_X.bin", stl10_pattern(50))
    report = run_demo(tmp_path / "out", dataset="stl10", stl10_root=str(tmp_path / "stl10"), progress=False)
    text = report.read_text()
    assert "**50** from `stl10:unlabeled`" in text and "`resnet50`" in text and "2048-d" in text
    assert "same photo as the query" not in text  # STL-10's unlabeled split has no labels
    assert "`tutorial`" in text and "| resnet50 | imagenet | max | euclidean |" in text  # weights at hand here
