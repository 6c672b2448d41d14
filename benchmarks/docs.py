"""Render the figures of docs/benchmarks.md and README.md from the JSON under docs/bench/.

    python benchmarks/docs.py            # rewrite every generated section in place (make bench-docs)
    python benchmarks/docs.py --check    # exit 1 naming each section that differs from its JSON

A generated section sits between two HTML comments, invisible in the rendered page:

    <!-- bench:NAME -->
    ...generated text, never edited by hand...
    <!-- /bench:NAME -->

Prose outside the markers is left alone. NAME is either a renderer of `SECTIONS` below (a
function of the parsed JSON, returning markdown), or the stem of a JSON file under
docs/bench/ that carries its own table:

    {"columns": ["backend", "p50 ms", ...], "rows": [["lookalike", 1.2, ...], ...],
     "notes": ["optional lines printed under the table"], "machine": ..., "provenance": ...}

so a new benchmark adopts the convention by writing such a JSON (with `machine`,
`libraries` and `provenance` from `lookalike.bench.provenance`) and putting the two markers
where its table goes. Markers may also sit inside a paragraph (the README's figures):
`<!-- bench:NAME -->text<!-- /bench:NAME -->`. tests/test_bench_docs.py fails when a
section and its JSON disagree, or a JSON lacks its provenance.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "docs" / "bench"
FILES = (ROOT / "docs" / "benchmarks.md", ROOT / "README.md")
# a marker quoted in backticks (as this convention is described in the docs) is text, not a marker
MARKER = re.compile(r"(?<!`)<!-- bench:(?P<name>[\w.-]+) -->(?P<body>.*?)<!-- /bench:(?P=name) -->", re.S)
OPENING = re.compile(r"(?<!`)<!-- (/?)bench:([\w.-]+) -->")


# -- formatting -------------------------------------------------------------------------------
def secs(x: float) -> str:
    """Seconds with three significant figures (0.0431, 1.81, 22.1, 123)."""
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x" if x >= 0.1 else f"{x:.3f}x"


def run_line(result: dict, what: str) -> str:
    """Where a result comes from: date, commit, command, machine, load."""
    p, m = result.get("provenance", {}), result.get("machine", {})
    commit = (p.get("commit") or "unknown")[:10] + (" (with uncommitted changes)" if p.get("dirty") else "")
    load = p.get("load_before"), p.get("load_after")
    load_text = f"; load average {load[0][0]:.1f} before, {load[1][0]:.1f} after" if all(load) else ""
    return (f"{what}: run of {p.get('date', '?')}, commit `{commit}`, `{p.get('command', '?')}`. Machine: "
            f"{m.get('cpu_model', m.get('cpu', '?'))}, {m.get('cores', '?')} cores "
            f"({', '.join(m.get('cpu_flags', [])) or 'flags not recorded'}), "
            f"{m.get('torch_threads', '?')} torch threads{load_text}.")


def table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- renderers --------------------------------------------------------------------------------
def knn_engine(result: dict) -> str:
    """The backend comparison of `lookalike bench`: one row per backend, fit / search / total
    apart, ratios of search times (and of totals) over FAISS's and scikit-learn's."""
    from lookalike.bench import settings_text  # the words `lookalike bench` prints (with torch: imported here)

    w = result["workload"]
    rows = []
    for r in result["results"]:
        rows.append([f"`{r['backend']}`", secs(r["fit_s"]), secs(r["search_s"]), secs(r["total_s"]),
                     ratio(r.get("search_vs_faiss")), ratio(r.get("search_vs_sklearn")),
                     ratio(r.get("total_vs_faiss")), f"{r['peak_rss_mb']:.0f}", f"{r['max_abs_dist_diff']:.1e}",
                     f"{r['frac_neighbor_sets_differ']:.2%} ({r['frac_neighbor_sets_differ_beyond_ties']:.2%})",
                     "yes" if r["agree"] else "**NO**"])
    out = [f"Workload: {w['nq']:,} queries x {w['nb']:,} base vectors x {w['d']:,}-d, k = {w['k']}, {w['metric']}, "
           f"{w['source']}; best of {w['repeats']} interleaved repeats; verified on {w['verified_queries']:,} "
           "queries against a float64 brute force in plain NumPy.", "",
           table(["backend", "fit s", "search s", "fit + search s", "search / FAISS", "search / scikit-learn",
                  "total / FAISS", "peak RSS MB", "max abs distance diff", "sets differ (beyond ties)",
                  "verified"], rows), "",
           "Ratios are times over the peer's time in the same run (below 1: faster). How each ran, "
           "and what its fit includes (every library is imported before its timed fit):", ""]
    for r in result["results"]:
        out.append(f"- `{r['backend']}`: {r['config']}. Fit: {r.get('fit_includes', '?')}.")
        if "settings" in r:
            out.append(f"  Its BLAS threshold was chosen by timing both settings in the same process, "
                       f"{settings_text(r, secs)}.")
    for r in result["results"]:
        st = r.get("stages")
        if st and "fp32_gemm_floor_s" in r:
            out.append(f"- `{r['backend']}` stages: prepare {secs(st['prepare_s'])} s, "
                       f"screen {secs(st['screen_s'])} s, refine {secs(st['refine_s'])} s, "
                       f"rerank {secs(st['rerank_s'])} s, fallback "
                       f"{secs(st['fallback_s'])} s; {st['candidates']:,} candidates in the windows, "
                       f"{st['reranked']:,} reranked in float64, {st['fallbacks']} fallbacks; the fp32 GEMMs alone "
                       f"(same blocks) {secs(r['fp32_gemm_floor_s'])} s: search at {r['vs_fp32_floor']:.2f}x "
                       "of that floor.")
    out += ["", run_line(result, "`docs/bench/" + result.get("_file", "") + "`")]
    return "\n".join(out)


def scaling(result: dict) -> str:
    """The scaling sweeps: lookalike and FAISS per point, FAISS at its better BLAS setting."""
    rows = []
    for p in result["points"]:
        faiss = p.get("faiss_s")
        path = {"one block": ", one block", "query blocks": ", query blocks"}.get(p.get("lookalike_path", ""), "")
        rows.append([p["param"], f"{p[p['param']]:,}", p.get("lookalike_screen", "?") + path, secs(p["lookalike_s"]),
                     secs(faiss) if faiss else "-", p.get("faiss_setting", "-"),
                     ratio(p.get("search_vs_faiss")), ratio(p.get("first_vs_faiss")),
                     "yes" if all(p.get(f"{b}_agree", True) for b in ("lookalike", "faiss")) else "**NO**"])
    base = result["base"]
    same = [p for p in result["points"] if all(p[k] == v for k, v in base.items()) and "search_vs_faiss" in p]
    out = [table(["sweep", "value", "lookalike screen", "lookalike search s", "FAISS search s",
                  "FAISS setting", "lookalike / FAISS", "first search: lookalike / FAISS", "verified"], rows), ""]
    if len(same) > 1:
        rs = sorted(p["search_vs_faiss"] for p in same)
        out.append(f"The base configuration ({', '.join(f'{k} = {v:,}' for k, v in base.items())}) is a point of "
                   f"each sweep that includes its value: measured {len(same)} times in this run, lookalike took "
                   f"{ratio(rs[0])} to {ratio(rs[-1])} FAISS's search time.")
    faster = [p for p in result["points"] if p.get("search_vs_faiss", 2) < 1]
    firsts = [p for p in result["points"] if p.get("first_vs_faiss") is not None]
    first_faster = [p for p in firsts if p["first_vs_faiss"] < 1]
    out.append(f"lookalike's search was faster than FAISS's at {len(faster)} of {len(result['points'])} points"
               + (f"; its first search of the queries in a process (before the timed one, which repeats it) at "
                  f"{len(first_faster)} of {len(firsts)}" if firsts else "") + ". "
               f"Best of {result['repeats']} interleaved repeats per point; every point verified on "
               f"{result.get('verified_queries', '?')} queries against float64.")
    out += ["", run_line(result, "`docs/bench/scaling.json`")]
    return "\n".join(out)


def embed(result: dict) -> str:
    """Images/s of each feature-extraction variant, each against the same network's baseline,
    with its least cosine to lookalike's eager fp32 features where it has one."""
    rows = [[r["description"], f"{r['images_per_s']:.1f}", ratio(r.get("vs_baseline")),
             f"`{r['baseline']}`" if r.get("baseline") else "-", _cosine(r), r["config"]]
            for r in result["results"]]
    out = [f"{result['n']} sample-set images at 96 x 96, best of {result['repeats']} interleaved repeats, each "
           "variant in its own process.", "",
           table(["variant", "images/s", "vs baseline", "baseline (same network)", "cosine to fp32", "config"], rows),
           "", run_line(result, "`docs/bench/embed.json`")]
    return "\n".join(out)


def _cosine(r: dict) -> str:
    c = r.get("cosine_to_fp32")
    return "-" if c is None else f"{c:.5f}"


def readme_embed(result: dict) -> str:
    """The README's figure: ResNet-50 features, lookalike's fastest path within cosine 0.999 of
    fp32 and its default (runtime chosen by calibration), against Keras/TensorFlow's best, in
    one run."""
    rows = {r["variant"]: r for r in result["results"]}
    ours = [r for r in rows.values() if r["variant"].startswith("lookalike-resnet50")
            and (r.get("cosine_to_fp32") or 0) >= 0.999 and r.get("vs_baseline")]
    if not ours:
        return "no ResNet-50 run of lookalike against Keras in docs/bench/embed.json"
    best = max(ours, key=lambda r: r["images_per_s"])
    mode = best["variant"].removeprefix("lookalike-resnet50-")
    flags = {"fast": "", "eager-fp32": "--no-fast --precision fp32",
             "torch": "--runtime torch", "bf16": "--runtime torch --precision bf16"}.get(
        mode, " ".join(f"--{k} {v}" for k, v in zip(("runtime", "precision") if mode.split("-")[0] in
                                                     ("onnxruntime", "openvino") else ("precision",), mode.split("-"))))
    ran = best["config"].rsplit(", ", 1)[-1]
    out = (f"ResNet-50 features at 96 x 96 on this machine's CPU ({result['machine'].get('cores', '?')} cores): "
           f"{best['images_per_s']:.0f} images/s " + (f"with `{flags}`" if flags else "with the default options")
           + f" (it ran {ran}), "
           f"{ratio(best['vs_baseline'])} Keras/TensorFlow's best, cosine {best['cosine_to_fp32']:.5f} to fp32")
    default = rows.get("lookalike-resnet50-fast")
    if default and default is not best and default.get("vs_baseline"):
        out += (f"; lookalike's default (it ran {default['config'].rsplit(', ', 1)[-1]}) "
                f"{ratio(default['vs_baseline'])}")
    load = [result.get("provenance", {}).get(k) for k in ("load_before", "load_after")]
    busy = f", load average {load[0][0]:.0f} to {load[1][0]:.0f}" if all(load) else ""
    return out + f" (one run{busy})"


def readme_knn(_: dict) -> str:
    """The README's figures: the engine against FAISS and scikit-learn on the tutorial's shape,
    and how often it beat FAISS over the scaling sweeps."""
    eng = load("knn-engine")
    sc = load("scaling")
    w = eng["workload"]
    ours = next(r for r in eng["results"] if r["backend"] == "lookalike")
    faster = [p for p in sc["points"] if p.get("search_vs_faiss", 2) < 1]
    st = ours.get("stages") or {}
    how = ours["config"]  # what fit prepared; the search may have taken another screen (auto)
    if st.get("screen_dtype") and "auto" in how:
        how = (f"the default precision auto, which searched with the {st['screen_dtype']} screen"
               + (" chosen by a probe" if "by probe" in st.get("screen_choice", "") else ""))
    text = (f"On the tutorial's shape at {w['nq']:,} queries here ({w['nb']:,} x {w['d']:,}-d, k = {w['k']}) the "
            f"engine's search took {ratio(ours.get('search_vs_faiss'))} FAISS's time and "
            f"{ratio(ours.get('search_vs_sklearn'))} scikit-learn's (one run, {how}); over the "
            "scaling sweeps its search was ")
    n = len(sc["points"])
    if not faster:
        return text + f"slower than FAISS's at all {n} points"
    if len(faster) == n:
        return text + f"faster than FAISS's at all {n} points"
    return text + f"faster than FAISS's at {len(faster)} of {n} points ({_where(faster)}) and slower at the others"


def readme_claim(_: dict) -> str:
    """The README's headline about speed: what the committed runs support, no more."""
    eng = load("knn-engine")
    sc = load("scaling")
    ours = next(r for r in eng["results"] if r["backend"] == "lookalike")
    pts = [p for p in sc["points"] if "search_vs_faiss" in p]
    faster = [p for p in pts if p["search_vs_faiss"] < 1]

    def than(ratio_: float | None, peer: str) -> str:
        return f"{'faster' if ratio_ and ratio_ < 1 else 'slower'} than {peer}"

    at = (f"at every one of the {len(pts)} scaling points" if len(faster) == len(pts) else
          f"at none of the {len(pts)} scaling points" if not faster else
          f"at {len(faster)} of the {len(pts)} scaling points ({_where(faster)})")
    return (f"an exact engine measured against them in the same runs; on this machine its search was "
            f"{than(ours.get('search_vs_sklearn'), 'scikit-learn')} and {than(ours.get('search_vs_faiss'), 'FAISS')} "
            f"on the tutorial's shape at {eng['workload']['nq']:,} queries, and faster than FAISS {at} "
            "(docs/benchmarks.md)")


def _where(points: list[dict]) -> str:
    return ", ".join(f"{p['param']} = {p[p['param']]:,}" for p in points)


def generic(result: dict) -> str:
    """A JSON that carries its own table: columns, rows, optional notes."""
    out = [table(result["columns"], result["rows"])]
    out += ["", *result.get("notes", [])] if result.get("notes") else []
    out += ["", run_line(result, f"`docs/bench/{result.get('_file', '')}`")]
    return "\n".join(out)


def dask_scale(r: dict) -> str:
    """benchmarks/dask_scale.py: the distributed search and embedding against the single run."""
    def rows(part: str, rate: str) -> list[list]:
        out = [[f"single machine, {r['machine'].get('torch_threads', '?')} threads", secs(r[part]["single"]["s"]),
                "1.00x", "", ""]]
        for name, v in r[part].items():
            if name != "single":
                w = int(name.split("_")[0])
                out.append([f"{w} worker(s) on a LocalCluster", secs(v["s"]), f"**{ratio(v['vs_single'])}**",
                            secs(v["cold_s"]), v.get("shards", v.get("chunks"))])
        return out

    search = table(["run", "search s", "time vs single machine", "first search s (workers start, read shards)",
                    "shards"], rows("search", "pairs_per_s"))
    embed = table(["run", "embed s", "time vs single machine", "first run s (workers build the model)", "chunks"],
                  rows("embed", "images_per_s"))
    ps = r["per_shard"]
    return "\n".join([
        f"Exact search, {r['nb']:,} x {r['d']}-d base, {r['nq']:,} queries, k = {r['k']}, {r['precision']} screen on "
        "both sides; best of " + str(r["repeats"]) + ":", "", search, "",
        f"Feature extraction, {r['images']} sample images saved as `.npy`, EfficientNet-Lite0:", "", embed, "",
        f"One search task at the plan's dimension: a {ps['rows']:,}-row shard of {ps['d']}-d, {ps['nq']:,} queries, "
        f"read, prepared and searched in {secs(ps['s'])} s ({ps['gflops']:.1f} GFLOP/s).", "",
        run_line(r, "`docs/bench/dask_scale.json`")])


def index_duplicates(r: dict) -> str:
    """benchmarks/index_duplicates.py: near-duplicate groups against FAISS's range search."""
    peer = r["engines"].get("faiss")
    rows = []
    for name, e in r["engines"].items():
        vs = "1.00x" if name != "lookalike" else (f"{ratio(r['time_vs_peer'])} the time, {ratio(r['rss_vs_peer'])} "
                                                  "the memory" if peer else "-")
        rows.append([{"lookalike": "lookalike `near_duplicates`", "faiss": "FAISS `range_search` (vectors in RAM)"}
                     .get(name, name), secs(e["seconds"]), f"{e['peak_rss_mib']:,}", e["pairs"], vs])
    part = ("the whole run" if r["queries"] == r["n"] else
            f"the first {r['queries']:,} rows asking against all {r['n']:,} (the same memory as the whole run; "
            f"time grows with the rows that ask: about {r['n'] / r['queries']:.1f}x for the whole run)")
    return "\n".join([
        f"{r['n']:,} x {r['d']}-d, {r['planted_pairs']} planted pairs ({r['planted_found']} among the rows that "
        f"asked found), threshold {r['threshold']:.4g}; {part}:", "",
        table(["engine", "seconds", "peak RSS MiB", "pairs", "vs FAISS"], rows), "",
        ("Both found the same pairs." if r.get("same_pairs_as_peer") else "The pairs differ from FAISS's."), "",
        run_line(r, f"`docs/bench/{r.get('_file', '')}`")])


GPU_TARGET_MS = 20  # the tutorial-shape search on an H200, exact


def gpu(r: dict) -> str:
    """benchmarks/gpu.py: the tutorial's search and ResNet-50 features on a CUDA GPU."""
    w = r["workload"]
    peer = next((x for x in r["results"] if x["backend"] == "torch"), None)
    rows = []
    for x in r["results"]:
        vs = "1.00x" if x is peer or peer is None else ratio(x["device_s"] / peer["device_s"])
        stages = ("" if "stages_s" not in x else
                  ", ".join(f"{n} {t * 1000:.1f}" for n, t in x["stages_s"].items()) +
                  f"; {x['candidates_per_query']:.1f} candidates a query")
        rows.append([x["backend"], f"{x['device_s'] * 1000:.1f}", f"{x['host_s'] * 1000:.1f}", vs,
                     f"{x['frac_neighbor_sets_differ']:.2%}", "yes" if x["agree"] else "**no**",
                     x.get("screen", "float32"), stages])
    knn = table(["backend", "device-resident ms", "host to host ms", "time vs torch", "neighbour sets differ",
                 "agrees", "screen", "stages ms"], rows)
    feats = table(["row", "batch", "images/s", "vs the 20,000 target", "least cosine to fp32", "variant"],
                  [[e["backend"], e["batch_size"], f"{e['images_per_s']:,.0f}", ratio(e["images_per_s"] / 20000),
                    f"{e['least_cosine']:.5f}", e["variant"]] for e in r.get("embed", [])])
    out = [f"On {r['device']}: {w['nq']:,} queries x {w['nb']:,} base x {w['d']}-d, k = {w['k']}, "
           f"{w['metric']}; every row verified on {w['verified_queries']:,} queries against a float64 brute force:",
           "", knn]
    exact = [x for x in r["results"] if x["exact"] and x["agree"]]
    tutorial = (w["nq"], w["nb"], w["d"], w["k"]) == (10_000, 90_000, 2048, 3)  # the shape the target is for
    if exact and tutorial:
        best = min(exact, key=lambda x: x["device_s"])
        auto = next((x for x in exact if x["backend"].endswith("@auto")), None)
        out += ["", f"Fastest exact row: {best['backend']}, {best['device_s'] * 1000:.1f} ms device-resident: "
                    f"{best['device_s'] * 1000 / GPU_TARGET_MS:.1f}x the {GPU_TARGET_MS} ms target (**not met**"
                    if best["device_s"] > GPU_TARGET_MS / 1000 else
                    f"Fastest exact row: {best['backend']}, {best['device_s'] * 1000:.1f} ms device-resident: "
                    f"within the {GPU_TARGET_MS} ms target (**met**"]
        out[-1] += (f"), {ratio(best['device_s'] / 0.791)} the time of the tutorial's cuML on a V100 (791 ms)."
                    + (f" `auto` took the {auto['screen']} screen: {ratio(auto['device_s'] / best['device_s'])} the "
                       "fastest row's time." if auto is not None and auto is not best else ""))
    if r.get("ceilings"):
        c = r["ceilings"]
        out += ["", "Each alone on the device, all queries against the base: " + ", ".join(
            f"GEMM {n.split('_')[1]} {t * 1000:.1f} ms" for n, t in c.items() if n.startswith("gemm_"))
            + f"; a top-k over the scores of {c['topk_block_queries']:,} queries {c['topk_block_s'] * 1000:.1f} ms."]
    if r.get("embed"):
        n = r["embed"][0]["images"]
        default = r["embed"][0]
        out += ["", f"ResNet-50 features (random weights; the speed is the same), {n:,} images of 96 x 96 x 3, "
                    "uint8 NumPy in, float32 NumPy out:", "", feats, "",
                f"The default ({default['variant']}) ran {ratio(default['images_per_s'] / 20000)} the 20,000 "
                f"images/s target (**{'met' if default['images_per_s'] >= 20000 else 'not met'}**)."]
    out += ["", run_line(r, f"`docs/bench/{r.get('_file', '')}`") + f" Libraries: torch {r['libraries'].get('torch')}."]
    return "\n".join(out)


# NAME -> (JSON stem under docs/bench/, renderer). Add a row for a renderer of your own.
SECTIONS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "knn-engine": ("knn-engine", knn_engine),
    "knn-sample-lite0": ("knn-sample-lite0", knn_engine),
    "scaling": ("scaling", scaling),
    "embed": ("embed", embed),
    "readme-embed": ("embed", readme_embed),
    "readme-knn": ("knn-engine", readme_knn),
    "readme-claim": ("knn-engine", readme_claim),
    "dask-scale": ("dask_scale", dask_scale),
    "gpu-h200": ("gpu-h200", gpu),
    "index-duplicates": ("index-duplicates", index_duplicates),
    "index-duplicates-20k": ("index-duplicates-20k", index_duplicates),
}


def load(stem: str) -> dict:
    path = BENCH / f"{stem}.json"
    if not path.is_file():
        raise SystemExit(f"docs.py: no {path} for section {stem!r}")
    return json.loads(path.read_text()) | {"_file": path.name}


def render(name: str) -> str:
    if name in SECTIONS:
        stem, fn = SECTIONS[name]
        return fn(load(stem))
    result = load(name)
    if "columns" not in result or "rows" not in result:
        raise SystemExit(f"docs.py: section {name!r} has no renderer in SECTIONS and docs/bench/{name}.json "
                         "has no columns and rows")
    return generic(result)


def _check_markers(text: str, path: Path) -> None:
    """Every opening marker closed by its own closing marker, none nested."""
    stack: list[str] = []
    for m in OPENING.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if not closing:
            if stack:
                raise SystemExit(f"docs.py: {path.name}: section {name!r} opens inside {stack[-1]!r}")
            stack.append(name)
        elif not stack or stack.pop() != name:
            raise SystemExit(f"docs.py: {path.name}: closing marker of {name!r} without its opening one")
    if stack:
        raise SystemExit(f"docs.py: {path.name}: section {stack[-1]!r} is never closed")


def rendered(text: str, path: Path) -> str:
    """`text` with every section regenerated. Block sections (a marker on a line of its own)
    get their text between blank lines; inline ones (README figures) in place."""
    _check_markers(text, path)

    def fill(m: re.Match) -> str:
        name, body = m.group("name"), m.group("body")
        inline = "\n" not in body
        new = render(name)
        return f"<!-- bench:{name} -->{new if inline else chr(10) + new + chr(10)}<!-- /bench:{name} -->"

    return MARKER.sub(fill, text)


def stale(files: tuple[Path, ...] = FILES) -> list[str]:
    """Sections whose text differs from what their JSON renders, as 'FILE: NAME'."""
    out = []
    for path in files:
        text = path.read_text()
        new = rendered(text, path)
        olds = {m.group("name"): m.group(0) for m in MARKER.finditer(text)}
        news = {m.group("name"): m.group(0) for m in MARKER.finditer(new)}
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        out += [f"{shown}: {n}" for n in olds if olds[n] != news.get(n)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 naming stale sections")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale()
        for s in bad:
            print(f"stale: {s} (run python benchmarks/docs.py)", file=sys.stderr)
        return 1 if bad else 0
    for path in FILES:
        text = path.read_text()
        new = rendered(text, path)
        if new != text:
            path.write_text(new)
            print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
