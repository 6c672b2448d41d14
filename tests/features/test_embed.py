import numpy as np
import pytest
import torch

from lookalike.errors import InvalidParameter, ModelError
from lookalike.features import Embedder, read_features
from lookalike.features import embed as embed_mod
from lookalike.features.calibrate import make_runner
from lookalike.features.embed import batch_size_for_budget
from lookalike.sources import ArraySource, SampleSource


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def images():
    return SampleSource(48, seed=1).images


def test_fast_paths_match_fp32(images):
    e = Embedder(precision="fp32", fast=False, views="full", progress=False)  # one view: one pass of the network
    ref = e.embed_array(images)
    assert ref.shape == (48, 1280 + 80 + 112) and ref.dtype == np.float32  # with blocks 5 and 8 (features.mid)
    x = e.preprocess(images[:8])
    for mode in ("frozen", "optimized"):  # what the calibration may choose (traced on 8, run on 48)
        with torch.inference_mode():
            run = make_runner(e.net, mode, torch.float32, e.device, x)
            fast = np.concatenate([run(e.preprocess(images[lo : lo + 20])).cpu().numpy() for lo in range(0, 48, 20)])
        assert _cos(ref, fast).min() > 0.999, mode


def test_bf16_resnet50_stays_within_cosine_0999(images):
    ref = Embedder("resnet50", weights="none", precision="fp32", fast=False, progress=False).embed_array(images[:16])
    bf16 = Embedder("resnet50", weights="none", precision="bf16", progress=False).embed_array(images[:16])
    assert _cos(ref, bf16).min() > 0.999


def test_resize_to_model_input(images):
    e = Embedder(input_size=64, progress=False)
    assert e.embed_array(images[:4]).shape == (4, 1472)
    assert e.config()["input_shape"] == [64, 64, 3]


def test_preprocess_is_the_models_normalisation_of_each_view(images):
    e = Embedder(input_size=96, progress=False)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (e.spec.mean, e.spec.std))
    pixels = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).double()
    for view in ("full", "mirror", "grey", "centre"):
        x = e.preprocess(images[:4], view)
        assert x.dtype == torch.float32 and x.shape == (4, 3, 96, 96)
        want = (embed_mod.render(pixels, view) / 255 - mean) / std
        np.testing.assert_allclose(x.numpy(), want.numpy(), atol=2e-5, err_msg=view)
    assert e.preprocess(images[:4]).is_contiguous()  # what ONNX Runtime and OpenVINO take without a copy
    # more than one view: each from the same pixels (the first view's normalisation is not in place)
    two = Embedder(input_size=96, views="full+grey", mid="none", precision="fp32", fast=False, progress=False)
    with torch.inference_mode():
        want = embed_mod.aggregate([two.net(two.preprocess(images[:4], v)) for v in ("full", "grey")])
    np.testing.assert_allclose(two.embed_array(images[:4]), want.numpy(), atol=1e-5)


def test_output_file_and_sidecar(tmp_path, images):
    src = ArraySource(images[:10], name="ten")
    out = tmp_path / "f.npy"
    feats = Embedder(progress=False).embed(src, out)
    on_disk, meta = read_features(out)
    np.testing.assert_array_equal(on_disk, feats)
    assert meta["model"] == "efficientnet_lite0" and meta["pooling"] == "max"
    assert meta["input_shape"] == [96, 96, 3] and meta["ids"] == src.ids
    assert meta["preprocessing"]["mean"] == [0.498, 0.498, 0.498]
    assert meta["source"]["name"] == "ten" and meta["weights"].startswith("imagenet:")
    assert {p.name for p in tmp_path.iterdir()} == {"f.npy", "f.json"}  # no partial folder left


def test_interrupted_run_resumes_without_recomputing(tmp_path, monkeypatch, images):
    monkeypatch.setattr(embed_mod, "CHUNK", 8)
    src = ArraySource(np.concatenate([images, images[:4]]))  # 52 images: 7 chunks
    out = tmp_path / "f.npy"
    full = Embedder(progress=False, batch_size=4).embed(src)

    e = Embedder(progress=False, batch_size=4)
    calls = []
    original = e._forward

    def flaky(x):
        calls.append(len(x))
        if len(calls) == 7:  # dies inside the 4th chunk
            raise KeyboardInterrupt
        return original(x)

    e._forward = flaky
    with pytest.raises(KeyboardInterrupt):
        e.embed(src, out)
    assert not out.exists()
    done = sorted(p.name for p in (tmp_path / ".f.npy.partial").glob("*.npy"))
    assert done == ["000000000000.npy", "000000000008.npy", "000000000016.npy"]

    e2 = Embedder(progress=False, batch_size=4)
    seen = []
    original2 = e2._forward
    e2._forward = lambda x: (seen.append(len(x)), original2(x))[1]
    resumed = e2.embed(src, out)
    assert sum(seen) == 52 - 24  # the three finished chunks were not recomputed
    np.testing.assert_allclose(resumed, full, rtol=1e-5, atol=1e-5)
    assert not (tmp_path / ".f.npy.partial").exists()


def test_gpu_memory_budget_sets_batch_size():
    e = Embedder(progress=False)
    small = batch_size_for_budget(e.net, 96, 200)
    large = batch_size_for_budget(e.net, 96, 2000)
    assert 1 <= small < large <= 1024
    assert Embedder(progress=False, gpu_memory=200).batch_size == small
    with pytest.raises(ModelError, match="--gpu-memory 5 MiB is too small"):
        Embedder(progress=False, gpu_memory=5)


def test_cuda_asked_for_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(InvalidParameter, match="no CUDA device is available"):
        Embedder(device="cuda", progress=False)


def test_read_ahead_keeps_order_raises_and_stops():
    """The GPU's read-ahead thread: items in order, an error raised where they are consumed,
    and a consumer that stops early stops the thread."""
    import threading

    assert list(embed_mod._read_ahead(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in embed_mod._read_ahead(broken()):
            got.append(item)
    assert got == [1]
    before = threading.active_count()
    ahead = embed_mod._read_ahead(iter(range(10**6)), depth=2)
    assert next(ahead) == 0 and threading.active_count() == before + 1
    ahead.close()
    assert threading.active_count() == before  # the producer, blocked on a full queue, has ended


def test_batches_are_digested_in_threads_as_one(images, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from lookalike.features.files import image_digests
    from lookalike.sources.base import Batch

    monkeypatch.setattr(embed_mod, "DIGEST_THREADS", 3)
    many = np.concatenate([images] * 5)  # 240 images: three threads of 80
    with ThreadPoolExecutor(3) as pool:
        [(batch, digests)] = list(embed_mod._digested([Batch(0, [], many, {})], pool))
    assert digests == image_digests(many) and len(set(digests)) == len(images)


def _undecodable_folder(folder):
    """Two JPEGs whose headers read (the folder keeps them) but whose pixels do not decode."""
    from PIL import Image

    folder.mkdir()
    for i, image in enumerate(SampleSource(2, seed=3).images):
        path = folder / f"{i}.jpg"
        Image.fromarray(image).resize((200, 200)).save(path, quality=90)
        path.write_bytes(path.read_bytes()[:3000])
    return folder


def test_a_source_where_nothing_decodes_writes_nothing(tmp_path):
    """embed(source, out) of images none of which decode: one error, no features file, no
    sidecar, no work folder (as `index build` refuses it); without `out`, (0, dim) rows."""
    from lookalike.errors import SourceError
    from lookalike.sources import open_source

    folder = _undecodable_folder(tmp_path / "bad")
    e = Embedder(input_size=32, fast=False, progress=False)
    source = open_source(str(folder), size=32, progress=False)
    assert len(source) == 2
    with pytest.raises(SourceError, match="none of its 2 image.s. could be decoded; nothing written"):
        e.embed(source, tmp_path / "f.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]
    rows = e.embed(open_source(str(folder), size=32, progress=False))
    assert rows.shape == (0, e.dim)
