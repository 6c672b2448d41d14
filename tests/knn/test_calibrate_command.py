"""`lookalike calibrate`: what `auto` measured on this machine, when, how busy the machine was,
and measuring it again. Real calibrations (small ones: d = 64), read back from the cache file."""

from __future__ import annotations

import json

import pytest
import torch

from lookalike.cli import main
from lookalike.features import calibrate as fcal
from lookalike import hardware
from lookalike.knn import calibrate
from lookalike.knn.metrics import get_metric

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path))
    monkeypatch.delenv("LOOKALIKE_CALIBRATION", raising=False)
    calibrate.forget()
    fcal.forget()
    yield tmp_path
    calibrate.forget()
    fcal.forget()


def kept(cache) -> dict:
    return json.loads((cache / calibrate.FILE).read_text())["classes"]


def test_a_calibration_keeps_when_it_was_made_and_how_busy_the_machine_was(cache):
    calibrate.calibration(CPU, get_metric("euclidean"), 64)
    entry = kept(cache)["cpu/euclidean/d64"]
    assert entry["measured"].endswith("Z") and entry["measured"][:2] == "20"
    assert entry["load"] is None or entry["load"] >= 0
    assert entry["others"] is None or 0 <= entry["others"] <= 1  # None off Linux (no /proc/stat)
    calibrate.forget()
    again = calibrate.cached(CPU, get_metric("euclidean"), 64)
    assert (again.measured, again.load, again.others) == (entry["measured"], entry["load"], entry["others"])


def test_the_share_of_the_cpus_others_used_is_the_machines_busy_time_less_this_processs():
    # (monotonic s, machine's busy CPU s, this process's CPU s, CPUs)
    start = (100.0, 500.0, 10.0, 2)
    assert hardware.others_share(start, (110.0, 520.0, 30.0, 2)) == 0.0  # all of it ours
    assert hardware.others_share(start, (110.0, 530.0, 30.0, 2)) == 0.5  # 10 s of 20 CPU-seconds: others'
    assert hardware.others_share(start, (110.0, 545.0, 30.0, 2)) == 1.0  # clamped
    assert hardware.others_share(None) is None and hardware.others_share(start, start) is None
    snap = hardware.cpu_snapshot()
    if snap is not None:  # Linux
        assert snap[3] >= 1 and 0 <= hardware.others_share(snap) <= 1
    assert hardware.busy(0.1, others=0.3) and not hardware.busy(40.0, others=0.1)  # the share decides
    assert hardware.busy(40.0) and not hardware.busy(0.2)  # where it was not measured, the load average


def test_nothing_kept_says_so(cache, capsys):
    assert main(["calibrate"]) == 0
    out = capsys.readouterr().out
    assert "none measured yet" in out and str(cache / calibrate.FILE) in out
    assert not (cache / calibrate.FILE).exists()  # showing measures nothing


def test_a_class_is_measured_shown_and_a_busy_one_flagged(cache, capsys):
    assert main(["calibrate", "--d", "50"]) == 0  # rounded up: d64
    out = capsys.readouterr().out
    assert "measured cpu/euclidean/d64" in out and "screen for 1 query: 10,000 rows" in out
    assert "predicted for 64 queries x 100,000 rows: " in out and "int16: " in out  # a probe's choice only
    assert main(["calibrate", "--d", "64"]) == 0  # kept: not measured again
    assert "cpu/euclidean/d64 is kept already" in capsys.readouterr().out
    data = json.loads((cache / calibrate.FILE).read_text())
    data["classes"]["cpu/euclidean/d64"].update(load=3.0, others=0.6)  # as if measured on a busy machine
    (cache / calibrate.FILE).write_text(json.dumps(data))
    calibrate.forget()
    assert main(["calibrate"]) == 0
    out = capsys.readouterr().out
    assert ("other processes used 60% of the CPUs meanwhile, load average 3 before: busy, `lookalike calibrate "
            "--again` when quiet") in out
    # so does what a search says it chose (bench, index info)
    cal = calibrate.cached(CPU, get_metric("euclidean"), 64)
    assert "busy (other processes used 60% of the CPUs meanwhile" in cal.explain(1000, 64)


def test_again_measures_every_kept_class_anew_and_drops_its_probes(cache, capsys):
    assert main(["calibrate", "--d", "64", "--metric", "cosine"]) == 0
    data = json.loads((cache / calibrate.FILE).read_text())
    entry = data["classes"]["cpu/cosine/d64"]
    entry.update(others=0.9, measured="2020-01-01T00:00:00Z",
                 probes={"nb1024/k16": {"choice": "fp32", "times": {"fp32": 0.001}, "nq": 500, "nb": 1000}})
    data["classes"]["cpu/euclidean/d128"] = {"lines": "damaged"}  # unreadable: measured again as well
    data["classes"]["not a class"] = {}
    (cache / calibrate.FILE).write_text(json.dumps(data))
    resnet = {"cpu/resnet50|eager-fp32,frozen-fp32": fcal.Choice("frozen-fp32", "cpu/resnet50", {
        "eager-fp32": 0.02, "frozen-fp32": 0.01}, {"eager-fp32": 1.0, "frozen-fp32": 1.0}).as_dict()}
    server = {**fcal.machine(CPU), "threads": fcal.machine(CPU)["threads"] + 7}  # another thread count's choices
    (cache / fcal.FILE).write_text(json.dumps({"machine": fcal.machine(CPU), "classes": resnet,
                                               "also": [{"machine": server, "classes": resnet}]}))
    calibrate.forget()
    assert main(["calibrate"]) == 0
    shown = capsys.readouterr().out
    assert "probe nb1024/k16: fp32" in shown and "cpu/euclidean/d128: unreadable" in shown
    assert "frozen-fp32 by calibration (cpu/resnet50" in shown
    assert main(["calibrate", "--again"]) == 0
    out = capsys.readouterr().out
    assert "measured cpu/cosine/d64" in out and "measured cpu/euclidean/d128" in out
    assert "dropped not a class" in out and "forgot 1 feature extractor choice" in out
    features = json.loads((cache / fcal.FILE).read_text())  # this thread count's forgotten, the other's kept
    assert features["classes"] == {} and features["also"] == [{"machine": server, "classes": resnet}]
    classes = kept(cache)
    assert set(classes) == {"cpu/cosine/d64", "cpu/euclidean/d128"}
    assert classes["cpu/cosine/d64"]["measured"] > "2020-01-01T00:00:00Z"
    assert classes["cpu/cosine/d64"]["probes"] == {}
    assert calibrate._parse(classes["cpu/euclidean/d128"]) is not None
    assert fcal.kept(CPU) == {}


def test_json_and_forget(cache, capsys):
    assert main(["calibrate", "--d", "64", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["measured_now"] == ["cpu/euclidean/d64"]
    kept_class = shown["knn"]["cpu/euclidean/d64"]
    assert kept_class["busy"] in (True, False)
    assert set(kept_class["screen"]) == {"1", "64"} and kept_class["screen"]["64"]["100000"] in calibrate.CANDIDATES
    assert shown["machine"] == calibrate.machine(CPU)
    data = json.loads((cache / calibrate.FILE).read_text())
    data["classes"]["cpu/cosine/d64"] = {"lines": "damaged"}
    (cache / calibrate.FILE).write_text(json.dumps(data))
    calibrate.forget()
    assert main(["calibrate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["knn"]["cpu/cosine/d64"] == {"unreadable": True}
    assert main(["calibrate", "--forget", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"deleted": [str(cache / calibrate.FILE)],
                                                   "absent": [str(cache / fcal.FILE)]}
    assert not (cache / calibrate.FILE).exists()
    assert calibrate.cached(CPU, get_metric("euclidean"), 64) is None  # nor kept in the process


@pytest.mark.parametrize("argv, message", [
    (["calibrate", "--d", "64", "--metric", "manhattan"], "nothing to calibrate"),
    (["calibrate", "--d", "64", "--metric", "nope"], "unknown metric"),
    (["calibrate", "--metric", "cosine"], "give --d too"),
    (["calibrate", "--forget", "--again"], "give it alone"),
])
def test_bad_options_are_one_line(cache, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (cache / calibrate.FILE).exists()


def test_without_kept_calibrations_a_class_is_measured_and_shown_not_written(cache, capsys, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CALIBRATION", "0")
    assert main(["calibrate", "--d", "64"]) == 0
    out = capsys.readouterr().out
    assert "not kept" in out and "cpu/euclidean/d64: measured" in out
    assert not (cache / calibrate.FILE).exists()


def test_a_file_that_cannot_be_read_is_said_so_and_rewritten(cache, capsys):
    (cache / calibrate.FILE).write_text("{not json")
    assert main(["calibrate"]) == 0
    assert "the file cannot be read" in capsys.readouterr().out
    assert main(["calibrate", "--d", "64"]) == 0
    assert set(kept(cache)) == {"cpu/euclidean/d64"}


def test_measuring_on_a_busy_machine_says_so_first(cache, capsys, monkeypatch):
    import lookalike.hardware

    monkeypatch.setattr(lookalike.hardware, "load_average", lambda: 40.0)
    assert main(["calibrate", "--d", "64"]) == 0
    err = capsys.readouterr().err
    assert "the machine is busy now (load average 40" in err and len(err.strip().splitlines()) == 1
    assert main(["calibrate"]) == 0  # nothing measured: nothing said
    assert capsys.readouterr().err == ""


def test_a_calibration_measured_on_first_use_is_said_on_the_command_line(cache, capsys):
    """The command line shows the library's notice when a search's first use measures (a
    first search sat silent for a minute, compiling and measuring); -q and a kept class
    say nothing; the library alone prints nothing (a `logging` notice)."""
    import numpy as np

    from lookalike import NearestNeighbors
    from lookalike.cli import _notices

    def knn(q, x, k, metric="euclidean"):  # precision auto: the calibration decides
        return NearestNeighbors(n_neighbors=k, metric=metric).fit(x).kneighbors(q)

    x = np.random.default_rng(0).random((300, 24), dtype=np.float32)
    knn(x[:5], x, 3)  # the library, outside the command line: measured, no line
    assert "cpu/euclidean/d64" in kept(cache) and "measuring" not in capsys.readouterr().err  # d 24: class 64
    calibrate.forget()
    try:
        _notices(True)
        knn(x[:5], x, 3, metric="cosine")
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lookalike: measuring which kNN screen is fastest") \
            and "cpu/cosine/d" in err[0] and str(cache) in err[0]
        knn(x[:5], x, 3, metric="cosine")  # kept: nothing more to say
        assert not capsys.readouterr().err
        _notices(False)
        knn(x[:5], x, 3, metric="inner_product")  # measured, under -q
        assert not capsys.readouterr().err
    finally:
        _notices(False)
