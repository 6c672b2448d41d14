"""recall@1, recall@k and MRR computed right on hand-made cases; configurations by name."""

import math

import numpy as np
import pytest

from lookalike.errors import LookalikeError
from lookalike.quality import parse_config, ranks_of, score


def test_ranks_and_scores_by_hand():
    I = np.array([[4, 1, 2],    # truth 4 at rank 1
                  [0, 7, 3],    # truth 7 at rank 2
                  [5, 6, 9],    # truth 9 at rank 3
                  [1, 2, 3]])   # truth 8 absent
    truth = np.array([4, 7, 9, 8])
    ranks = ranks_of(I, truth)
    assert ranks.tolist() == [1, 2, 3, 0]
    s = score(ranks)
    assert s.queries == 4
    assert s.recall_at_1 == 0.25
    assert s.recall_at_k == 0.75
    assert s.mrr == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    assert math.isnan(score(np.array([], int)).recall_at_1)


def test_configs_by_preset_and_by_fields():
    tutorial = parse_config("tutorial")
    assert (tutorial.model, tutorial.pooling, tutorial.metric, tutorial.resize) == ("resnet50", "max", "euclidean",
                                                                                  "crop")
    c = parse_config("pooling=avg,metric=cosine,input_size=64,resize=pad")
    assert (c.pooling, c.metric, c.input_size, c.resize) == ("avg", "cosine", 64, "pad")
    # the model's own views and mid-level features
    assert c.name == "efficientnet_lite0 avg cosine 64 pad views=full+centre mid=5:gem:1+8:gem:1.25"
    assert parse_config("views=full,mid=none,input_size=64").name == "efficientnet_lite0 max cosine 64 crop"
    assert parse_config("single").views == "full" and parse_config("default").views == "full+centre"
    for bad, words in [("pooling=median", "pooling 'median'"), ("colour=red", "unknown field 'colour'"),
                       ("nonsense", "give a preset"), ("input_size=big", "not a whole number"),
                       ("metric=nope", "nope"), ("model=vgg", "unknown model 'vgg'"), ("resize=stretch", "stretch"),
                       ("input_size=5", "out of range"), ("views=full+blur", "unknown view 'blur'")]:
        with pytest.raises(LookalikeError, match=words):
            parse_config(bad)
