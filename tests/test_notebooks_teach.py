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
    "06": {"wsss_lib.ops.flow": ["compute_flow", "encode_flow"]},
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
    modules = {}  # alias -> module, for `from wsss_lib.ops import flow as fl` then `fl.compute_flow(...)`
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                imported[a.asname or a.name] = node.module
                modules[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            called.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules:
                imported.setdefault(f.attr, modules[f.value.id])
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


def test_04_loss_terms_on_one_batch(quick_run, quick_run_dir):
    """04's in-view loss: the terms add up to fgbg_prior_loss, training lowered it on the batch, and the
    value at initialisation is what the library computes for a fresh net initialised from the run's
    classifier on the run's first 8 training images and masks."""
    import torch

    from wsss_lib.core.config import preset
    from wsss_lib.ops.losses import fgbg_prior_loss
    from wsss_lib.papers import paper1 as P
    from wsss_lib.papers.common import make_context

    m = quick_run["04_weak_training"]["loss_terms_batch"]
    for when in ("init", "trained"):
        t = m[when]
        parts = t["fg_over_mask"] + t["bg_over_rest"] + t["absent"] + t.get("tag_term", 0.0)
        assert parts == pytest.approx(t["prior_loss"], abs=1e-4), when
        assert all(v >= 0 for v in t.values())
    assert m["trained"]["prior_loss"] < m["init"]["prior_loss"]
    ctx = make_context(None, quick_run_dir, "cpu", quick=True, seed=0, dataset="toy_objects")
    clf, info = P.get_tag_classifier(ctx, progress=False)
    assert info["trained"] is False
    train = P.load_split(ctx, "train")
    masks = P.train_masks(ctx, clf)
    cfg = preset("seg", True)
    net = P.build_segnet(P.seg_config(ctx, "prior"), P.classifier_config(ctx), train.info.num_classes)
    net = net.init_from_classifier(clf).eval()
    with torch.no_grad():
        logits = net(train.images[:8].float().div(255))
        loss = fgbg_prior_loss(logits, train.tags[:8][:, train.info.foreground].float(), masks[:8],
                               pooling=cfg["pooling"], tag_pooling=cfg["tag_pooling"], present_term=cfg["present_term"])
    assert float(loss) == pytest.approx(m["init"]["prior_loss"], abs=2e-3)


def test_07_region_loss_on_one_batch(quick_run):
    m = quick_run["07_two_stream_video"]["region_loss_batch"]
    assert set(m) == {"untrained", "trained"}
    assert 0 < m["trained"] < m["untrained"]
