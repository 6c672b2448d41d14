"""Distributed feature extraction on a real 2-worker cluster: the local run's output, a
worker killed in the middle, a rerun after an interruption, the CLI's --scheduler."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lookalike import Embedder, Index, NearestNeighbors
from lookalike.cli import main
from lookalike.dask import ClusterEmbedder
from lookalike.dask import embed as dask_embed
from lookalike.dask import NearestNeighbors as ClusterNeighbors
from lookalike.features import read_features
from lookalike.features.files import workdir
from lookalike.sources import open_source

pytestmark = pytest.mark.slow
N, CHUNK = 32, 8


def _embedder():
    """A cheap embedder (small input, eager: no tracing in each worker) of the real model."""
    return Embedder(input_size=32, fast=False, progress=False)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The local run's features and sidecar of sample:N."""
    out = tmp_path_factory.mktemp("local") / "f.npy"
    _embedder().embed(open_source(f"sample:{N}"), out)
    return read_features(out)


def _same(path, local):
    features, meta = read_features(path)
    ref, ref_meta = local
    assert features.shape == ref.shape and features.dtype == np.float32
    np.testing.assert_allclose(features, ref, rtol=0, atol=1e-4)
    assert meta["ids"] == ref_meta["ids"] and meta["source"] == ref_meta["source"]
    ours, theirs = ({k: v for k, v in m.items() if k != "lookalike"} for m in (meta, ref_meta))
    assert ours == theirs


def test_distributed_embed_writes_what_the_local_run_writes(client, tmp_path, local):
    embedder = ClusterEmbedder(_embedder(), client, chunk=CHUNK)
    embedder.embed(open_source(f"sample:{N}"), tmp_path / "f.npy")
    _same(tmp_path / "f.npy", local)
    assert embedder.last_run.chunks == N // CHUNK and embedder.last_run.embedded == N // CHUNK
    assert not workdir(tmp_path / "f.npy").exists()


def test_nothing_decoded_on_the_cluster_writes_nothing(client, tmp_path):
    """As the local run: a source none of whose images decode is one error, nothing written."""
    from lookalike.errors import SourceError

    from tests.features.test_embed import _undecodable_folder

    folder = _undecodable_folder(tmp_path / "bad")
    embedder = ClusterEmbedder(_embedder(), client, chunk=CHUNK)
    with pytest.raises(SourceError, match="none of its 2 image.s. could be decoded; nothing written"):
        embedder.embed(open_source(str(folder), size=32, progress=False), tmp_path / "f.npy")
    assert not any(p.name.startswith(("f.", ".f.")) for p in tmp_path.iterdir())  # no output, no work folder


def test_a_worker_killed_in_the_middle_loses_nothing(client, tmp_path, local, kill_once):
    marker = kill_once("lookalike-embed-")
    embedder = ClusterEmbedder(_embedder(), client, chunk=CHUNK)
    embedder.embed(open_source(f"sample:{N}"), tmp_path / "f.npy")
    assert marker.exists()
    _same(tmp_path / "f.npy", local)


def test_rerun_after_an_interruption_recomputes_nothing_finished(client, tmp_path, local, monkeypatch):
    out = tmp_path / "f.npy"
    work = workdir(out)
    embedder = ClusterEmbedder(_embedder(), client, chunk=CHUNK // 2)

    class Interrupted:  # Ctrl-C in the driver as the first chunk is reported done: a thread that
        # watched for the first chunk file came too late once the workers were warm (every chunk
        # done before the interrupt reached the driver)
        def __init__(self, *args, **kwargs):
            pass

        def update(self, n=1):
            raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(dask_embed, "counter", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        embedder.embed(open_source(f"sample:{N}"), out)
    monkeypatch.undo()
    deadline = time.monotonic() + 30  # tasks already running when Ctrl-C came finish their chunk
    while any(client.run(lambda dask_worker: dask_worker.state.executing_count).values()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    finished = {p.name: p.stat().st_mtime_ns for p in work.glob("[0-9]*.npy")}
    assert 1 <= len(finished) < N // (CHUNK // 2) and not out.exists()

    embedder.embed(open_source(f"sample:{N}"), out)
    assert embedder.last_run.kept == len(finished)
    assert embedder.last_run.embedded == N // (CHUNK // 2) - len(finished)
    _same(out, local)


def test_cli_index_build_on_a_running_scheduler(client, tmp_path, local, capsys):
    address = client.scheduler.address
    assert main(["-q", "index", "build", f"sample:{N}", "--out", str(tmp_path / "ix"), "--input-size", "32",
                 "--no-fast", "--scheduler", address]) == 0
    assert f"indexed {N} image(s)" in capsys.readouterr().out
    index = Index(tmp_path / "ix")
    np.testing.assert_allclose(np.asarray(index.store.vectors()), local[0], rtol=0, atol=1e-4)
    # and the index folder is a base for the distributed search, read where it lies
    nn = ClusterNeighbors(4, client=client, shard_rows=7).fit(tmp_path / "ix")
    assert nn.storage_ is None and len(nn.shards_) == 5
    I = nn.kneighbors(return_distance=False).compute()
    np.testing.assert_array_equal(I, NearestNeighbors(n_neighbors=4).fit(np.asarray(index.store.vectors()))
                                  .kneighbors(return_distance=False))


def test_cli_scheduler_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["embed", "sample:4", "--out", str(tmp_path / "f.npy"), "--scheduler", "local:0"])
    assert exit_.value.code == 2 and "give 1 to 256 local workers" in capsys.readouterr().err
