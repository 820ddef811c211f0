"""Batch-execute the notebooks with papermill: the project's main job (``wsss run``).

For each ``notebooks/NN_*.ipynb`` in order: execute it with papermill (parameters ``quick``,
``seed``, ``device``, ``output_dir`` + any ``-p KEY VALUE``), write the executed copy to
``<out>/notebooks/``, an HTML rendering to ``<out>/html/``, and record its status in
``<out>/status.json`` as soon as it finishes (a later failure never erases earlier results).
At the end ``<out>/results.json`` and ``<out>/results.md`` merge every notebook's metrics
(``<out>/metrics/*.json``, written by the notebooks themselves) with the run status.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from tqdm.auto import tqdm

from .core.io import atomic_write_bytes
from .core.errors import InvalidInputError, WsssError
from .core.results import load_metrics, results_markdown

NOTEBOOK_RE = re.compile(r"^\d\d_.+\.ipynb$")


def repo_notebooks_dir() -> Path:
    """``<checkout>/notebooks`` next to the installed package (editable installs / clones)."""
    return Path(__file__).resolve().parents[1] / "notebooks"


def discover_notebooks(nb_dir: str | os.PathLike, only: list[str] | None = None) -> list[Path]:
    """Notebooks named ``NN_name.ipynb`` in ``nb_dir``, sorted; ``only`` filters by name or prefix."""
    nb_dir = Path(nb_dir)
    if not nb_dir.is_dir():
        raise WsssError(f"notebook folder not found: {nb_dir} (expected the repository's notebooks/ folder; use --notebooks)")
    nbs = sorted(p for p in nb_dir.iterdir() if NOTEBOOK_RE.match(p.name))
    if only:
        keep = []
        for p in nbs:
            if any(p.stem == o or p.name == o or p.stem.startswith(o) for o in only):
                keep.append(p)
        if not keep:
            raise WsssError(f"--only {only} matches no notebook; available: {[p.stem for p in nbs]}")
        nbs = keep
    return nbs


def parse_value(text: str) -> Any:
    """``-p KEY VALUE`` value: a Python/JSON literal when it parses (1, 0.5, True, None), else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


@dataclass
class NotebookResult:
    name: str
    status: str  # "ok" | "failed"
    seconds: float
    output: str
    error: str | None = None
    attempts: int = 1
    max_reply_lag: float | None = None  # s: the slowest cell's reply noticed late (nbexec.reply_lags)

    def to_json(self) -> dict:
        return {"status": self.status, "seconds": round(self.seconds, 2), "output": self.output, "error": self.error,
                "attempts": self.attempts, "max_reply_lag": self.max_reply_lag}


# Per-cell limits when the caller gives none: a backstop for a cell that really computes for too
# long. A lost wake-up of the client (the old widget-cell hang) no longer waits for them: the ``wsss``
# engine (:mod:`wsss_lib.nbexec`) recovers a waiting reply within a quarter second and fails a cell
# whose kernel has been idle for seconds without a reply (then the notebook is run again).
CELL_TIMEOUT = {"quick": 300, "default": 4 * 3600}


def _is_timeout(exc: BaseException) -> bool:
    """A cell timeout (nbclient's CellTimeoutError is a TimeoutError), possibly wrapped."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _describe_failure(exc: BaseException) -> str:
    """One line: which cell failed and with what (papermill's PapermillExecutionError has them)."""
    cell = getattr(exc, "exec_count", None) or getattr(exc, "cell_index", None)
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"cell {cell}: {ename}: {evalue}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _write_html(executed: Path, html_dir: Path) -> None:
    from nbconvert import HTMLExporter  # lazy: notebook tooling, only when notebooks are executed
    import nbformat  # lazy: notebook tooling, only when notebooks are executed

    nb = nbformat.read(executed, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    html_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(html_dir / (executed.stem + ".html"), body.encode("utf-8"))


def run_notebooks(out_dir: str | os.PathLike, *, notebooks_dir: str | os.PathLike | None = None, quick: bool = False,
                  only: list[str] | None = None, params: dict | None = None, device: str = "auto", seed: int = 0,
                  keep_going: bool = False, html: bool = True, kernel: str = "python3",
                  timeout: int | None = None, retries: int = 1, engine: str = "wsss") -> dict[str, NotebookResult]:
    """Execute notebooks in order; returns ``{name: NotebookResult}`` (also written to disk).

    ``timeout``: per-cell limit in seconds (``None``: :data:`CELL_TIMEOUT` of the mode; 0: none).
    ``retries``: a notebook whose cell timed out is run again in a fresh kernel up to this many
    times (finished work is reused from the checkpoints); other failures are never retried.
    ``engine``: the papermill engine; ``"wsss"`` (:mod:`wsss_lib.nbexec`) is papermill's nbclient
    engine made robust to lost wake-ups; ``"nbclient"`` is papermill's own (for comparisons).

    Raises :class:`WsssError` for an unwritable output folder or one that is the notebooks folder.
    """
    import papermill as pm  # lazy: notebook tooling, only when notebooks are executed

    from . import nbexec  # lazy: papermill/nbclient, only when notebooks are executed; registers the "wsss" engine

    nb_dir = Path(notebooks_dir) if notebooks_dir else repo_notebooks_dir()
    nbs = discover_notebooks(nb_dir, only)
    out = Path(out_dir).resolve()
    if out == nb_dir.resolve():
        raise InvalidInputError("the output folder must differ from the notebooks folder (outputs never overwrite inputs)")
    try:
        (out / "notebooks").mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise WsssError(f"output folder {out} is not writable: {exc.strerror or exc}") from exc

    cell_timeout = CELL_TIMEOUT["quick" if quick else "default"] if timeout is None else (int(timeout) or None)
    base_params = {"quick": bool(quick), "seed": int(seed), "device": device, "output_dir": str(out)}
    base_params.update(params or {})
    status_path = out / "status.json"
    status: dict[str, dict] = {}
    if status_path.is_file():  # keep earlier notebooks' status when re-running a subset
        try:
            status = json.loads(status_path.read_text())
        except json.JSONDecodeError:
            status = {}
    results: dict[str, NotebookResult] = {}
    bar = tqdm(nbs, desc="notebooks", unit="nb", file=sys.stderr)
    for nb in bar:
        bar.set_postfix_str(nb.stem)
        target = out / "notebooks" / nb.name
        t0 = time.time()
        for attempt in range(1, max(0, int(retries)) + 2):
            try:
                pm.execute_notebook(str(nb), str(target), parameters=dict(base_params), cwd=str(nb_dir),
                                    kernel_name=kernel, progress_bar=False, log_output=False,
                                    execution_timeout=cell_timeout, engine_name=engine)
                res = NotebookResult(nb.stem, "ok", time.time() - t0, str(target), attempts=attempt)
                break
            except Exception as exc:  # papermill raises its own error types; report and maybe go on
                err = _describe_failure(exc)
                res = NotebookResult(nb.stem, "failed", time.time() - t0, str(target), err, attempts=attempt)
                if not (_is_timeout(exc) and attempt <= retries):
                    break
                print(f"[wsss] {nb.stem}: a cell timed out ({err}); "
                      f"running the notebook again in a fresh kernel", file=sys.stderr)
        if target.is_file():
            res.max_reply_lag = round(max((lag for _, lag in nbexec.reply_lags(target)), default=0.0), 3)
        if html and target.is_file():
            try:
                _write_html(target, out / "html")
            except Exception as exc:  # HTML is a convenience: never fail the run over it
                print(f"[wsss] HTML export of {nb.name} failed: {exc}", file=sys.stderr)
        results[nb.stem] = res
        status[nb.stem] = res.to_json()
        atomic_write_bytes(status_path, json.dumps(status, indent=2, sort_keys=True).encode())
        msg = f"[wsss] {nb.stem}: {res.status} in {res.seconds:.1f} s"
        print(msg + (f" — {res.error}" if res.error else ""), file=sys.stderr)
        if res.status != "ok" and not keep_going:
            break
    write_results(out, status)
    return results


def write_results(out: Path, status: dict[str, dict]) -> tuple[Path, Path]:
    """Merge metrics + status into ``results.json`` and ``results.md``; write the ``index.html`` gallery."""
    metrics = load_metrics(out)
    combined = {"status": status, "metrics": metrics}
    pj = atomic_write_bytes(out / "results.json", json.dumps(combined, indent=2, sort_keys=True).encode())
    pm_ = atomic_write_bytes(out / "results.md", results_markdown(metrics, status).encode())
    write_index(out, status)
    return pj, pm_


def write_index(out: Path, status: dict[str, dict]) -> Path:
    """``<out>/index.html``: one section per notebook (status, time, links to its executed copy and
    HTML rendering, thumbnails of its figures), plus links to ``results.md`` / ``results.json``.
    Paths are relative, so the folder can be moved or served as it is."""
    from html import escape  # lazy: only the gallery needs it

    parts = ["<!doctype html><meta charset='utf-8'><title>wsss run</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:auto}img{max-height:12em;margin:.2em;"
             "border:1px solid #ccc}.failed{color:#b00}</style>",
             "<h1>wsss run</h1><p><a href='results.md'>results.md</a> · <a href='results.json'>results.json</a></p>"]
    for nb in sorted(status):
        st = status[nb]
        links = [f"<a href='{escape(rel)}'>{label}</a>" for rel, label in
                 ((f"html/{nb}.html", "HTML"), (f"notebooks/{nb}.ipynb", "executed notebook"))
                 if (out / rel).is_file()]
        figs = sorted((out / "figures").glob(f"{nb}_*.png")) if (out / "figures").is_dir() else []
        parts.append(f"<h2>{escape(nb)}</h2><p class='{escape(str(st.get('status')))}'>"
                     f"{escape(str(st.get('status')))}, {st.get('seconds', 0):.0f} s"
                     + (f" — {escape(str(st['error']))}" if st.get("error") else "") + "</p>"
                     + "<p>" + " · ".join(links) + "</p>"
                     + "".join(f"<a href='figures/{escape(f.name)}'><img src='figures/{escape(f.name)}' "
                               f"alt='{escape(f.stem)}' title='{escape(f.stem)}'></a>" for f in figs))
    return atomic_write_bytes(out / "index.html", "\n".join(parts).encode("utf-8"))
