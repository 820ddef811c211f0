"""Shared fixtures.

``quick_run``: executes every notebook ONCE per test session in quick mode through the real
runner (``python -m wsss_lib run --quick``, exactly what a user runs) and returns
``{notebook_name: metrics}`` as the notebooks recorded them. Notebook tests assert on those
values. Set ``WSSS_QUICK_RUN_DIR`` to reuse an existing quick run's output folder while
developing (the run is then skipped if it has results.json).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def patch_presets(monkeypatch):
    """``patch_presets({section: {key: value}})``: set preset values in both modes for one test."""
    from wsss_lib.core.config import PRESETS

    def apply(sections: dict) -> None:
        for section, values in sections.items():
            for k, v in values.items():
                monkeypatch.setitem(PRESETS[section]["default"], k, v)
                monkeypatch.setitem(PRESETS[section]["quick"], k, v)

    return apply


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def quick_run_dir(tmp_path_factory) -> Path:
    reuse = os.environ.get("WSSS_QUICK_RUN_DIR")
    if reuse and (Path(reuse) / "results.json").is_file():
        return Path(reuse)
    out = Path(reuse) if reuse else tmp_path_factory.mktemp("quick_run")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "wsss_lib", "run", "--quick", "--keep-going", "--no-html",
                           "--device", "cpu", "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    (out / "runner.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return out


@pytest.fixture(scope="session")
def quick_status(quick_run_dir) -> dict:
    path = quick_run_dir / "status.json"
    assert path.is_file(), f"the quick run wrote no status.json; log: {quick_run_dir / 'runner.log'}"
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def quick_run(quick_run_dir, quick_status) -> dict:
    """``{notebook: metrics}``; a notebook that failed makes any test that reads it fail with its error."""
    results = json.loads((quick_run_dir / "results.json").read_text())
    metrics = results["metrics"]

    class _Metrics(dict):
        def __missing__(self, name):
            st = quick_status.get(name)
            if st is None:
                pytest.fail(f"notebook {name} did not run in the quick run (status: {sorted(quick_status)})")
            pytest.fail(f"notebook {name} recorded no metrics; status={st.get('status')} error={st.get('error')}")

        def __getitem__(self, name):
            st = quick_status.get(name)
            if st is not None and st.get("status") != "ok":
                pytest.fail(f"notebook {name} failed in the quick run: {st.get('error')}")
            return super().__getitem__(name)

    return _Metrics(metrics)


def pytest_collection_modifyitems(config, items):
    """Tests that need the quick notebook run are 'slow' (deselect with -m 'not slow')."""
    for item in items:
        if {"quick_run", "quick_run_dir", "quick_status"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
