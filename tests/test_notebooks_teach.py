"""Notebooks that teach (issue 15): each notebook runs its method IN VIEW with the library's own
functions, ends with "What to try" and "Paper vs ours", and its executed copy has no traceback.

The source checks parse every notebook's code cells (no execution): they fail when a notebook
stops calling the function it teaches (e.g. 02 goes back to one ``P.compute_masks`` call), calls a
copy of it (a ``def`` of the same name in the notebook), or imports it from elsewhere.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = {p.name[:2]: p for p in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))}

# notebook -> {library module: functions/classes the notebook must call (or, for classes, name) in view}
TEACHES = {
    "02": {"wsss_lib.ops.masks": ["aggregate_channels", "align_maps", "resize_maps", "normalize_maps",
                                  "threshold_masks", "fuse_activations"]},
    "03": {"wsss_lib.ops.crf_torch": ["crf_fgbg_torch", "pairwise_kernels"], "wsss_lib.ops.masks": ["calibrate"]},
    "04": {"wsss_lib.ops.losses": ["fgbg_regions", "region_loss_terms", "fgbg_prior_loss", "tags_only_loss",
                                   "cross_entropy"]},
    "05": {"wsss_lib.ops.heatmaps": ["raw_class_maps", "normalise_maps", "class_heatmaps", "heatmap_regions",
                                     "regions_to_label"]},
    "07": {"wsss_lib.models.two_stream": ["TwoStreamNet", "run_stages"],
           "wsss_lib.papers.video": ["build_video_model"],
           "wsss_lib.ops.losses": ["region_loss", "region_loss_terms"]},
}


def _code(nb: Path) -> str:
    cells = json.loads(nb.read_text())["cells"]
    lines = []
    for c in cells:
        if c["cell_type"] != "code":
            continue
        src = "".join(c["source"])
        lines += [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def _markdown(nb: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "markdown"]


def _uses(tree: ast.AST) -> tuple[dict[str, str], set[str], set[str], set[str]]:
    """(imported name -> module, names called, names referenced, names defined by def/class)."""
    imported, called, referenced, defined = {}, set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                imported[a.asname or a.name] = node.module
        elif isinstance(node, ast.Call):
            f = node.func
            called.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
        elif isinstance(node, ast.Name):
            referenced.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            defined.add(node.name)
    return imported, called, referenced, defined


@pytest.mark.parametrize("key", sorted(TEACHES))
def test_notebook_runs_its_method_with_the_library_functions(key):
    nb = NOTEBOOKS[key]
    imported, called, referenced, defined = _uses(ast.parse(_code(nb)))
    for module, names in TEACHES[key].items():
        for name in names:
            assert imported.get(name) == module, f"{nb.name}: {name} must be imported from {module} (got {imported.get(name)})"
            assert name not in defined, f"{nb.name}: defines its own {name}: call the library's, do not copy it"
            if name[0].isupper():  # a class: named in view (built by the library's factory)
                assert name in referenced, f"{nb.name}: never shows {name}"
            else:
                assert name in called, f"{nb.name}: never calls {name} (the method it teaches) in view"


def test_the_in_view_checks_catch_a_notebook_that_stops_showing_its_method():
    src = "from wsss_lib.papers import paper1 as P\nmaps = P.compute_masks(ctx, clf, 'test')"
    imported, called, _, _ = _uses(ast.parse(src))
    assert "fuse_activations" not in called  # what the test above would flag
    copied = "from wsss_lib.ops.masks import fuse_activations\ndef fuse_activations(s):\n    return s\nfuse_activations(1)"
    assert "fuse_activations" in _uses(ast.parse(copied))[3]


@pytest.mark.parametrize("nb", list(NOTEBOOKS.values()), ids=lambda p: p.name)
def test_notebook_ends_with_what_to_try_and_paper_vs_ours(nb):
    md = _markdown(nb)
    heads = [m.splitlines()[0] for m in md if m.strip()]
    assert heads[-2:] == ["## What to try", "## Paper vs ours"], f"{nb.name}: ends with {heads[-2:]}"
    items = re.split(r"\n(?=\d\. )", md[-2])[1:]
    assert 2 <= len(items) <= 3, f"{nb.name}: 'What to try' needs 2-3 numbered items, has {len(items)}"
    for item in items:
        assert "xpect" in item, f"{nb.name}: each item says what the reader should expect: {item[:60]!r}"
    assert "ours" in md[-1] and "|" in md[-1], f"{nb.name}: 'Paper vs ours' is a table with the [ours] choices"


def test_executed_notebooks_have_no_traceback_and_show_the_in_view_figures(quick_run_dir, quick_status):
    """The quick run's executed copies: no cell prints a traceback, and every in-view section
    (the markdown heading "step by step", "in view" or "term by term") shows at least one figure."""
    for name, st in quick_status.items():
        path = quick_run_dir / "notebooks" / f"{name}.ipynb"
        if st.get("status") != "ok" or not path.is_file():
            continue
        cells = json.loads(path.read_text())["cells"]
        section, figures = None, {}
        for c in cells:
            if c["cell_type"] == "markdown":
                head = "".join(c["source"]).splitlines()[0] if c["source"] else ""
                if head.startswith("## "):
                    section = head
                    figures.setdefault(section, 0)
                continue
            for out in c.get("outputs", []):
                assert out.get("output_type") != "error", f"{name}: a cell raised {out.get('ename')}"
                text = "".join(out.get("text", ""))
                assert "Traceback (most recent call last)" not in text, f"{name}: a cell printed a traceback"
                if "image/png" in out.get("data", {}) and section:
                    figures[section] += 1
        in_view = [s for s in figures if any(w in s for w in ("step by step", "in view", "term by term"))]
        for s in in_view:
            assert figures[s] >= 1, f"{name}: section {s!r} shows no figure"
