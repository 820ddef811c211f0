"""The package's layering, read from the source (ast): arrows only point down, no cycles.

Layers, bottom to top (see README "Architecture"):

    core    errors, config, runtime, parallel, io, checkpoint, metrics, results
    data    dataset contract, loaders of real datasets, toy generators
    ops     masks, heatmaps, crf, crf_torch, flow, losses, checkmask: functions on tensors/arrays
    models  backbones, classifier, seg heads, two-stream, init_from
    engine  fit, predict, distributed, sharded dataset jobs
    papers  paper 1 / paper 2 steps shared by notebooks and CLI
    front   viz, figures, notebook, runner, cli

A module may import modules of its own layer or of lower layers. Every import counts, the ones
inside functions too; an import inside a function must say why it is there with a
``# lazy: <reason>`` comment (only to avoid loading a heavy optional dependency early).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "wsss_lib"

LAYERS = ["core", "data", "ops", "models", "engine", "papers", "front"]
# module-name prefix -> layer; the longest matching prefix wins
PLACES = {
    "wsss_lib": "core",  # the package's __init__ (version + WsssError)
    "wsss_lib.core": "core",
    "wsss_lib.data": "data",
    "wsss_lib.ops": "ops",
    "wsss_lib.models": "models",
    "wsss_lib.engine": "engine",
    "wsss_lib.papers": "papers",
    "wsss_lib.viz": "front",
    "wsss_lib.figures": "front",
    "wsss_lib.notebook": "front",
    "wsss_lib.runner": "front",
    "wsss_lib.nbexec": "front",
    "wsss_lib.cli": "front",
    "wsss_lib.__main__": "front",
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def layer_of(module: str) -> str | None:
    best = None
    for prefix, layer in PLACES.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    if best is None or (best[0] == "wsss_lib" and module != "wsss_lib"):
        return None  # a top-level module nobody placed
    return best[1]


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if node.level:
        base = pkg[: len(pkg) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))
    return node.module or ""


def _imports(module: str, path: Path):
    """``(target module, line, inside a function, source lines of the statement)`` for every
    import of a wsss_lib module (``from pkg import submodule`` resolves to the submodule)."""
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    out = []

    def visit(node, in_func):
        for ch in ast.iter_child_nodes(node):
            inner = in_func or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(ch, (ast.Import, ast.ImportFrom)):
                text = "\n".join(lines[ch.lineno - 1:ch.end_lineno])
                if isinstance(ch, ast.Import):
                    targets = [a.name for a in ch.names]
                else:
                    base = _resolve(module, path, ch)
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in ch.names]
                for t in targets:
                    out.append((t, ch.lineno, in_func, text))
            visit(ch, inner)

    visit(tree, False)
    return out


EDGES = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if layer_of(m) is None]
    assert not missing, f"modules without a layer (add them to a layer package or PLACES): {missing}"


def test_imports_only_point_down():
    bad = []
    for m, imps in EDGES.items():
        lm = layer_of(m)
        for target, line, _, _ in imps:
            if not (target == "wsss_lib" or target.startswith("wsss_lib.")):
                continue
            lt = layer_of(target)
            if lm is None or lt is None:
                continue
            if LAYERS.index(lt) > LAYERS.index(lm):
                bad.append(f"{m} ({lm}) imports {target} ({lt}) at line {line}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = {m: sorted({t for t, *_ in imps if t in MODULES and t != m}) for m, imps in EDGES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def dfs(u):
        state[u] = 1
        stack.append(u)
        for v in graph[u]:
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                dfs(v)
        stack.pop()
        state[u] = 2

    for m in graph:
        if m not in state:
            dfs(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_inside_functions_say_why():
    bad = []
    for m, imps in EDGES.items():
        for target, line, in_func, text in imps:
            if in_func and "# lazy:" not in text:
                bad.append(f"{m}:{line}: {text.strip()}")
    assert not bad, "imports inside functions need a '# lazy: <reason>' comment:\n" + "\n".join(bad)


@pytest.mark.parametrize("layer,forbidden", [("data", "wsss_lib.viz"), ("ops", "wsss_lib.engine"),
                                             ("core", "wsss_lib.data")])
def test_examples_of_the_rule(layer, forbidden):
    # the rule in words, for a reader of a failure: e.g. no dataset module draws, no op trains
    for m, imps in EDGES.items():
        if layer_of(m) == layer:
            assert all(not (t == forbidden or t.startswith(forbidden + ".")) for t, *_ in imps), m


def test_the_checker_sees_a_violation(tmp_path):
    # the checker itself: an upward import and a missing lazy comment are found
    p = tmp_path / "x.py"
    p.write_text("from ..papers import paper1\n\ndef f():\n    import matplotlib\n")
    imps = _imports("wsss_lib.ops.x", p)
    assert ("wsss_lib.papers.paper1", 1, False) == imps[0][:3]
    assert imps[1][2] is True and "# lazy:" not in imps[1][3]
