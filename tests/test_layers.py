"""The layering of docs/architecture.md, checked so that it cannot silently rot.

Imports point one way: the ground floor (errors, cache, hardware, ...) at the bottom; `knn`
(arrays only) and `sources` above it, then `features`, `index`, the reports, and the shells
(`cli`, later `service` and `dask`) on top. Every import statement counts, also one inside a
function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "lookalike"

GROUND = {"errors", "cache", "hardware", "atomic", "download", "progress", "text"}
# layer -> the layers its modules may import (besides their own)
ALLOWED: dict[str, set[str]] = {
    "ground": set(),
    "knn": {"ground"},
    "sources": {"ground"},
    "features": {"ground", "sources"},
    "index": {"ground", "knn", "sources", "features"},
    "quality": {"ground", "knn", "sources", "features", "index"},
    "report": {"ground", "knn", "sources", "features", "index"},
    "bench": {"ground", "knn", "sources", "features", "report"},
    "demo": {"ground", "knn", "sources", "features", "index", "quality", "report", "bench"},
    "shell": {"ground", "knn", "sources", "features", "index", "quality", "report", "bench", "demo"},
}
SHELLS = {"cli", "service", "dask", "__main__"}


def layer(module: str) -> str:
    """The layer of a dotted module name below `lookalike` ('' for the package itself)."""
    top = module.split(".")[1] if "." in module else ""
    if top in GROUND:
        return "ground"
    if top in SHELLS:
        return "shell"
    return top or "package"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The lookalike modules that `name` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rsplit(".", 1)[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the module pkg.sub when there is one; the version
            # string is the one name every layer may take from the (lazy) package root
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names
                       if not (stem == "lookalike" and a.name == "__version__")]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import lookalike.knn.engine as e` -> the module itself
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t.startswith("lookalike") and t != name:
                found.add(t)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:`, which never run."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_imports_point_one_way():
    wrong = []
    for name, deps in graph().items():
        mine = layer(name)
        if mine == "package":
            continue
        for dep in deps:
            theirs = layer(dep)
            if theirs not in (mine, "package") and theirs not in ALLOWED[mine]:
                wrong.append(f"{name} ({mine}) imports {dep} ({theirs})")
            if theirs == "package" and mine != "shell":
                wrong.append(f"{name} imports the package root; import the module that defines the name")
    assert not wrong, "\n".join(sorted(wrong))


def test_every_module_has_a_layer():
    unknown = {name for name in modules() if layer(name) not in ALLOWED and layer(name) != "package"}
    assert not unknown, f"modules outside every layer (add them to ALLOWED and docs/architecture.md): {unknown}"


def test_no_import_cycles():
    g = graph()
    # A package's __init__ that re-exports its own submodules is not a cycle with them.
    edges = {a: {b for b in deps if not a.startswith(b + ".")} for a, deps in g.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack
                              else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The checks above would fail on a knn module importing sources, and on a cycle."""
    pkg = tmp_path / "lookalike"
    (pkg / "knn").mkdir(parents=True)
    (pkg / "sources").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "knn" / "__init__.py").write_text("")
    (pkg / "sources" / "__init__.py").write_text("")
    (pkg / "knn" / "a.py").write_text("def f():\n    from ..sources import b\n")
    (pkg / "sources" / "b.py").write_text("from lookalike.knn import a\n")
    known = {"lookalike", "lookalike.knn", "lookalike.sources", "lookalike.knn.a", "lookalike.sources.b"}
    assert imports("lookalike.knn.a", pkg / "knn" / "a.py", known) == {"lookalike.sources.b"}
    assert imports("lookalike.sources.b", pkg / "sources" / "b.py", known) == {"lookalike.knn.a"}
    assert "sources" not in ALLOWED[layer("lookalike.knn.a")]


@pytest.mark.parametrize("module, forbidden", [
    ("lookalike.knn", ("PIL", "lookalike.sources", "lookalike.features", "lookalike.index", "lookalike.cli")),
    ("lookalike.sources", ("lookalike.features", "lookalike.knn", "lookalike.index", "torch")),
    ("lookalike", ("torch", "PIL", "numpy")),
])
def test_importing_a_layer_loads_nothing_above_it(module, forbidden):
    code = (f"import sys, {module}\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {forbidden!r} or m.startswith({forbidden!r})]\n"
            "print('\\n'.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not out.strip(), f"import {module} loaded: {out.split()}"
