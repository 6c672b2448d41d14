"""Where the work runs: a Dask client for `--scheduler local:N` or `--scheduler tcp://HOST:PORT`.

`local:N` starts a LocalCluster of N worker processes (one thread each, listening on
127.0.0.1 only, the dashboard on a free port of 127.0.0.1) for the run and closes it at the end. Each worker gets
`cores // N` threads for torch and BLAS (Dask's default is one), and glibc's own malloc
trimming: Dask's `MALLOC_TRIM_THRESHOLD_=65536` hands every large buffer back to the system,
which made the CNN 1.6x slower in a worker than in the driver (measured here: 11.8 s against
7.0 s for 128 images; 5.2 s without it). Workers you start yourself want the same: a
`distributed.nanny.pre-spawn-environ` without it in their Dask config. `tcp://HOST:PORT` connects
to a running scheduler, within `timeout` seconds, or fails in one line naming the address.

GPUs: start one worker per GPU and the work follows (`dask_cuda.LocalCUDACluster()`, whose
workers each see one device as `cuda:0`, or `dask worker --resources GPU=1` with
`CUDA_VISIBLE_DEVICES` set per worker); then pass `device="cuda"` (search) or `--device
cuda` (embed), which each worker resolves on its own machine.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import ClusterError

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT = 10.0  # seconds to reach a running scheduler
MAX_LOCAL_WORKERS = 256
_LOCAL = re.compile(r"local:(\d{1,4})")
_REMOTE = re.compile(r"(tcp|tls)://[^\s/]+:\d{1,5}")
SCHEDULER_HELP = ("local:N (a cluster of N worker processes on this machine, for the run) or tcp://HOST:PORT "
                  "(a running Dask scheduler)")


def require() -> None:
    """Import Dask and distributed, or raise a one-line `ClusterError` saying how to install them."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ClusterError(f"Dask is not installed ({exc.name or exc}); install it with: "
                           "pip install 'lookalike[dask]'") from None


def scheduler_problem(scheduler: str) -> str | None:
    """What is wrong with `scheduler` as a scheduler's name, or None if it is `local:N`
    (1 <= N <= MAX_LOCAL_WORKERS) or `tcp://HOST:PORT`."""
    text = str(scheduler).strip()
    m = _LOCAL.fullmatch(text)
    if m:
        return None if 1 <= int(m.group(1)) <= MAX_LOCAL_WORKERS else f"give 1 to {MAX_LOCAL_WORKERS} local workers"
    return None if _REMOTE.fullmatch(text) else f"expected {SCHEDULER_HELP}"


def check_scheduler(scheduler: str) -> str:
    """`scheduler`, stripped, if it names one; else a one-line `ClusterError`."""
    problem = scheduler_problem(scheduler)
    if problem:
        raise ClusterError(f"scheduler {str(scheduler)[:80]!r}: {problem}")
    return str(scheduler).strip()


@contextmanager
def connect(scheduler: str, *, timeout: float = CONNECT_TIMEOUT) -> Iterator[Client]:
    """A `distributed.Client` for `scheduler` (see the module's docstring), closed on leaving,
    with the LocalCluster it started, if any."""
    scheduler = check_scheduler(scheduler)
    require()
    from distributed import Client

    if scheduler.startswith("local:"):
        with local_cluster(int(scheduler.split(":")[1])) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s ({reason}); "
                           "is it running, and is the address right?") from None
    try:
        yield client
    finally:
        client.close()


@contextmanager
def local_cluster(n: int) -> Iterator:
    """A LocalCluster of `n` worker processes on 127.0.0.1, closed on leaving; its workers'
    own log lines are kept off the terminal (a task's error reaches the client anyway)."""
    import dask
    from distributed import LocalCluster

    threads = max(1, (os.cpu_count() or 1) // n)
    env = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
           **{name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    env.pop("MALLOC_TRIM_THRESHOLD_", None)  # see the module's docstring
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL)
    except (OSError, TimeoutError, RuntimeError) as exc:
        raise ClusterError(f"local:{n}: cannot start a local cluster ({str(exc).strip()[:160]}); in a script, start "
                           "it under if __name__ == '__main__': (its worker processes import the script again)") \
            from None
    try:
        yield cluster
    finally:
        cluster.close()


def workers(client: Client) -> int:
    """How many workers the cluster has now."""
    return len(client.scheduler_info(n_workers=-1)["workers"])
