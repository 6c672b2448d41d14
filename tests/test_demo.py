"""The demo end to end on a small sample set, and retrieval quality on real photos."""

from lookalike.demo import run_demo
from lookalike.features import Embedder
from lookalike.quality import altered_copy_accuracy


def test_demo_writes_every_output(tmp_path):
    report = run_demo(tmp_path / "out", n=300, progress=False)
    out = tmp_path / "out"
    for name in ("grid.png", "bench.png", "bench.json", "report.md", "images.png", "features.npy"):
        assert (out / name).is_file(), name
    text = report.read_text()
    for section in ("## Timings", "## Backends", "## Verification", "## Retrieval quality", "sklearn",
                    "largest absolute distance difference", "neighbour set differs", "altered copies"):
        assert section in text, section
    assert "lookalike" in (out / "bench.json").read_text()


def test_altered_copies_of_real_photos_come_back_first():
    result = altered_copy_accuracy(Embedder(progress=False))
    print(result)
    assert result["queries"] == 5 * result["photos"] >= 100
    assert result["top1"] >= 0.90
    random = altered_copy_accuracy(Embedder(weights="none", progress=False))
    assert random["top1"] < result["top1"]
