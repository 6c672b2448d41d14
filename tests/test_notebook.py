"""The tutorial notebook runs top to bottom (nbclient, a real kernel) on a small subset."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "examples" / "tutorial.ipynb"


def test_tutorial_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_TUTORIAL_N", "200")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "sample:200:0 200 images of (96, 96, 3)" in outputs
    assert "'frac_neighbor_sets_differ': 0.0" in outputs
    assert (tmp_path / "grid.png").stat().st_size > 10_000
    assert os.environ["LOOKALIKE_TUTORIAL_N"] == "200"
