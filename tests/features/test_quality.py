"""Retrieval quality on the bundled sample set: pretrained features find crops of the same
photo; random weights do clearly worse, which shows this test can fail."""


from lookalike import NearestNeighbors
from lookalike.features import Embedder
from lookalike.sources import SampleSource, split


def _nn_accuracy(weights: str) -> float:
    src = SampleSource(1000, seed=0)
    index_set, query_set = split(src)
    feats = Embedder(weights=weights, progress=False).embed(src)
    nn = NearestNeighbors(1).fit(feats[index_set.indices])
    idx = nn.kneighbors(feats[query_set.indices], return_distance=False)[:, 0]
    return float((index_set.labels[idx] == query_set.labels).mean())


def test_pretrained_features_find_the_same_photo():
    pretrained = _nn_accuracy("imagenet")
    random = _nn_accuracy("none")
    print(f"nearest neighbour from the same photo: pretrained {pretrained:.1%}, random weights {random:.1%}")
    assert pretrained >= 0.90
    assert random <= pretrained - 0.15
