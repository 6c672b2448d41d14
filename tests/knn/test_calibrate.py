"""`precision='auto'` chooses by measuring: the calibration, its cache, and its choices.

No test checks a timing: they check what is measured, what is kept, when it is measured
again, and that whatever it picks is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lookalike import NearestNeighbors
from lookalike.knn import calibrate, reference_knn
from lookalike.knn.metrics import get_metric

CPU = torch.device("cpu")
L2 = get_metric("euclidean")


def terms(fixed_s=0.0, per_query_s=0.0, per_row_s=0.0, per_pair_s=0.0) -> dict:
    return {"fixed_s": fixed_s, "per_query_s": per_query_s, "per_row_s": per_row_s, "per_pair_s": per_pair_s}


def quick(device, metric, data, key=None):
    """A stand-in for the measurement, for tests of what is kept and when it is measured:
    at 64 queries, fp32 takes 2 us a row, int8 2 ms + 1 us a row."""
    key = key or calibrate.shape_class(device, metric, data if isinstance(data, int) else data.shape[1])[0]
    return calibrate.Calibration(key, 1000, {"fp32": terms(per_pair_s=2e-6 / 64),
                                             "int8": terms(fixed_s=0.002, per_pair_s=1e-6 / 64)}, {"bf16": "not here"})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder of its own, and no calibration kept in this process."""
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    monkeypatch.delenv("LOOKALIKE_CALIBRATION", raising=False)
    calibrate.forget()
    yield tmp_path / calibrate.FILE
    calibrate.forget()


def test_shape_classes_round_the_dimension_up_to_a_power_of_two():
    assert calibrate.shape_class(CPU, L2, 3) == ("cpu/euclidean/d64", 64)
    assert calibrate.shape_class(CPU, L2, 1280) == ("cpu/euclidean/d2048", 2048)
    assert calibrate.shape_class(CPU, get_metric("cosine"), 2048)[0] == "cpu/cosine/d2048"
    assert calibrate.shape_class(CPU, L2, 100_000)[1] == 4096


def test_a_calibration_times_every_screen_and_is_kept_per_machine(cache):
    dtype, why = calibrate.choose(CPU, L2, 64, 90_000)
    assert dtype in calibrate.CANDIDATES.values() and "by calibration (cpu/euclidean/d64" in why
    saved = json.loads(cache.read_text())
    assert saved["machine"] == calibrate.machine(CPU) and saved["version"] == calibrate.VERSION
    entry = saved["classes"]["cpu/euclidean/d64"]
    assert set(entry["lines"]) | set(entry["excluded"]) == set(calibrate.CANDIDATES)
    assert "GEMM with float32 output on the cpu" in entry["excluded"]["fp16"]  # a GPU's screen only
    assert "fp32" in entry["lines"] and set(entry["lines"]["fp32"]) == set(calibrate.TERMS)
    assert all(v >= 0 for line in entry["lines"].values() for v in line.values())
    # the choice is the smallest predicted time (of the screens the model chooses among), and it
    # follows the base's size and the queries' count
    cal = calibrate.calibration(CPU, L2, 64)
    for nb in (1_000, 90_000, 10**7):
        for nq in (1, 8, 64, 10_000):
            times = {n: t for n, t in cal.predicted(nb, nq).items() if n not in calibrate.PROBE_ONLY}
            assert times[cal.choice(nb, nq)] == min(times.values())
            assert f"for {nq:,} quer" in cal.explain(nb, nq)


def test_the_model_is_fitted_through_four_measurements():
    points = [(8, 1000), (8, 4000), (64, 1000), (64, 4000)]
    want = terms(0.003, 2e-5, 1e-6, 3e-9)
    times = [want["fixed_s"] + want["per_query_s"] * q + want["per_row_s"] * n + want["per_pair_s"] * q * n
             for q, n in points]
    got = calibrate.fit_terms(points, times)
    assert got == pytest.approx(want, rel=1e-6)
    # a time that falls with the base's size (noise) gives no negative coefficient
    noisy = calibrate.fit_terms(points, [0.01, 0.008, 0.02, 0.019])
    assert all(v >= 0 for v in noisy.values())
    # one base size only: the terms in nb cannot be told apart and stay zero
    one = calibrate.fit_terms([(8, 1000), (64, 1000)], [0.01, 0.03])
    assert one["per_row_s"] == one["per_pair_s"] == 0 and one["per_query_s"] > 0


def test_the_choice_follows_the_number_of_queries(cache):
    """A few queries read the whole base for little arithmetic: a screen of smaller rows wins
    there, and loses to fp32's cheaper per-query work on large batches (the issue's figures)."""
    cal = calibrate.Calibration("cpu/cosine/d2048", 4096, {
        "fp32": terms(fixed_s=1e-3, per_query_s=1e-4, per_row_s=4.5e-7, per_pair_s=1e-9),
        "bf16": terms(fixed_s=1e-3, per_query_s=1e-3, per_row_s=2e-7, per_pair_s=1e-9)})
    assert cal.choice(100_000, 1) == "bf16" and cal.choice(100_000, 8) == "bf16"
    assert cal.choice(100_000, 1000) == "fp32"
    assert cal.choice(100_000, 1, among=("fp32",)) == "fp32"
    assert "among fp32" in cal.explain(100_000, 1, among=("fp32",))
    assert cal.explain(100_000, 1).startswith("bf16 screen by calibration (cpu/cosine/d2048; predicted for 1 query x")


def test_a_cached_calibration_is_used_without_measuring(cache, monkeypatch):
    monkeypatch.setattr(calibrate, "calibrate", quick)
    calibrate.calibration(CPU, L2, 64)
    calibrate.forget()
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **kw: pytest.fail("measured again"))
    assert calibrate.calibration(CPU, L2, 64).key == "cpu/euclidean/d64"


@pytest.mark.parametrize("change", ["cpu", "torch"])
def test_another_cpu_or_torch_measures_again(cache, monkeypatch, change):
    monkeypatch.setattr(calibrate, "calibrate", quick)
    calibrate.calibration(CPU, L2, 64)
    calibrate.forget()
    real = calibrate.machine
    monkeypatch.setattr(calibrate, "machine", lambda dev: {**real(dev), change: "something else"})
    measured = []
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **kw: measured.append(1) or calibrate.Calibration(
        "cpu/euclidean/d64", 100, {"fp32": terms(per_row_s=1e-6)}))
    assert calibrate.choose(CPU, L2, 64, 10)[0] == torch.float32 and measured == [1]
    saved = json.loads(cache.read_text())  # rewritten for the new machine, the old entries gone
    assert saved["machine"][change] == "something else" and list(saved["classes"]) == ["cpu/euclidean/d64"]


def test_each_thread_count_keeps_its_own_calibration(cache, monkeypatch):
    """A server's one-thread stages and a command line's all-core run measure apart and each
    keeps its measurement (each wiped the other's before: the file held one thread count);
    another CPU still drops them all."""
    measured = []
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **kw: measured.append(torch.get_num_threads()) or quick(
        *a, **kw))
    real = calibrate.machine
    for threads in (2, 1, 2, 1):
        monkeypatch.setattr(calibrate, "machine", lambda dev, t=threads: {**real(dev), "threads": t})
        calibrate.forget()
        calibrate.calibration(CPU, L2, 64)
    assert len(measured) == 2  # once at each thread count, then read back
    saved = json.loads(cache.read_text())
    assert saved["machine"]["threads"] == 1 and [e["machine"]["threads"] for e in saved["also"]] == [2]
    # a GPU of this host (its identity names the device) keeps the CPU's calibrations beside its own
    monkeypatch.setattr(calibrate, "machine", lambda dev: {**real(dev), "threads": 1, "cuda": "Some GPU"})
    calibrate.forget()
    calibrate.calibration(CPU, L2, 64)
    saved = json.loads(cache.read_text())
    assert len(measured) == 3 and saved["machine"]["cuda"] == "Some GPU" and len(saved["also"]) == 2
    monkeypatch.setattr(calibrate, "machine", lambda dev: {**real(dev), "cpu": "Another CPU"})
    calibrate.forget()
    calibrate.calibration(CPU, L2, 64)
    saved = json.loads(cache.read_text())
    assert len(measured) == 4 and saved["machine"]["cpu"] == "Another CPU" and "also" not in saved


def test_a_process_that_changes_its_thread_count_measures_at_each(cache, monkeypatch):
    """This process's calibrations are kept per torch thread count as the file's are: a program
    that searched on all cores, then serves on one a stage, does not reuse (nor file under the
    one-thread machine) what it measured on all cores."""
    measured = []
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **kw: measured.append(torch.get_num_threads()) or quick(
        *a, **kw))
    before = torch.get_num_threads()
    try:
        calibrate.calibration(CPU, L2, 64)
        torch.set_num_threads(1 if before > 1 else 2)
        calibrate.calibration(CPU, L2, 64)
        calibrate.calibration(CPU, L2, 64)
    finally:
        torch.set_num_threads(before)
    calibrate.calibration(CPU, L2, 64)
    assert measured == [before, 1 if before > 1 else 2]
    saved = json.loads(cache.read_text())
    assert {saved["machine"]["threads"], *(e["machine"]["threads"] for e in saved["also"])} == {before, measured[1]}


@pytest.mark.parametrize("damage", ["not json {", '{"machine": 3}', "[]", "",
                                    '{"machine": null, "classes": {"cpu/euclidean/d64": {"lines": 1}}}',
                                    '{"version": 2, "machine": null, "classes": []}'])
def test_a_corrupt_cache_file_is_ignored_and_rewritten(cache, damage, monkeypatch):
    monkeypatch.setattr(calibrate, "calibrate", quick)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(damage)
    assert calibrate.choose(CPU, L2, 64, 1000)[0] == torch.float32  # 2 ms against 3 ms
    assert calibrate.choose(CPU, L2, 64, 10_000)[0] == torch.int8  # 20 ms against 12 ms
    saved = json.loads(cache.read_text())
    assert "cpu/euclidean/d64" in saved["classes"] and saved["version"] == calibrate.VERSION


def test_a_file_of_the_first_format_is_measured_again_and_rewritten(cache, monkeypatch):
    """Version 1 held one line in nb per screen, at 64 queries: it cannot say what 8 queries cost."""
    old = {"machine": calibrate.machine(CPU), "classes": {"cpu/euclidean/d64": {
        "key": "cpu/euclidean/d64", "rows": 4096, "lines": {"fp32": {"fixed_s": 0.001, "per_row_s": 1e-6}},
        "excluded": {}}}}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(old))
    measured = []
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **kw: measured.append(1) or quick(*a, **kw))
    calibrate.calibration(CPU, L2, 64)
    saved = json.loads(cache.read_text())
    assert measured == [1] and saved["version"] == calibrate.VERSION
    assert set(saved["classes"]["cpu/euclidean/d64"]["lines"]["fp32"]) == set(calibrate.TERMS)


def test_a_damaged_entry_of_this_machine_is_measured_again(cache, monkeypatch):
    monkeypatch.setattr(calibrate, "calibrate", quick)
    cache.parent.mkdir(parents=True, exist_ok=True)
    bad = {"key": "cpu/euclidean/d64", "rows": 5, "lines": {"fp32": {**terms(), "fixed_s": -1, "per_row_s": "x"}}}
    cache.write_text(json.dumps({"version": calibrate.VERSION, "machine": calibrate.machine(CPU),
                                 "classes": {"cpu/euclidean/d64": bad}}))
    cal = calibrate.calibration(CPU, L2, 64)
    assert cal.rows > 5 and cal.lines["fp32"]["fixed_s"] >= 0


def test_without_the_cache_file_nothing_is_written(cache, monkeypatch):
    monkeypatch.setattr(calibrate, "calibrate", quick)
    monkeypatch.setenv("LOOKALIKE_CALIBRATION", "0")
    calibrate.choose(CPU, L2, 64, 1000)
    assert not cache.exists()


def test_a_screen_that_gives_other_neighbours_is_no_candidate(cache, monkeypatch):
    """Every screen is exact by construction; the calibration checks it all the same."""
    from lookalike.knn import engine

    real = engine.knn

    def wrong_for_int8(xq, base, k, **kw):
        D, I = real(xq, base, k, **kw)
        if base.screen.dtype == torch.int8:
            I = I[::-1].copy()  # other rows' neighbours
        return D, I

    monkeypatch.setattr(engine, "knn", wrong_for_int8)
    cal = calibrate.calibrate(CPU, L2, 64)
    assert "int8" not in cal.lines and "differed" in cal.excluded["int8"]
    assert "int8 (its neighbours differed" in cal.explain(1000).split("not candidates: ")[1]


def test_the_model_never_chooses_int16_a_probe_may(cache):
    """int16 pays only where int8's windows on the user's base are wide, which the model's
    small samples cannot show: the model skips it even where it predicts it fastest (and a
    search then predicted short is not probed for it); a probe that timed it may choose it."""
    cal = calibrate.Calibration("cpu/euclidean/d256", 16384, {
        "fp32": terms(fixed_s=6e-4, per_pair_s=4.5e-9), "int8": terms(fixed_s=8e-4, per_query_s=7.6e-6),
        "int16": terms(fixed_s=6e-4, per_pair_s=2.6e-9)})
    assert min(cal.predicted(1000, 1000), key=cal.predicted(1000, 1000).get) == "int16"
    assert cal.choice(1000, 1000) == "fp32" and cal.choice(1000, 1000, among=("int16",)) == "fp32"
    assert "int16 3.2 ms (chosen by a probe only)" in cal.explain(1000, 1000)
    assert calibrate.probe_wanted(cal, 1000, 1000, 10, ("fp32", "int8", "int16"))  # fp32's 5.1 ms, not int16's
    calibrate._memory[calibrate._mem(cal.key)] = cal
    calibrate.record_probe(CPU, L2, 256, 1000, 1000, 10, {"fp32": 0.003, "int8": 0.004, "int16": 0.002}, 64)
    assert cal.choice(1000, 1000, k=10) == "int16" and "int16 screen by probe" in cal.explain(1000, 1000, k=10)


@pytest.mark.parametrize("metric", ["euclidean", "inner_product"])
def test_whatever_auto_picks_is_exact(cache, metric):
    """Measured on the user's own base, large enough to be measured on."""
    rng = np.random.default_rng(3)
    X = np.maximum(rng.normal(size=(6000, 96)), 0).astype(np.float32)
    Q = np.maximum(rng.normal(size=(40, 96)), 0).astype(np.float32)
    nn = NearestNeighbors(n_neighbors=7, metric=metric, device="cpu").fit(X)
    assert nn.screen_choice_ and "by calibration" in nn.screen_choice_
    D, I = nn.kneighbors(Q)
    D_ref, I_ref = reference_knn(Q, X, 7, metric)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-5, atol=1e-6)


def test_each_search_takes_the_screen_predicted_fastest_for_its_queries(cache, monkeypatch):
    """fit prepares the screen for `PLAN_QUERIES` queries (fp32 here); a search of a few
    queries takes int8 (prepared from the fp32 rows on first use, then kept), a larger one
    fp32 again; a screen of larger rows than the fitted one's is never prepared."""
    def measured(device, metric, data, key=None):
        return calibrate.Calibration(key, 4096, {"fp32": terms(fixed_s=1e-3, per_query_s=1e-4, per_row_s=1e-6),
                                                 "int8": terms(fixed_s=1e-3, per_query_s=2e-4, per_row_s=1e-7)})
    monkeypatch.setattr(calibrate, "calibrate", measured)
    monkeypatch.setattr(calibrate, "PROBE_MIN_QUERIES", 10**6)  # the model's choices (probes: tests below)
    rng = np.random.default_rng(5)
    X = np.maximum(rng.normal(size=(3000, 40)), 0).astype(np.float32)
    Q = np.maximum(rng.normal(size=(200, 40)), 0).astype(np.float32)
    nn = NearestNeighbors(n_neighbors=4, metric="cosine", device="cpu").fit(X)
    assert nn.screen_dtype_ == "float32"  # for 64 queries: 10.4 ms against 14.1 ms
    for nq, screen in ((1, "int8"), (8, "int8"), (200, "fp32"), (2, "int8")):
        D, I = nn.kneighbors(Q[:nq])
        assert nn.search_stats_.screen_dtype == str(calibrate.CANDIDATES[screen]).removeprefix("torch.")
        assert nn.search_stats_.screen_choice.startswith(f"{screen} screen by calibration")
        D_ref, I_ref = reference_knn(Q[:nq], X, 4, "cosine")
        np.testing.assert_array_equal(I, I_ref)
        np.testing.assert_allclose(D, D_ref, rtol=1e-5, atol=1e-6)
    assert list(nn._backend._recast) == [torch.int8]  # prepared once
    # past the k the calibration measured, fp32 (the fitted rows here)
    D, I = nn.kneighbors(Q[:2], n_neighbors=calibrate.K_MEASURED + 1)
    assert nn.search_stats_.screen_dtype == "float32" and "past the" in nn.search_stats_.screen_choice
    np.testing.assert_array_equal(I, reference_knn(Q[:2], X, calibrate.K_MEASURED + 1, "cosine")[1])
    # fitted with int8 (given), a few queries never make an fp32 copy of the base
    small = NearestNeighbors(n_neighbors=4, metric="cosine", device="cpu", precision="int8").fit(X)
    small.kneighbors(Q[:1])
    assert small.search_stats_.screen_dtype == "int8" and small.search_stats_.screen_choice == "int8 screen as asked"


def test_past_the_measured_k_a_low_precision_fit_searches_in_fp32(cache, monkeypatch):
    monkeypatch.setattr(calibrate, "calibrate", lambda device, metric, data, key=None: calibrate.Calibration(
        key, 4096, {"fp32": terms(per_row_s=1e-6), "bf16": terms(per_row_s=1e-7)}))
    rng = np.random.default_rng(6)
    X = rng.normal(size=(400, 16)).astype(np.float32)
    nn = NearestNeighbors(n_neighbors=3, device="cpu").fit(X)
    assert nn.screen_dtype_ == "bfloat16"
    k = calibrate.K_MEASURED + 5
    D, I = nn.kneighbors(X[:3], n_neighbors=k)
    assert nn.search_stats_.screen_dtype == "float32"
    np.testing.assert_array_equal(I, reference_knn(X[:3], X, k, "euclidean")[1])
    nn.kneighbors(X[:3])
    assert nn.search_stats_.screen_dtype == "bfloat16"


def probing(monkeypatch, fixed: tuple[float, float, float], nb: int, d: int, seed: int):
    """A model that predicts fp32, bf16 and int8 at `fixed` seconds whatever the search (so
    that every search of 40 queries or more is probed, on 16 of them), and a base of `nb`
    feature-like rows with 60 queries."""
    lines = {name: terms(fixed_s=t) for name, t in zip(("fp32", "bf16", "int8"), fixed)}
    monkeypatch.setattr(calibrate, "calibrate", lambda device, metric, data, key=None: calibrate.Calibration(
        key, 4096, lines))
    monkeypatch.setattr(calibrate, "PROBE_QUERIES", 16)
    monkeypatch.setattr(calibrate, "PROBE_MIN_QUERIES", 40)
    rng = np.random.default_rng(seed)
    return (np.maximum(rng.normal(size=(nb, d)), 0).astype(np.float32),
            np.maximum(rng.normal(size=(60, d)), 0).astype(np.float32))


def test_a_large_search_probes_the_screens_on_its_first_queries_and_keeps_the_choice(cache, monkeypatch):
    """The model (fitted on small searches) predicts fp32; a large search times every screen on
    its first `PROBE_QUERIES` queries instead, runs the rest on the fastest, keeps that choice
    for its class of base size and k (in the process and the file), and later large searches
    of the class take it without probing. The results are exact either way."""
    X, Q = probing(monkeypatch, (1.0, 2.0, 3.0), 3000, 48, seed=8)
    nn = NearestNeighbors(n_neighbors=5, device="cpu").fit(X)
    assert nn.screen_dtype_ == "float32"
    timed = []
    real_knn = __import__("lookalike.knn.backends", fromlist=["knn"]).knn

    def spy(xq, base, k, **kw):
        timed.append((len(xq), str(base.screen.dtype)))
        return real_knn(xq, base, k, **kw)
    monkeypatch.setattr("lookalike.knn.backends.knn", spy)
    D, I = nn.kneighbors(Q)
    D_ref, I_ref = reference_knn(Q, X, 5, "euclidean")
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-5, atol=1e-6)
    # each screen: a warm-up of 8 queries, then the 16 timed, in two rounds (a short probe);
    # then the other 44 on the choice
    screens = [f"torch.{t}" for t in ("float32", "bfloat16", "int8")]
    assert sorted(timed[:3]) == sorted((8, t) for t in screens)
    assert timed[3:6] == timed[6:9] and sorted(timed[3:6]) == sorted((16, t) for t in screens)
    choice = calibrate.calibration(CPU, L2, 48).probed(3000, 5)["choice"]
    assert timed[9:] == [(44, str(calibrate.CANDIDATES[choice]))]
    assert nn.search_stats_.screen_choice.startswith(f"{choice} screen by probe (cpu/euclidean/d64, nb4096/k8")
    assert nn.search_stats_.screen_dtype == str(calibrate.CANDIDATES[choice]).removeprefix("torch.")
    assert set(nn._backend._recast) <= {calibrate.CANDIDATES[choice]}  # the screens not chosen are dropped
    stored = json.loads(cache.read_text())["classes"]["cpu/euclidean/d64"]["probes"]["nb4096/k8"]
    assert stored["choice"] == choice and set(stored["times"]) == {"fp32", "bf16", "int8"} and stored["nq"] == 60
    # the next large search of the class takes the choice without probing; a small one the model's
    timed.clear()
    np.testing.assert_array_equal(nn.kneighbors(Q[:50])[1], I_ref[:50])
    assert timed == [(50, str(calibrate.CANDIDATES[choice]))]
    nn.kneighbors(Q[:39])
    assert nn.search_stats_.screen_choice.startswith("fp32 screen by calibration")
    # another process reads the probe from the file; another k class would probe again
    calibrate.forget()
    cal = calibrate.calibration(CPU, L2, 48)
    assert cal.choice(3000, 100, k=5) == choice and cal.choice(3000, 100, k=20) == "fp32"
    assert calibrate.probe_wanted(cal, 3000, 100, 20, ("fp32", "int8"))
    assert not calibrate.probe_wanted(cal, 3000, 100, 5, ("fp32", "int8"))
    # a search predicted to be short is not probed, unless its k is past the model's
    monkeypatch.setattr(calibrate, "PROBE_MIN_S", 10.0)
    assert not calibrate.probe_wanted(cal, 3000, 100, 10, ("fp32", "int8"))
    assert calibrate.probe_wanted(cal, 3000, 100, 50, ("fp32", "int8"))
    assert not calibrate.probe_wanted(cal, 3000, 100, calibrate.K_MEASURED + 1, ("fp32", "int8"))  # fp32 there


def test_a_long_probe_times_each_screen_once(cache, monkeypatch):
    """A probe whose first round took longer than `PROBE_ROUNDS_S` does not repeat it."""
    X, Q = probing(monkeypatch, (1.0, 2.0, 3.0), 3000, 48, seed=8)
    monkeypatch.setattr(calibrate, "PROBE_ROUNDS_S", 0.0)
    nn = NearestNeighbors(n_neighbors=5, device="cpu").fit(X)
    timed = []
    real_knn = __import__("lookalike.knn.backends", fromlist=["knn"]).knn
    monkeypatch.setattr("lookalike.knn.backends.knn",
                        lambda xq, base, k, **kw: timed.append(len(xq)) or real_knn(xq, base, k, **kw))
    np.testing.assert_array_equal(nn.kneighbors(Q)[1], reference_knn(Q, X, 5, "euclidean")[1])
    assert timed == [8, 8, 8, 16, 16, 16, 44]


def test_a_damaged_probe_is_dropped_and_the_calibration_kept(cache, monkeypatch):
    monkeypatch.setattr(calibrate, "calibrate", quick)
    calibrate.choose(CPU, L2, 64, 90_000)
    data = json.loads(cache.read_text())
    entry = data["classes"]["cpu/euclidean/d64"]
    entry["probes"] = {"nb8192/k4": {"choice": "int8", "times": {"fp32": 0.2, "int8": 0.1}, "nq": 500, "nb": 8000},
                       "nb1024/k4": {"choice": "int8", "times": {"fp32": "slow"}, "nq": 500, "nb": 1000},
                       "nb2048/k4": {"choice": "int8", "times": {"fp32": 0.2, "int8": -1.0}, "nq": 500, "nb": 2000}}
    cache.write_text(json.dumps(data))
    calibrate.forget()
    cal = calibrate.calibration(CPU, L2, 64)
    assert set(cal.probes) == {"nb8192/k4"} and "fp32" in cal.lines
    assert cal.choice(8000, 1000, k=3) == "int8" and "by probe" in cal.explain(8000, 1000, k=3)
    assert cal.probed(8000, 3, among=("fp32",)) is None  # an int8 choice does not hold where int8 is not a candidate


def test_past_the_models_k_a_probe_also_times_screens_larger_than_the_fitted_one(cache, monkeypatch):
    """Fitted with int8 (the model's choice at k = 10), a large search at k = 50 times fp32 and
    bf16 too: the model knows nothing of the windows there. A copy of the base in the screen
    chosen is kept, the others dropped; at k = 10 the fitted int8 alone is searched."""
    X, Q = probing(monkeypatch, (3.0, 2.0, 1.0), 2000, 24, seed=9)
    nn = NearestNeighbors(n_neighbors=50, device="cpu").fit(X)
    assert nn.screen_dtype_ == "int8"
    D, I = nn.kneighbors(Q)
    assert "screen by probe" in nn.search_stats_.screen_choice
    assert "timed on the first 60 queries" in nn.search_stats_.screen_choice  # past the model's k: up to 4x as many
    probe = calibrate.calibration(CPU, L2, 24).probed(2000, 50)
    assert set(probe["times"]) == {"fp32", "bf16", "int8"}
    assert set(nn._backend._recast) <= {calibrate.CANDIDATES[probe["choice"]]}
    np.testing.assert_array_equal(I, reference_knn(Q, X, 50, "euclidean")[1])
    np.testing.assert_allclose(D, reference_knn(Q, X, 50, "euclidean")[0], rtol=1e-5, atol=1e-6)
    nn.kneighbors(Q, n_neighbors=10)  # within the model's k: among screens no larger than int8
    assert nn.search_stats_.screen_dtype == "int8" and "by calibration" in nn.search_stats_.screen_choice


def test_past_the_models_k_a_probe_keeps_fp32_unless_a_smaller_screen_is_clearly_faster(cache):
    """A probe times the search's first queries, where torch's fp32 GEMM is least efficient;
    past the model's k a smaller screen's wide window grows with the queries: it is chosen
    over fp32 only when `PAST_MODEL_MARGIN` times faster. Within the model's k the fastest wins."""
    calibrate.calibration(CPU, L2, 24)  # a class to keep the probes with
    near = {"fp32": 0.046, "int8": 0.043, "bf16": 0.066}
    assert calibrate.record_probe(CPU, L2, 24, 20000, 256, 100, near, 256) == "fp32"
    assert calibrate.record_probe(CPU, L2, 24, 20000, 256, 10, near, 256) == "int8"
    assert calibrate.record_probe(CPU, L2, 24, 20000, 256, 100, {"int8": 0.05, "bf16": 0.04}, 256) == "bf16"
    clear = {"fp32": 0.046, "int8": 0.030, "bf16": 0.066}
    assert calibrate.record_probe(CPU, L2, 24, 20000, 256, 100, clear, 256) == "int8"
    cal = calibrate.calibration(CPU, L2, 24)
    assert "1.25x faster than fp32" in cal.explain(20000, 256, ("fp32", "int8", "bf16"), 100)
    assert "faster than fp32" not in cal.explain(20000, 256, ("fp32", "int8", "bf16"), 10)
    # a screen whose windows held about fp32's rows (int16's) needs no margin; a wide one still does
    int16 = {"fp32": 0.028, "int16": 0.024, "int8": 0.023}
    rows = {"fp32": 25_600, "int16": 26_300, "int8": 301_000}
    assert calibrate.record_probe(CPU, L2, 24, 20000, 256, 100, int16, 256, rows) == "int16"
    assert calibrate.record_probe(CPU, L2, 24, 20000, 256, 100, int16, 256, rows | {"int16": 40_000}) == "fp32"
    assert calibrate.record_probe(CPU, L2, 24, 20000, 256, 100, int16, 256) == "fp32"  # windows not known


def test_a_probe_on_a_gpu_times_more_queries():
    """On a GPU a probe of 64 queries would time kernel launches, not the screens."""
    assert calibrate.probe_queries(10_000, 3) == calibrate.PROBE_QUERIES
    assert calibrate.probe_queries(10_000, 3, torch.device("cuda")) == calibrate.GPU_PROBE_QUERIES
    assert calibrate.probe_queries(300, 3, "cuda") == 300
