"""Repository rules: output-free notebooks with a parameters cell, consistent dependency lists,
README commands that .ci/run executes, a license."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_output_free_with_parameters_cell(nb):
    data = json.loads(nb.read_text())
    code = [c for c in data["cells"] if c["cell_type"] == "code"]
    assert code, "a notebook without code"
    with_outputs = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert not with_outputs, f"{nb.name}: code cells {with_outputs} carry outputs/execution counts; strip them"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{nb.name}: needs exactly one cell tagged 'parameters'"
    src = "".join(params[0]["source"])
    for key in ("quick", "seed", "device", "dataset", "data_root", "output_dir"):
        assert re.search(rf"^{key}\s*=", src, re.M), f"{nb.name}: parameters cell lacks {key}"
    assert code.index(params[0]) == 0, f"{nb.name}: the parameters cell must be the first code cell"
    ids = [c.get("id") for c in data["cells"]]
    assert all(ids) and len(set(ids)) == len(ids), f"{nb.name}: every cell needs a unique id (nbformat 4.5)"


def _norm(req: str) -> str:
    return re.split(r"[<>=!\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    proj = pyproject["project"]
    wanted = {_norm(r) for r in proj["dependencies"] + proj["optional-dependencies"]["dev"]}
    env = (REPO / "environment.yml").read_text()
    listed = set()
    for line in env.split("dependencies:", 1)[1].splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z0-9_.\-]+)\s*([<>=!].*)?$", line)
        if m and m.group(1) not in ("pip", "python", "-e"):
            listed.add(_norm(m.group(1)))
    assert wanted == listed, f"only in pyproject: {sorted(wanted - listed)}; only in environment.yml: {sorted(listed - wanted)}"
    # torch and torchvision pinned together, with the same versions in both files
    for pkg in ("torch", "torchvision", "pydensecrf2"):
        pins = [r for r in proj["dependencies"] if _norm(r) == pkg]
        assert pins and "==" in pins[0], f"{pkg} must be pinned in pyproject"
        assert pins[0].replace(" ", "") in env.replace(" ", ""), f"{pkg} pin differs in environment.yml"
    assert "opencv-python-headless" in wanted and "opencv-python" not in wanted


def _readme_block(tag: str) -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(rf"<!-- {tag} -->\s*```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert m, f"README lacks the <!-- {tag} --> command block"
    return m.group(1).strip()


def test_readme_has_the_three_commands_and_ci_runs_them():
    install, main_job, test = (_readme_block(t) for t in ("install", "main-job", "test"))
    assert "pip install" in install and "wsss run" in main_job and "pytest" in test
    ci = (REPO / ".ci" / "run").read_text()
    assert "<!-- install -->" in ci and "<!-- test -->" in ci, ".ci/run must execute the README's own blocks"


def test_license_and_contributing():
    assert "MIT License" in (REPO / "LICENSE").read_text()
    assert re.search(r"^## Contributing", (REPO / "README.md").read_text(), re.M)


def test_no_module_defines_a_function_or_class_over_a_name_it_imports():
    """A top-level ``def``/``class`` reusing an imported name shadows the import for the whole module
    (a ``cam_maps(ctx, ...)`` in ``papers.paper1`` once hid ``ops.masks.cam_maps`` and broke notebooks 01/02)."""
    import ast

    bad = []
    for path in sorted((REPO / "wsss_lib").rglob("*.py")):
        imported = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imported.update({(a.asname or a.name).split(".")[0]: node.lineno for a in node.names})
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in imported:
                bad.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} (imported at line {imported[node.name]})")
    assert not bad, bad
