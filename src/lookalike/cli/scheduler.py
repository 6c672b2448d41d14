"""`--scheduler`: run a command's embedding on a Dask cluster (`lookalike.dask`)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager


def scheduler(text: str) -> str:
    """`local:N` or `tcp://HOST:PORT`, checked as the option is parsed (Dask is not loaded)."""
    from ..dask.cluster import scheduler_problem

    problem = scheduler_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: {problem}")
    return text.strip()


def add_scheduler(parser: argparse.ArgumentParser) -> None:
    from ..dask.cluster import SCHEDULER_HELP

    parser.add_argument("--scheduler", type=scheduler, default=None, metavar="SCHEDULER",
                        help=f"embed on a Dask cluster: {SCHEDULER_HELP}; needs pip install 'lookalike[dask]'")


@contextmanager
def on_scheduler(name: str | None, embedder, device: str | None = None) -> Iterator:
    """`embedder` itself without a scheduler; else one that runs on the cluster `name`
    (a local cluster is started for the block and closed after it), on `device` as each
    worker resolves it (`auto`: the worker's own GPU, if it has one)."""
    if name is None:
        yield embedder
        return
    from ..dask.cluster import connect
    from ..dask.embed import ClusterEmbedder

    with connect(name) as client:
        yield ClusterEmbedder(embedder, client, device=device)
