"""`Searcher`: one embedder and one fitted estimator, shared by threads, noticing new commits."""

import io
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import BadIndex, InvalidParameter, SearchError
from lookalike.index import Index, IndexStore, Searcher
from lookalike.index import index as index_mod
from lookalike.knn import NearestNeighbors
from lookalike.sources import SampleSource


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("searcher")
    Index.build(SampleSource(60, seed=3), root / "ix", progress=False)
    return root / "ix"


@pytest.fixture
def fresh(built, tmp_path):
    """A copy of the built index that a test may add to."""
    shutil.copytree(built, tmp_path / "ix")
    return tmp_path / "ix"


@pytest.fixture
def embedders(monkeypatch):
    """Counts the embedders built for indexes (each one loads the network's weights)."""
    made = []

    class Counted(index_mod.Embedder):
        def __init__(self, *args, **kwargs):
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(index_mod, "Embedder", Counted)
    return made


def _queries(tmp_path):
    """The same kinds of query a service gets: a path, encoded bytes, a file object, an array."""
    crops = SampleSource(8, seed=77).images
    Image.fromarray(crops[0]).save(tmp_path / "q.png")
    buf = io.BytesIO()
    Image.fromarray(crops[1]).save(buf, "PNG")
    return [str(tmp_path / "q.png"), buf.getvalue(), crops[2], crops[3][..., 0]], ["path", "bytes", "rgb", "grey"]


def _same(a, b):
    assert [r.query for r in a] == [r.query for r in b]
    for ra, rb in zip(a, b):
        assert [n.id for n in ra.neighbours] == [n.id for n in rb.neighbours]
        np.testing.assert_allclose([n.distance for n in ra.neighbours], [n.distance for n in rb.neighbours],
                                   rtol=1e-5)


def test_threads_get_what_one_thread_gets_and_one_embedder_serves_them(built, tmp_path, embedders):
    index = Index(built)
    images, names = _queries(tmp_path)
    searcher = index.searcher()
    assert index.searcher() is searcher and embedders == []  # nothing built before it is needed
    by_image = searcher.search_images(images, k=4, names=names)
    by_id = searcher.search_ids([0, 7, 59], k=4)
    by_path = index.search_images([images[0]], k=4)
    assert [r.query for r in by_image] == names and all(r.error is None for r in by_image)
    assert [r.query for r in by_id] == ["id 0", "id 7", "id 59"] and by_path[0].query == images[0]
    expected = {0: by_image, 1: by_id, 2: by_path}

    def work(i):
        if i % 3 == 0:
            return searcher.search_images(images, k=4, names=names)
        if i % 3 == 1:
            return index.search_ids([0, 7, 59], k=4)
        return index.search_images([images[0]], k=4)

    with ThreadPoolExecutor(8) as pool:
        for i, got in enumerate(pool.map(work, range(24))):
            _same(got, expected[i % 3])
    assert embedders == [1]  # one embedder for every search, threads and Index.search_images alike


def test_a_searcher_sees_an_add_made_through_another_index_object(fresh):
    searcher = Searcher(Index(fresh))
    assert searcher.count == 60 and not searcher.refresh()
    new = SampleSource(5, seed=123)
    assert Index(fresh).add(new, progress=False) == 5  # another object, as another thread would
    result = searcher.search_images([new.images[2]], k=1)[0]
    assert searcher.count == 65
    assert result.neighbours[0].id == 62 and result.neighbours[0].distance < 1e-3
    assert searcher.search_ids([64], k=2)[0].neighbours[0].id != 64
    searcher.close()


def test_a_searcher_sees_an_add_made_by_another_process(fresh, tmp_path):
    searcher = Index(fresh).searcher()
    assert searcher.count == 60
    np.save(tmp_path / "more.npy", SampleSource(4, seed=321).images)
    proc = subprocess.run([sys.executable, "-m", "lookalike", "-q", "index", "add", str(fresh),
                           str(tmp_path / "more.npy")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert searcher.search_ids([63], k=1)[0].query == "id 63" and searcher.count == 64


def test_no_commit_no_reread_and_one_refit_per_commit(fresh, monkeypatch):
    reads, fits = [], []
    original_vectors, original_fit = IndexStore.vectors, NearestNeighbors.fit

    def vectors(self, *args, **kwargs):
        reads.append(1)
        return original_vectors(self, *args, **kwargs)

    def fit(self, X, y=None):
        fits.append(len(X))
        return original_fit(self, X)

    monkeypatch.setattr(IndexStore, "vectors", vectors)
    monkeypatch.setattr(NearestNeighbors, "fit", fit)
    searcher = Index(fresh).searcher()
    vectors = np.asarray(Index(fresh).vectors()[:3])
    for _ in range(50):
        searcher.search_vectors(vectors, k=2)
    assert len(reads) == 2 and fits == [60]  # (one read is Index(fresh).vectors() above)
    Index(fresh).add(SampleSource(3, seed=5), progress=False)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: searcher.search_vectors(vectors, k=2), range(12)))
    assert fits == [60, 63]


def test_searches_in_flight_finish_on_the_old_state(fresh, monkeypatch):
    searcher = Index(fresh).searcher()
    vectors = np.asarray(Index(fresh).vectors()[:2])
    searcher.search_vectors(vectors, k=1)
    inside, release = threading.Event(), threading.Event()
    original = NearestNeighbors.kneighbors

    def slow_once(self, X=None, n_neighbors=None, return_distance=True):
        if not inside.is_set():
            inside.set()
            release.wait(60)
        return original(self, X, n_neighbors, return_distance)

    monkeypatch.setattr(NearestNeighbors, "kneighbors", slow_once)
    new = SampleSource(4, seed=99)
    with ThreadPoolExecutor(1) as pool:
        early = pool.submit(searcher.search_images, [new.images[0]], 60)
        assert inside.wait(60)
        Index(fresh).add(new, progress=False)
        late = searcher.search_images([new.images[0]], k=64)[0]  # refits while the first one waits
        release.set()
        early_result = early.result()[0]
    assert late.neighbours[0].id == 60 and len(late.neighbours) == 64
    assert max(n.id for n in early_result.neighbours) < 60  # the old state: the new images were not there


def test_bad_requests(built):
    searcher = Index(built).searcher()
    with pytest.raises(SearchError, match="k=61 is out of range"):
        searcher.search_ids([0], k=61)
    with pytest.raises(SearchError, match="besides the query"):
        searcher.search_ids([0], k=60)
    with pytest.raises(SearchError, match="no image with id 60"):
        searcher.search_ids([60], k=1)
    with pytest.raises(SearchError, match=r"queries of shape \(2, 7\); this index holds 1472-d vectors"):
        searcher.search_vectors(np.zeros((2, 7), np.float32))
    with pytest.raises(InvalidParameter, match="1 names for 2 images"):
        searcher.search_images([b"a", b"b"], names=["x"])
    bad = searcher.search_images([b"not an image"], k=1)[0]
    assert bad.query == "<bytes>" and bad.error.startswith("<bytes>: not an image") and bad.neighbours == []
    searcher.close()
    with pytest.raises(BadIndex, match="this searcher was closed"):
        searcher.search_ids([0], k=1)
