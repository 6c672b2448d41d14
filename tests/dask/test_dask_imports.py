"""`import lookalike` loads no Dask; without Dask, lookalike.dask says how to install it."""

from __future__ import annotations

import subprocess
import sys

CHECK_LAZY = """
import sys
import lookalike
lookalike.NearestNeighbors, lookalike.Embedder
import lookalike.dask
from lookalike.dask import NearestNeighbors, ClusterEmbedder
assert not any(m == "dask" or m.startswith(("dask.", "distributed")) for m in sys.modules), "dask loaded"
"""

CHECK_MISSING = """
import sys
sys.modules["dask"] = None  # as if not installed
from lookalike.dask import NearestNeighbors
from lookalike.errors import ClusterError
try:
    NearestNeighbors().fit([[0.0]])
except ClusterError as exc:
    print(exc)
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_dask_is_loaded_only_when_used():
    done = _run(CHECK_LAZY)
    assert done.returncode == 0, done.stderr


def test_without_dask_one_line_says_how_to_install_it():
    done = _run(CHECK_MISSING)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("install it with: pip install 'lookalike[dask]'")
    assert len(done.stdout.strip().splitlines()) == 1
