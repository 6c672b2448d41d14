"""A real LocalCluster of 2 worker processes on 127.0.0.1, shared by the tests of this folder
(started once, closed at the end), and a plugin that kills a worker process mid-task."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import cloudpickle

import pytest

pytest.importorskip("distributed")

from distributed import Client  # noqa: E402
from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

from lookalike.dask.cluster import local_cluster  # noqa: E402



@pytest.fixture(scope="package")
def client():
    with local_cluster(2) as cluster, Client(cluster) as c:
        yield c


class KillOnce(WorkerPlugin):
    """Kills the worker process (SIGKILL, as the OOM killer would) when it starts a task
    whose key starts with `prefix`, once in the whole cluster: the first worker to create
    `marker` dies, the nanny starts a fresh one."""

    name = "lookalike-kill-once"

    def __init__(self, prefix: str, marker: str):
        self.prefix, self.marker = prefix, marker

    def setup(self, worker):
        self.worker = worker

    def transition(self, key, start, finish, **kwargs):
        name = key if isinstance(key, str) else str(key[0]) if isinstance(key, tuple) else str(key)
        if finish == "executing" and name.startswith(self.prefix):
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture
def kill_once(client, tmp_path):
    """Arm `KillOnce` for tasks whose key starts with the given prefix; yields the marker
    file (it exists once a worker was killed). Waits for 2 workers again at the end."""
    armed = []
    # sent by value: on the workers, `conftest` would be another folder's conftest.py
    cloudpickle.register_pickle_by_value(sys.modules[KillOnce.__module__])

    def arm(prefix: str) -> Path:
        marker = tmp_path / "killed"
        client.register_plugin(KillOnce(prefix, str(marker)))
        armed.append(marker)
        return marker

    yield arm
    if armed:
        client.unregister_worker_plugin(KillOnce.name)
    client.wait_for_workers(2, timeout=60)
