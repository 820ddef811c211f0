"""Seed studies: run a paper's compared models for several seeds, then report paired differences.

Shared by both papers (``wsss study paper1 | paper2``)::

    <out>/seed_<s>/                 the seed's run folder (checkpoints, caches: resumable)
    <out>/seed_<s>/scores.pt        per-image confusion matrices of every scored method (test split)
    <out>/study.json / study.md     the table: each comparison's mean over seeds and its 95 % interval

A seed's ``scores.pt`` is written once the seed is finished, so an interrupted study resumes at the
first unfinished seed (and inside it, at the first unfinished step: every step is a cached
load-or-train). Intervals: :func:`~wsss_lib.core.stats.paired_difference` (seeds and test images
resampled independently).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import torch

from ..core.checkpoint import load_checkpoint, save_checkpoint
from ..core.config import PRESETS, preset
from ..core.errors import CheckpointError, InvalidInputError
from ..core.io import atomic_write_bytes, to_jsonable
from ..core.results import default_output_dir
from ..core.stats import bootstrap_ci, mean_ci, paired_difference
from .common import make_context, profile


def default_study_dir(paper: str, quick: bool = False) -> Path:
    """``runs/study_<paper>[_quick]`` beside the default output folder (where ``wsss study`` writes
    and notebooks look for a study's table)."""
    return default_output_dir().parent / f"study_{paper}{'_quick' if quick else ''}"


def read_study_table(paper: str, stem: str = "study", folder=None) -> str | None:
    """The Markdown table of a finished study (``<folder>/<stem>.md``, default folder
    :func:`default_study_dir`), or None when it has not been run."""
    path = Path(folder or default_study_dir(paper)) / f"{stem}.md"
    return path.read_text() if path.is_file() else None


@dataclass(frozen=True)
class ItemMean:
    """One row of a study's table of per-item quantities that are not confusion matrices: the mean
    over seeds of the NaN-mean over items of ``meta[key]`` (per seed an ``(N,)`` or ``(N, K)`` array;
    ``column`` picks one column of the latter; a scalar is one item), e.g. a class's heatmap AUC per
    VAL image. ``target``: the mean must reach it. Intervals: seeds and items resampled
    (:func:`~wsss_lib.core.stats.bootstrap_ci`)."""

    label: str
    key: str
    column: int | None = None
    target: float | None = None


@dataclass(frozen=True)
class Comparison:
    """One row of a study table: method ``a`` against method ``b`` (names of scored methods).

    ``kind``: "diff" (A - B, mIoU points) or "ratio" (A / B); ``classes``: the classes averaged
    (None = all, e.g. ``[1]`` = the foreground of a fg/bg mask); ``target``: the issue's target on the
    mean (None = none); ``need_ci_above``: the interval's low end must exceed this (None = no
    requirement)."""

    name: str
    a: str
    b: str
    kind: str = "diff"
    classes: tuple[int, ...] | None = None
    target: float | None = None
    need_ci_above: float | None = None


def run_seeds(out, seeds: Sequence[int], run_seed: Callable[[int, Path], dict], progress: bool = True,
              filename: str = "scores.pt", requires: Sequence[str] = (), fingerprint: str | None = None) -> dict:
    """``{seed: scores}`` for every seed: read ``<out>/seed_<s>/<filename>`` when present, else call
    ``run_seed(seed, folder)`` (-> ``{"conf": {method: int64 (N, C, C)}, "meta": {...}}``) and store it.
    Several studies may share the seed folders (and so their trained models) under other filenames.
    Stored scores are rescored when they lack a method of ``requires`` (e.g. a seed first run with fewer
    kinds) or were made under another ``fingerprint`` (the settings they depend on, e.g. a VAL choice
    applied to the presets since; stored as ``meta["fingerprint"]``): the seed's trained models are
    cached by config, so only what is missing or changed trains."""
    results = {}
    for s in seeds:
        folder = Path(out) / f"seed_{int(s)}"
        path = folder / filename
        res = None
        if path.is_file():
            try:
                res = load_checkpoint(path)
            except CheckpointError as exc:
                print(f"[wsss] recomputing seed {s}: {exc}")
        if res is not None and not set(requires) <= set(res["conf"]):
            print(f"[wsss] rescoring seed {s}: its scores lack {sorted(set(requires) - set(res['conf']))}")
            res = None
        if res is not None and fingerprint is not None and res.get("meta", {}).get("fingerprint") != fingerprint:
            print(f"[wsss] rescoring seed {s}: its scores were made with other settings")
            res = None
        if res is None:
            t0 = time.time()
            if progress:
                print(f"[wsss] study: seed {s} -> {folder}", flush=True)
            res = run_seed(int(s), folder)
            res["meta"] = {**res.get("meta", {}), "seconds": time.time() - t0,
                           **({"fingerprint": fingerprint} if fingerprint is not None else {})}
            res["conf"] = {k: torch.as_tensor(np.asarray(v)) for k, v in res["conf"].items()}
            save_checkpoint(res, path)
        results[int(s)] = res
    return results


def settings_fingerprint(sections: Sequence[str], quick: bool = False, dataset: str = "toy_objects") -> str:
    """The presets of ``sections`` (and of a generated ``dataset``) a study's scores depend on, for ``quick``
    and the profile ``dataset`` runs under (:func:`~wsss_lib.papers.common.profile`), as a canonical JSON
    string: scores stored under another one are stale."""
    prof = profile(SimpleNamespace(preset="auto", dataset=dataset))
    names = [*sections, *([dataset] if dataset in PRESETS else [])]
    return json.dumps(to_jsonable({"quick": bool(quick), "dataset": dataset,
                                   "presets": {s: preset(s, quick, prof) for s in names}}), sort_keys=True)


def run_study(out, seeds: Sequence[int], score_seed: Callable, rows: Callable[[dict], tuple[list, list]], title: str, *,
              quick: bool = False, device="auto", data_root=None, dataset: str = "toy_objects", progress: bool = True,
              n_resamples: int = 2000, filename: str = "scores.pt", stem: str = "study", requires: Sequence[str] = (),
              sections: Sequence[str] = ()) -> dict:
    """A whole seed study: for every seed a run context on ``<out>/seed_<s>`` (:func:`make_context`),
    ``score_seed(ctx)`` (-> ``{"conf", "meta"}``, resumable through :func:`run_seeds`, which rescores a seed
    whose stored scores lack a method of ``requires`` or were made with other presets in ``sections``,
    :func:`settings_fingerprint`), then the table of
    ``rows(results)`` (-> ``(comparisons, mean rows[, item rows])``) written to ``<out>/<stem>.{json,md}``
    (the summary records its ``stem``)."""
    t0 = time.time()
    fingerprint = settings_fingerprint(sections, quick, dataset) if sections else None

    def one(seed: int, folder: Path) -> dict:
        return score_seed(make_context(data_root, folder, device, quick, seed, dataset, name="study"))

    results = run_seeds(out, seeds, one, progress=progress, filename=filename, requires=requires,
                        fingerprint=fingerprint)
    comparisons, means, *items = rows(results)
    summary = summarise(results, comparisons, means, items[0] if items else (), n_resamples=n_resamples)
    summary.update(wall_seconds=time.time() - t0, quick=bool(quick), dataset=dataset, stem=stem)
    write_study(out, summary, title + (" (quick sizes)" if quick else ""), stem)
    return summary


def stack(results: dict, method: str) -> np.ndarray:
    """Per-seed, per-image confusion matrices ``(S, N, C, C)`` of ``method`` (seeds in sorted order)."""
    missing = [s for s in results if method not in results[s]["conf"]]
    if missing:
        raise InvalidInputError(f"method {method!r} was not scored for seed(s) {missing}")
    return np.stack([np.asarray(results[s]["conf"][method]) for s in sorted(results)])


def item_values(results: dict, row: ItemMean) -> np.ndarray:
    """``(S, N)`` values of an :class:`ItemMean` row (seeds in sorted order; a scalar is one item)."""
    vals = []
    for s in sorted(results):
        meta = results[s]["meta"]
        if row.key not in meta:
            raise InvalidInputError(f"{row.key!r} was not recorded for seed {s} (delete its scores file to rescore it)")
        v = np.atleast_1d(np.asarray(meta[row.key], dtype=np.float64))
        vals.append(v[:, row.column] if row.column is not None else v.reshape(len(v), -1)[:, 0])
    if len({len(v) for v in vals}) != 1:
        raise InvalidInputError(f"{row.key!r} has different item counts across seeds: {[len(v) for v in vals]}")
    return np.stack(vals)


def item_mean(values: np.ndarray, **kw) -> dict:
    """Mean over seeds of the NaN-mean over items of ``values`` ``(S, N)``, with its bootstrap interval
    (seeds and items resampled; items that are NaN for every seed are dropped first)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[:, ~np.isnan(v).all(0)]
    if v.size == 0:
        return {"value": float("nan"), "low": float("nan"), "high": float("nan"), "per_seed": [], "n_items": 0}

    def statistic(si, ii):
        with np.errstate(all="ignore"):
            return float(np.nanmean(np.nanmean(v[np.ix_(si, ii)], axis=1)))

    out = bootstrap_ci(statistic, v.shape, **kw)
    out.update(per_seed=[float(x) for x in np.nanmean(v, axis=1)], n_items=int(v.shape[1]))
    return out


def summarise(results: dict, comparisons: Sequence[Comparison], methods: Sequence[tuple] = (),
              items: Sequence[ItemMean] = (), **kw) -> dict:
    """The study table. ``methods``: ``(label, method, classes)`` rows of plain means, or
    ``(label, method, classes, target)``: the mean must reach ``target`` (``met``); ``items``:
    :class:`ItemMean` rows of recorded per-item quantities; ``kw`` goes to
    :func:`~wsss_lib.core.stats.bootstrap_ci` (``n_resamples``, ``confidence``, ``seed``)."""
    rows = []
    for c in comparisons:
        r = paired_difference(stack(results, c.a), stack(results, c.b), c.classes, c.kind, **kw)
        met = None
        if c.target is not None:
            met = r["value"] >= c.target and (c.need_ci_above is None or r["low"] > c.need_ci_above)
        a_value, b_value = r.pop("a"), r.pop("b")  # mean mIoU of each; "a"/"b" stay the method names
        rows.append({**asdict(c), **r, "a_value": a_value, "b_value": b_value, "met": met})
    means = []
    for row in methods:
        label, method, classes = row[:3]
        target = row[3] if len(row) > 3 else None
        r = mean_ci(stack(results, method), classes, **kw)
        means.append({"label": label, "method": method, "classes": classes, **r, "target": target,
                      "met": None if target is None else bool(r["value"] >= target)})
    quantities = []
    for row in items:
        r = item_mean(item_values(results, row), **kw)
        quantities.append({**asdict(row), **r,
                           "met": None if row.target is None else bool(r["value"] >= row.target)})
    seeds = sorted(results)
    return {"seeds": seeds, "n_images": int(stack(results, comparisons[0].a).shape[1]) if comparisons else None,
            "comparisons": rows, "means": means, "items": quantities,
            "seconds_per_seed": {s: results[s]["meta"].get("seconds") for s in seeds},
            "meta": {s: results[s]["meta"] for s in seeds}}


def _pts(v: float, kind: str) -> str:
    return f"{100 * v:+.1f}" if kind == "diff" else f"{100 * v:.0f} %"


def markdown(summary: dict, title: str) -> str:
    """The study table as Markdown (differences in mIoU points, ratios in %)."""
    conf = summary["comparisons"][0]["confidence"] if summary["comparisons"] else 0.95
    lines = [f"## {title}", "",
             f"{len(summary['seeds'])} seeds ({', '.join(map(str, summary['seeds']))}), "
             f"{summary['n_images']} images per seed (TEST unless a row says VAL); {100 * conf:.0f} % intervals from a bootstrap over seeds and "
             f"images (scipy.stats.bootstrap, percentile).", "",
             "| comparison | A | B | A - B (or A / B) | 95 % CI | per seed | target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["comparisons"]:
        tgt = "" if r["target"] is None else (_pts(r["target"], r["kind"]) +
                                             ("" if r["need_ci_above"] is None else ", CI > " +
                                              _pts(r["need_ci_above"], r["kind"])))
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['name']} | {r['a']} {100 * r['a_value']:.1f} | {r['b']} {100 * r['b_value']:.1f} | "
                     f"{_pts(r['value'], r['kind'])} | [{_pts(r['low'], r['kind'])}, {_pts(r['high'], r['kind'])}] | "
                     f"{' '.join(_pts(v, r['kind']) for v in r['per_seed'])} | {tgt} | {met} |")
    if summary["means"]:
        targets = any(m.get("target") is not None for m in summary["means"])
        lines += ["", "| method | mean mIoU | 95 % CI | per seed |" + (" target | met |" if targets else ""),
                  "|---|---|---|---|" + ("---|---|" if targets else "")]
        for m in summary["means"]:
            row = (f"| {m['label']} | {100 * m['value']:.1f} | [{100 * m['low']:.1f}, {100 * m['high']:.1f}] | "
                   f"{' '.join(f'{100 * v:.1f}' for v in m['per_seed'])} |")
            if targets:
                tgt = m.get("target")
                row += ("  |  |" if tgt is None else
                        f" {100 * tgt:.1f} | {'yes' if m['met'] else '**no**'} |")
            lines.append(row)
    if summary.get("items"):
        lines += ["", "| quantity | mean | 95 % CI | per seed | items | target | met |", "|---|---|---|---|---|---|---|"]
        for q in summary["items"]:
            tgt = "" if q["target"] is None else f"{q['target']:.2f}"
            met = "" if q["met"] is None else ("yes" if q["met"] else "**no**")
            lines.append(f"| {q['label']} | {q['value']:.3f} | [{q['low']:.3f}, {q['high']:.3f}] | "
                         f"{' '.join(f'{v:.3f}' for v in q['per_seed'])} | {q['n_items']} | {tgt} | {met} |")
    secs = {s: v for s, v in summary["seconds_per_seed"].items() if v}
    if secs:  # per seed, not a mean: a seed resumed from its checkpoints, or paused, is not a from-scratch time
        lines += ["", "Wall time of each seed's last run, min (a seed resumed from its checkpoints shows only what was "
                      "left; a paused one includes the pause): "
                  + ", ".join(f"seed {s}: {v / 60:.1f}" for s, v in secs.items()) + "."]
    return "\n".join(lines) + "\n"


def write_study(out, summary: dict, title: str, stem: str = "study") -> tuple[Path, Path]:
    """Write ``<out>/<stem>.json`` and ``<out>/<stem>.md`` atomically; returns both paths."""
    out = Path(out)
    js = atomic_write_bytes(out / f"{stem}.json", json.dumps(to_jsonable(summary), indent=2, sort_keys=True).encode())
    md = atomic_write_bytes(out / f"{stem}.md", markdown(summary, title).encode())
    return js, md
