"""Searches per second and latency of `lookalike serve` under concurrent clients.

A real server (`lookalike serve` in its own process, on 127.0.0.1) over an index of N
vectors (default 100,000, efficientnet_lite0, 1280-d); C concurrent clients (one asyncio
process, httpx) upload real query images (JPEG crops of the sample set's photographs, none of
them indexed) to `POST /v1/search?k=10` for T seconds each run, after a warm-up that is not
counted. Two runs in the same invocation, same index, same queries: micro-batching on (the
default, up to 32 queries or 5 ms per CNN pass and kNN call) and off (`--batch-size 1`), so
the gain of batching is a ratio measured on the same machine at the same time; a third run
uses FAISS (`--backend faiss`, not exact in lookalike's sense) for the kNN search, and a fourth
runs the CNN with ONNX Runtime (`--runtime onnxruntime`, the same vectors; an optional extra).

The index: `--base` images of the sample set are embedded for real; the N vectors are those,
repeated, each copy moved by a small Gaussian jitter (2% of the features' spread), written
with `Index.from_features` over the metadata of `sample:N` (so ids, keys and labels of the
copies are not those of the images their vectors came from). What a search costs depends on
N, the dimension and the queries, not on which image a vector came from; a 100,000-image
embedding run would take the machine most of an hour.

    python benchmarks/serve_load.py --clients 16 --seconds 20 --out docs/bench/serve-load.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_index(folder: Path, n: int, base: int) -> Path:
    from lookalike.features import Embedder
    from lookalike.index import Index
    from lookalike.sources import SampleSource

    out = folder / f"ix-{n}"
    if out.exists():
        return out
    embedder = Embedder(progress=True)
    features = embedder.embed(SampleSource(base, seed=0))
    rng = np.random.default_rng(0)
    spread = float(features.std(0).mean())
    copies = -(-n // base)
    vectors = np.concatenate([features + rng.normal(0, 0.02 * spread, features.shape).astype(np.float32)
                              for _ in range(copies)])[:n]
    Index.from_features(vectors, SampleSource(n, seed=0), embedder.config(), out)
    return out


def queries(count: int = 64) -> list[bytes]:
    from PIL import Image

    from lookalike.sources import SampleSource

    out = []
    for img in SampleSource(count, seed=12345).images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


class Server:
    def __init__(self, index: Path, log: Path, *args: str):
        self.log_path = log
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", str(index), "--port", "0",
                                      "--max-queue", "1000", *args], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            found = re.search(r"on (http://127\.0\.0\.1:\d+)/", log.read_text())
            if found:
                self.url = found.group(1)
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited:\n{log.read_text()}")
            time.sleep(0.1)
        import httpx

        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited:\n{log.read_text()}")
            time.sleep(0.2)
        raise SystemExit("the server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(120)
        self.log.close()


def multipart(image: bytes, boundary: str = "lookalike-load-boundary") -> tuple[bytes, str]:
    """The body of a search upload (field `image`, file q.jpg) and its Content-Type."""
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class RawClient:
    """A minimal HTTP/1.1 client on asyncio streams, for the load generator only: one
    keep-alive connection, requests sent whole, responses read by Content-Length. It costs
    the shared CPU a fraction of what httpx does, as a client on a machine of its own would."""

    def __init__(self, url: str):
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status, length, close = int(status_line.split()[1]), None, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        if length is None:
            raise ConnectionError(f"a response without Content-Length (status {status})")
        data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def load(url: str, images: list[bytes], clients: int, seconds: float, warmup: float, k: int,
               client: str = "raw") -> dict:
    """C clients searching for `seconds` after `warmup`; the latencies and errors of the
    searches that started and ended within the counted time. `client`: 'raw' (`RawClient`)
    or 'httpx' (an httpx.AsyncClient per client)."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    answered = [0]  # every answer, warm-up included (for the CPU per search)
    start = time.monotonic()
    counted_from, stop = start + warmup, start + warmup + seconds
    bodies = [multipart(image) for image in images]
    path = f"/v1/search?k={k}"

    async def one_client(n: int) -> None:
        if client == "raw":
            c = RawClient(url)
            send = c.post
        else:
            c = httpx.AsyncClient(base_url=url, timeout=60)

            async def send(path, body, content_type):
                r = await c.post(path, content=body, headers={"Content-Type": content_type})
                return r.status_code, r.content
        try:
            i = n
            while True:
                t0 = time.monotonic()
                if t0 >= stop:
                    return
                body, content_type = bodies[i % len(bodies)]
                i += clients
                try:
                    status, data = await asyncio.wait_for(send(path, body, content_type), 60)
                    ok = status == 200 and len(json.loads(data)["neighbours"]) == k
                    problem = None if ok else f"{status} {data[:200]!r}"
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, httpx.HTTPError,
                        ValueError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    if client == "raw":
                        await c.close()  # a new connection for the next request
                t1 = time.monotonic()
                answered[0] += 1
                if t0 >= counted_from and t1 <= stop:
                    (errors.append(problem) if problem else latencies.append(t1 - t0))
                elif problem:
                    errors.append(problem)
        finally:
            await (c.close() if client == "raw" else c.aclose())

    await asyncio.gather(*(one_client(n) for n in range(clients)))
    ms = np.array(latencies) * 1000
    return {"searches": len(latencies), "seconds": seconds, "searches_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "errors": len(errors), "first_errors": errors[:3], "answered": answered[0]}


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of process `pid` so far (default: this one)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(url: str, pid: int, images: list[bytes], args) -> dict:
    """One load run, with the CPU it cost the server and the load generator per search, and
    the generator's share of the machine's CPU (it runs on the same cores)."""
    server0, client0, t0 = cpu_seconds(pid), cpu_seconds(), time.monotonic()
    run = asyncio.run(load(url, images, args.clients, args.seconds, args.warmup, args.k, args.client))
    server1, client1, t1 = cpu_seconds(pid), cpu_seconds(), time.monotonic()
    n = max(run.pop("answered"), 1)
    run["server_cpu_ms_per_search"] = round((server1 - server0) * 1000 / n, 1)
    run["client_cpu_ms_per_search"] = round((client1 - client0) * 1000 / n, 1)
    run["client_cpu_share"] = round((client1 - client0) / ((t1 - t0) * (os.cpu_count() or 1)), 3)
    return run


def batches(url: str) -> dict:
    import httpx

    text = httpx.get(url + "/metrics").text

    def value(name: str) -> float:
        found = re.search(rf"^{name} ([\d.]+)", text, re.M)
        return float(found.group(1)) if found else 0.0

    return {"batches": int(value("lookalike_batch_queries_count")),
            "batch_queries": value("lookalike_batch_queries_sum"),
            "cnn_passes": int(value("lookalike_cnn_batch_queries_count")),
            "cnn_queries": value("lookalike_cnn_batch_queries_sum")}


def cpu() -> str:
    from lookalike.hardware import cpu_has_fast_bf16, cpu_has_fast_int8, cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, fast bf16: {cpu_has_fast_bf16()}, fast int8: {cpu_has_fast_int8()}"


RUNS = {"batched": [], "unbatched": ["--batch-size", "1"], "batched-faiss": ["--backend", "faiss"],
        "batched-onnxruntime": ["--runtime", "onnxruntime"], "batched-openvino": ["--runtime", "openvino"],
        "batched-all-threads": ["--threads", str(os.cpu_count() or 1)]}
LABELS = {"batched": "micro-batching on (default), exact engine",
          "unbatched": "micro-batching off (`--batch-size 1`), exact engine",
          "batched-faiss": "micro-batching on, `--backend faiss` (IndexFlatL2)",
          "batched-onnxruntime": "micro-batching on, exact engine, `--runtime onnxruntime` (the CNN in ONNX Runtime)",
          "batched-openvino": "micro-batching on, exact engine, `--runtime openvino` (the CNN in OpenVINO)",
          "batched-all-threads": f"micro-batching on, exact engine, `--threads {os.cpu_count()}` (each stage with a "
                                 "thread per core, torch's default)"}


def table(result: dict) -> dict:
    """The docs' table of this run (columns, rows, notes: see benchmarks/docs.py)."""
    def ms(x):
        return "-" if x is None else f"{x:,.0f}"

    rows = [[LABELS.get(name, name), r["searches_per_s"], ms(r["p50_ms"]), ms(r["p95_ms"]), ms(r["p99_ms"]),
             r["errors"], r["mean_cnn_batch"], r["mean_batch"], r["server_cpu_ms_per_search"],
             r["client_cpu_ms_per_search"]] for name, r in result["runs"].items()]
    notes = [f"Index of {result['n']:,} vectors of {result['dim']} dimensions; {result['clients']} concurrent "
             f"clients uploading JPEG photos (mean {result['query_bytes_mean']:,} bytes) to `POST /v1/search?k="
             f"{result['k']}`, load generator: {CLIENTS[result['client']]}. CPU ms per search: CPU time of the "
             "server's process, and of the load generator's, over the run (warm-up included) divided by the "
             "searches answered."]
    return {"columns": ["run", "searches/s", "p50 ms", "p95 ms", "p99 ms", "errors", "queries per CNN pass",
                        "queries per kNN call", "server CPU ms/search", "client CPU ms/search"],
            "rows": rows, "notes": notes}


CLIENTS = {"raw": "one asyncio process, a minimal HTTP/1.1 client with keep-alive (`RawClient`)",
           "httpx": "one asyncio process, an httpx.AsyncClient per client"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="vectors in the index (default 100,000)")
    p.add_argument("--base", type=int, default=2000, help="sample images embedded for real (default 2000)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run (default 20)")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--client", choices=sorted(CLIENTS), default="raw",
                   help="the load generator's HTTP client: raw (default: a minimal asyncio HTTP/1.1 client, "
                        "light on the CPU it shares with the server) or httpx")
    p.add_argument("--workdir", default=None, help="keep the index here between runs (default: a temporary folder)")
    p.add_argument("--runs", default="batched,batched-onnxruntime,batched-openvino,unbatched,batched-all-threads,"
                                     "batched-faiss",
                   help=f"runs, comma-separated, of: {', '.join(RUNS)}")
    p.add_argument("--out", default="docs/bench/serve-load.json")
    args = p.parse_args()
    unknown = [name for name in args.runs.split(",") if name not in RUNS]
    if unknown:
        p.error(f"unknown run {unknown[0]!r}; runs are {', '.join(RUNS)}")

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="serve-load-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.time()
        index = build_index(work, args.n, args.base)
        print(f"index: {index} ({args.n:,} vectors) in {time.time() - t:.0f} s", file=sys.stderr)
        images = queries()
        from lookalike.bench.provenance import finish, libraries, machine, provenance

        record = provenance()
        result = {"machine": machine(), "libraries": libraries(), "cpu": cpu(), "load_before": os.getloadavg(),
                  "n": args.n, "dim": None, "clients": args.clients, "client": args.client,
                  "k": args.k, "query_bytes_mean": int(np.mean([len(b) for b in images])), "runs": {}}
        for name in args.runs.split(","):
            server = Server(index, work / f"server-{name}.log", *RUNS[name])
            try:
                import httpx

                result["dim"] = httpx.get(server.url + "/v1/index").json()["dim"]
                before = batches(server.url)
                run = measured(server.url, server.proc.pid, images, args)
                after = batches(server.url)
                done = {key: after[key] - before[key] for key in after}  # warm-up included
                run["batches"], run["cnn_passes"] = done["batches"], done["cnn_passes"]
                run["mean_batch"] = round(done["batch_queries"] / max(done["batches"], 1), 2)
                run["mean_cnn_batch"] = round(done["cnn_queries"] / max(done["cnn_passes"], 1), 2)
                run["load_after"] = os.getloadavg()
                result["runs"][name] = run
                print(f"{name:>9}: {run['searches_per_s']} searches/s, p50 {run['p50_ms']} ms, p95 {run['p95_ms']} ms, "
                      f"p99 {run['p99_ms']} ms, {run['errors']} errors, ~{run['mean_cnn_batch']} queries per CNN "
                      f"pass, ~{run['mean_batch']} per kNN call; CPU ms per search: server "
                      f"{run['server_cpu_ms_per_search']}, client {run['client_cpu_ms_per_search']} (the client "
                      f"{100 * run['client_cpu_share']:.0f}% of the machine); load {run['load_after'][0]:.1f}")
            finally:
                server.stop()
        result["load_after"] = os.getloadavg()
        if {"batched", "unbatched"} <= set(result["runs"]):
            b, u = result["runs"]["batched"], result["runs"]["unbatched"]
            gain = round(b["searches_per_s"] / u["searches_per_s"], 2) if u["searches_per_s"] else None
            result["batched_over_unbatched_throughput"] = gain
            print(f"micro-batching: {gain}x the searches/s of one query per pass" if gain else
                  "micro-batching: one query per pass answered nothing in time (all timed out)")
        result["provenance"] = finish(record)
        result.update(table(result))
        print(f"cpu: {result['cpu']}; load average before {result['load_before']}, after {result['load_after']}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
