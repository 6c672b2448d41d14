"""The fp32 screen's GEMM providers: both compute the screen's scores within its bound, the
engine is exact on either, and LOOKALIKE_GEMM chooses (torch by default)."""

import numpy as np
import pytest
import torch

from lookalike.knn import SearchStats, knn, reference_knn
from lookalike.errors import InvalidParameter
from lookalike.knn import gemm
from lookalike.knn.screen import PreparedBase, prepare_rows


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "inner_product"])
def test_both_providers_score_within_the_screen_bound(metric):
    rng = np.random.default_rng(3)
    xb = rng.normal(size=(300, 37)).astype(np.float32) + 5
    xq = rng.normal(size=(20, 37)).astype(np.float32) + 5
    base = PreparedBase(xb, metric)
    q = prepare_rows(base.screen, xq, base.device)
    m = base.metric
    exact = (q.data.double() @ base.rows.data.double().T)
    exact = (base.rows.sq.double()[None, :] - 2 * exact) if m.centred else -exact
    bound = base.screen.bound(q, base.extent)[:, None]
    for name in gemm.PROVIDERS:
        if m.centred:
            s = gemm.centred_scores(q.data, base.rows.data, base.rows.sq, None, name)
        else:
            s = gemm.negated_dots(q.data, base.rows.data, torch.empty(20, 300), name)
        assert s.dtype == torch.float32 and s.shape == (20, 300)
        assert bool(((s.double() - exact).abs() <= bound).all()), name


@pytest.mark.parametrize("name", gemm.PROVIDERS)
def test_the_engine_is_exact_on_either_provider(monkeypatch, name):
    monkeypatch.setenv("LOOKALIKE_GEMM", name)
    assert gemm.provider() == name
    rng = np.random.default_rng(5)
    xb = rng.integers(-2, 3, (500, 48)).astype(np.float32)  # many exact ties
    xq = rng.integers(-2, 3, (70, 48)).astype(np.float32)
    for metric in ("euclidean", "sqeuclidean", "cosine", "inner_product"):
        stats = SearchStats()
        D, I = knn(xq, xb, 9, metric, stats=stats)
        D_ref, I_ref = reference_knn(xq, xb, 9, metric)
        np.testing.assert_array_equal(I, I_ref)
        np.testing.assert_allclose(D, D_ref, rtol=1e-6, atol=1e-6)


def test_torch_by_default_numpy_when_asked_and_a_bad_value_said(monkeypatch):
    monkeypatch.delenv("LOOKALIKE_GEMM", raising=False)
    assert gemm.provider() == "torch"
    monkeypatch.setenv("LOOKALIKE_GEMM", "numpy")
    assert gemm.provider() == "numpy"
    monkeypatch.setenv("LOOKALIKE_GEMM", "blis")
    with pytest.raises(InvalidParameter, match="LOOKALIKE_GEMM='blis'"):
        gemm.provider()
