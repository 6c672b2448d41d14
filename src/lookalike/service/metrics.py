"""Prometheus text for `/metrics`: requests by route and status, a latency histogram, the
queue, the micro-batches and the index's size. Plain counters under one lock; no client
library needed (the text format is a few lines, version 0.0.4)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, edge in enumerate(self.buckets):
            if value <= edge:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{edge:g}"}} {n}' for edge, n in zip(self.buckets, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        return [*out, f"{name}_sum{braces} {self.sum:.6f}", f"{name}_count{braces} {self.count}"]


class Metrics:
    """What the service counts. Every method may be called from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.cnn_batch_sizes = Histogram(BATCH_BUCKETS)
        self.cnn_batch_seconds = Histogram(LATENCY_BUCKETS)
        self.in_flight = 0
        self.waiting = 0
        self.rejected = 0
        self.index_size: Callable[[], int] = lambda: 0

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, method, status)] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batch_sizes.observe(size)
            self.batch_seconds.observe(seconds)

    def cnn_batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.cnn_batch_sizes.observe(size)
            self.cnn_batch_seconds.observe(seconds)

    def text(self) -> str:
        with self._lock:
            lines = ["# HELP lookalike_requests_total HTTP requests answered, by route, method and status.",
                     "# TYPE lookalike_requests_total counter"]
            for (route, method, status), n in sorted(self.requests.items()):
                lines.append(f'lookalike_requests_total{{route="{_label(route)}",method="{method}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP lookalike_request_seconds Time to answer a request, by route.",
                      "# TYPE lookalike_request_seconds histogram"]
            for route, hist in sorted(self.latency.items()):
                lines += hist.lines("lookalike_request_seconds", f'route="{_label(route)}"')
            lines += ["# HELP lookalike_batch_queries Queries per micro-batch searched in one kNN call.",
                      "# TYPE lookalike_batch_queries histogram", *self.batch_sizes.lines("lookalike_batch_queries"),
                      "# HELP lookalike_batch_seconds Time of one kNN call of a micro-batch.",
                      "# TYPE lookalike_batch_seconds histogram", *self.batch_seconds.lines("lookalike_batch_seconds"),
                      "# HELP lookalike_cnn_batch_queries Image queries per CNN pass.",
                      "# TYPE lookalike_cnn_batch_queries histogram",
                      *self.cnn_batch_sizes.lines("lookalike_cnn_batch_queries"),
                      "# HELP lookalike_cnn_batch_seconds Time of one CNN pass.",
                      "# TYPE lookalike_cnn_batch_seconds histogram",
                      *self.cnn_batch_seconds.lines("lookalike_cnn_batch_seconds"),
                      "# HELP lookalike_requests_in_flight Requests being worked on.",
                      "# TYPE lookalike_requests_in_flight gauge", f"lookalike_requests_in_flight {self.in_flight}",
                      "# HELP lookalike_queue_depth Requests waiting for a slot.",
                      "# TYPE lookalike_queue_depth gauge", f"lookalike_queue_depth {self.waiting}",
                      "# HELP lookalike_rejected_total Requests refused with 503 because the queue was full.",
                      "# TYPE lookalike_rejected_total counter", f"lookalike_rejected_total {self.rejected}"]
        try:
            size = str(self.index_size())
        except Exception:  # an index that cannot be read now (its /readyz says why): no figure
            size = "NaN"
        lines += ["# HELP lookalike_index_images Images in the index.", "# TYPE lookalike_index_images gauge",
                  f"lookalike_index_images {size}"]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
