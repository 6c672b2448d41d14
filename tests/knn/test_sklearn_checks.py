"""NearestNeighbors passes scikit-learn's own estimator checks, every one of them."""

import json
import os
import subprocess
import sys

from sklearn.utils.estimator_checks import parametrize_with_checks

from lookalike.knn import NearestNeighbors

ARRAY_API = "check_array_api_input"
PROBE = """
import json
from sklearn.utils.estimator_checks import check_estimator
from lookalike.knn import NearestNeighbors
results = check_estimator(NearestNeighbors(), on_fail=None)
print(json.dumps({r["check_name"]: [r["status"], repr(r["exception"])] for r in results}))
"""


def _name(check) -> str:
    func = getattr(check, "func", check)
    return getattr(func, "__name__", str(func))


@parametrize_with_checks([NearestNeighbors()])
def test_scikit_learn_estimator_checks(estimator, check):
    if _name(check) == ARRAY_API and os.environ.get("SCIPY_ARRAY_API") != "1":
        # SciPy reads SCIPY_ARRAY_API once, when it is first imported, and skips this check
        # without it: run it where it is set, in a fresh interpreter.
        env = {**os.environ, "SCIPY_ARRAY_API": "1"}
        proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        status, exc = json.loads(proc.stdout.strip().splitlines()[-1])[ARRAY_API]
        assert status == "passed", exc
        return
    check(estimator)
