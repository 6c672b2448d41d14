"""Retrieval quality on the bundled sample set: pretrained features find crops of the same
photo; random weights do clearly worse in the network's final features, which shows this
test can fail. (The default also appends mid-level features: with random weights those alone
still tell ten photos apart by colour and texture, so the comparison is made without them.)"""


from lookalike import NearestNeighbors
from lookalike.features import Embedder
from lookalike.sources import SampleSource, split


def _nn_accuracy(weights: str, mid: str | None = None) -> float:
    src = SampleSource(1000, seed=0)
    index_set, query_set = split(src)
    feats = Embedder(weights=weights, mid=mid, progress=False).embed(src)
    nn = NearestNeighbors(1).fit(feats[index_set.indices])
    idx = nn.kneighbors(feats[query_set.indices], return_distance=False)[:, 0]
    return float((index_set.labels[idx] == query_set.labels).mean())


def test_pretrained_features_find_the_same_photo():
    default = _nn_accuracy("imagenet")
    pretrained = _nn_accuracy("imagenet", mid="none")
    random = _nn_accuracy("none", mid="none")
    print(f"nearest neighbour from the same photo: default {default:.1%}; final features only: "
          f"pretrained {pretrained:.1%}, random weights {random:.1%}")
    assert default >= 0.90
    assert pretrained >= 0.90
    assert random <= pretrained - 0.15
