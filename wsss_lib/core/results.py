"""How notebooks report metrics to ``wsss run`` (and to CI).

A notebook calls :func:`record` with a flat-ish dict of numbers; it lands in
``<output_dir>/metrics/<notebook>.json``. The runner merges those files into ``results.json``
and ``results.md``; tests read them back and assert on the values (never on "it ran").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .io import atomic_write_bytes, to_jsonable


def default_output_dir() -> Path:
    """Where runs go when no folder is given, whatever the working directory: env
    ``WSSS_OUTPUT_DIR``, else ``<checkout>/runs/latest`` when the library runs from a checkout (so a
    notebook opened in JupyterLab, whose kernel works in ``notebooks/``, reuses what ``wsss run``
    trained, and vice versa), else ``./runs/latest``."""
    env = os.environ.get("WSSS_OUTPUT_DIR")
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[2]  # wsss_lib/core/results.py -> the checkout
    if (checkout / "notebooks").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout / "runs" / "latest"
    return Path.cwd() / "runs" / "latest"


def output_dir(path: str | os.PathLike | None = None) -> Path:
    """The run's output folder (created): ``path``, else :func:`default_output_dir`."""
    p = Path(path) if path else default_output_dir()
    p.mkdir(parents=True, exist_ok=True)
    return p


def record(notebook: str, metrics: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``metrics`` for ``notebook`` (e.g. ``"02_fgbg_masks"``) atomically; returns the path.

    Calling it again for the same notebook merges the new keys into the existing file.
    """
    d = output_dir(out_dir) / "metrics"
    path = d / f"{notebook}.json"
    data = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data.update(to_jsonable(metrics))
    atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode())
    print(f"[wsss] recorded {len(metrics)} metric(s) for {notebook} -> {path}")
    return path


def load_metrics(out_dir: str | os.PathLike) -> dict[str, dict]:
    """All recorded metrics of a run: ``{notebook: {...}}``."""
    d = Path(out_dir) / "metrics"
    out = {}
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            out[p.stem] = json.loads(p.read_text())
        except json.JSONDecodeError:
            out[p.stem] = {"error": f"unreadable metrics file {p.name}"}
    return out


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def results_markdown(results: dict[str, dict], status: dict[str, dict] | None = None) -> str:
    """A markdown table per notebook: metric | value (status line first when given)."""
    lines = ["# Results", ""]
    for nb in sorted(set(results) | set(status or {})):
        lines.append(f"## {nb}")
        if status and nb in status:
            st = status[nb]
            lines.append(f"status: **{st.get('status')}**, {st.get('seconds', 0):.1f} s"
                         + (f", {st['attempts']} attempts" if st.get("attempts", 1) > 1 else "")
                         + (f", slowest reply noticed after {st['max_reply_lag']:.2f} s"
                            if st.get("max_reply_lag") is not None else "")
                         + (f" — {st['error']}" if st.get("error") else ""))
        lines += ["", "| metric | value |", "| --- | --- |"]
        for k, v in _flatten(results.get(nb, {})).items():
            if isinstance(v, float):
                v = f"{v:.4f}"
            elif isinstance(v, list):
                v = ", ".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in v[:12])
            lines.append(f"| {k} | {v} |")
        lines.append("")
    return "\n".join(lines)
