"""Paper 2's seed study and its VAL choices (``wsss study paper2``).

Per seed (its own run folder, every step cached by :mod:`~wsss_lib.papers.paper2`), on TEST, the
per-image confusion matrices ``(N, C, C)`` of every compared video model (dataset classes):

* ``video/<kind>`` for every kind of :data:`STUDY_KINDS`: ``appearance`` (heatmap supervision, RGB),
  ``two_stream`` (+ optical flow), its motion controls ``two_stream_zero_flow`` /
  ``two_stream_shuffled_flow`` (the same network fed zero motion / another clip's flow, in training
  and evaluation: :func:`~wsss_lib.papers.video.flow_control`), ``single_bg`` (paper 1's single
  fg/bg mask from a foreground-tag classifier's conv4 + conv5; its background label named by the
  most frequent training background class, :func:`~wsss_lib.papers.video.single_bg_label_map`) and
  ``full`` (pixel labels: the upper bound);
* ``video/single_bg_oracle``: single_bg's prediction with its background pixels given their true
  background class (:func:`~wsss_lib.papers.video.oracle_bg_prediction`): the ceiling of any way of
  naming a single background label, reported beside the heatmap gain.

:data:`COMPARISONS` holds the issue's targets (classes: ToyStreets' moving / background /
foreground indices; :func:`paper2_comparisons` builds them for any dataset). The "full foreground
mIoU >= 0.5" target is a mean row with a target (:func:`paper2_means`), not a comparison. The targets
that are not segmentation scores (every class's per-image heatmap AUC on VAL >= 0.75, heatmap regions'
train mIoU >= 0.45) are :class:`~wsss_lib.papers.study.ItemMean` rows (:func:`paper2_items`), from the
seed's ``meta``.

:func:`choose_paper2` chooses each kind's training steps on VAL (seed 0) and writes
``<out>/choices.json``; the ``video_seg`` preset's ``kind_steps`` holds the chosen values.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np
import torch

from ..core.config import preset
from ..core.errors import InvalidInputError
from ..core.io import atomic_write_bytes, to_jsonable
from ..core.metrics import per_image_confusion
from ..data.toy_streets import toy_streets_info
from ..engine.predict import evaluate_classifier
from . import paper2 as P
from .common import chosen_point, climb_steps_grid, grid_tag
from .study import Comparison, ItemMean, run_study
from .video import (KINDS, base_kind, evaluate_predictions, motion_statistics, oracle_bg_prediction, predict_video,
                    uses_flow)

# every compared kind; the motion controls and the oracle ceiling exist for the study's claims
STUDY_KINDS = KINDS
# kinds whose steps are chosen on VAL (the controls train exactly like two_stream)
CHOOSE_KINDS = ("appearance", "two_stream", "single_bg", "full")
STEPS_GRID = (300, 600, 1200, 2400, 4800, 9600, 19200)
# flow settings compared on VAL [ours]: Farneback's OpenCV-like default (a 3-level pyramid sees ~8 px of
# motion), wider pyramids / windows for ToyStreets' camera pans of ~13 px per frame, and OpenCV DIS at its
# presets 0 / 1 / 2 (ultrafast / fast / medium)
_FB = "farneback"
FLOW_GRID = ({"method": _FB}, {"method": _FB, "levels": 5, "winsize": 15},
             {"method": _FB, "levels": 5, "winsize": 21, "poly_n": 7, "poly_sigma": 1.5},
             {"method": _FB, "levels": 4, "winsize": 31, "poly_n": 7, "poly_sigma": 1.5},
             {"method": "dis", "dis_preset": 0}, {"method": "dis", "dis_preset": 1}, {"method": "dis", "dis_preset": 2})


def flow_setting(ctx, entry: dict) -> dict:
    """A :data:`FLOW_GRID` entry as ``load_streets`` overrides ``{"method", "params"}``: its ``"method"``
    (default: the "flow" preset's) and the rest as :class:`~wsss_lib.ops.flow.FlowParams` overrides."""
    entry = dict(entry)
    return {"method": entry.pop("method", preset("flow", ctx.quick)["method"]), "params": entry}


def paper2_comparisons(info) -> list[Comparison]:
    """The issue's comparisons for a dataset's label space ``info`` (``moving``, ``background``,
    ``foreground``: class indices). Differences in mIoU points over the named classes."""
    mov, bg = tuple(info.moving), tuple(info.background)
    return [
        Comparison("two-stream - appearance, moving classes", "video/two_stream", "video/appearance", classes=mov,
                   target=0.05, need_ci_above=0.0),
        Comparison("two-stream - shuffled flow, moving classes", "video/two_stream", "video/two_stream_shuffled_flow",
                   classes=mov, target=0.03, need_ci_above=0.0),
        Comparison("two-stream - zero flow, moving classes", "video/two_stream", "video/two_stream_zero_flow",
                   classes=mov),
        Comparison("zero flow - appearance, moving classes (capacity alone)", "video/two_stream_zero_flow",
                   "video/appearance", classes=mov),
        Comparison("two-stream - appearance, all classes", "video/two_stream", "video/appearance"),
        Comparison("weak two-stream / full, all classes", "video/two_stream", "video/full", kind="ratio", target=0.60),
        Comparison("heatmaps (appearance) - single bg, background classes", "video/appearance", "video/single_bg",
                   classes=bg, target=0.10),
        Comparison("single-bg oracle ceiling - single bg, background classes", "video/single_bg_oracle",
                   "video/single_bg", classes=bg),
        Comparison("heatmaps (appearance) - single-bg oracle ceiling, background classes", "video/appearance",
                   "video/single_bg_oracle", classes=bg),
    ]


COMPARISONS = paper2_comparisons(toy_streets_info())


def paper2_means(info, kinds: Sequence[str] = STUDY_KINDS) -> list[tuple]:
    """Mean rows ``(label, method, classes[, target])``: every kind over all classes, the moving classes
    of the RGB/two-stream kinds, the background classes of the bg comparison, and the target row
    "full, foreground classes" >= 0.5."""
    mov, bg, fg = tuple(info.moving), tuple(info.background), tuple(info.foreground)
    rows = [(k, f"video/{k}", None) for k in kinds]
    if "single_bg" in kinds:
        rows.append(("single_bg oracle ceiling", "video/single_bg_oracle", None))
    rows += [(f"{k}, moving classes", f"video/{k}", mov) for k in kinds if base_kind(k) in ("appearance", "two_stream")]
    rows += [(f"{k}, background classes", f"video/{k}", bg) for k in kinds if k in ("appearance", "single_bg", "full")]
    if "single_bg" in kinds:
        rows.append(("single_bg oracle ceiling, background classes", "video/single_bg_oracle", bg))
    if "full" in kinds:
        rows.append(("full, foreground classes", "video/full", fg, 0.5))
    return rows


def _method_kind(method: str) -> str:
    name = method.split("/", 1)[1]
    return name[: -len("_oracle")] if name.endswith("_oracle") else name


def _label_space(info) -> dict:
    return {"classes": list(info.classes), "background": list(info.background),
            "foreground": list(info.foreground), "moving": list(info.moving)}


def run_paper2_seed(ctx, kinds: Sequence[str] = STUDY_KINDS, progress: bool = False) -> dict:
    """Score every compared video model of paper 2 for the seed of ``ctx`` on TEST (choices on VAL).

    Returns ``{"conf": {"video/<kind>": (N, C, C), "video/single_bg_oracle": (N, C, C)}, "meta": {...}}``
    (``meta``: the label space, the classifiers' tag mAP, the supervision's quality, and per kind its
    steps, training time and test mIoU / bg / fg / moving)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise InvalidInputError(f"unknown video model kind(s) {bad}; use {', '.join(KINDS)}")
    streets = P.load_streets(ctx, progress=progress)
    exp = P.run_video_experiment(ctx, kinds, progress=progress, streets=streets, evaluate=False)
    info = streets["info"]
    labels = streets["data"]["test"].labels.long()
    C = info.num_classes
    cfg = preset("video_seg", ctx.quick)
    meta = {"label_space": _label_space(info), "n_test": int(labels.shape[0]),
            "classifier": {k: exp["classifier_info"][k] for k in ("map", "acc")}, "kinds": {},
            "full_loss": cfg["full_loss"]}
    if "regions" in exp:
        meta["regions"] = {k: exp["regions"]["scores"][k] for k in ("miou", "bg_miou", "fg_miou", "coverage")}
        meta["regions_train_miou"] = float(exp["regions"]["scores"]["miou"])
    # do the heatmaps show location, not co-occurrence? per VAL image and class (NaN: class absent)
    meta["heatmap_auc_val"] = torch.from_numpy(P.heatmap_localisation(ctx, exp["classifier"], streets, "val"))
    if any(uses_flow(k) for k in kinds):  # what the motion stream sees on TEST (the flow has no seed)
        meta["motion_auc_test"] = motion_statistics(streets["data"]["test"], info)["moving_auc"]
    if "fgbg" in exp:
        meta["fg_classifier"] = {k: exp["fg_classifier_info"][k] for k in ("map", "acc", "last_stage")}
        meta["fgbg"] = {"threshold": exp["fgbg"]["threshold"], "mask_iou": exp["fgbg"]["mask_scores"]["iou"],
                        "label_map": exp["fgbg"]["label_map"].tolist()}
    if "full" in kinds:
        w = P.full_class_weights(cfg, streets)
        meta["full_class_weights"] = None if w is None else [float(v) for v in w]
    conf = {}
    for kind, model in exp["models"].items():
        ds = P.split_data(ctx, streets, "test", kind)
        lm = exp["fgbg"]["label_map"] if kind == "single_bg" else None
        pred = predict_video(model, ds, device=ctx.device, label_map=lm)
        conf[f"video/{kind}"] = per_image_confusion(labels, pred, C, info.ignore_index)
        if kind == "single_bg":
            conf["video/single_bg_oracle"] = per_image_confusion(labels, oracle_bg_prediction(pred, labels, info, lm),
                                                                 C, info.ignore_index)
        ev = evaluate_predictions(pred, labels, info)
        meta["kinds"][kind] = {**exp["histories"][kind],
                               **{k: ev[k] for k in ("miou", "bg_miou", "fg_miou", "moving_miou")}}
    return {"conf": conf, "meta": meta}


def paper2_study(out, seeds: Sequence[int] = (0, 1, 2, 3, 4), quick: bool = False, device="auto", data_root=None,
                 dataset: str = "toy_streets", kinds: Sequence[str] = STUDY_KINDS, progress: bool = True,
                 n_resamples: int = 2000) -> dict:
    """Run :func:`run_paper2_seed` for every seed (resumable) and write ``<out>/study.{json,md}``."""
    def rows(results):
        space = SimpleNamespace(**results[min(results)]["meta"]["label_space"])
        have = set(kinds)
        comps = [c for c in paper2_comparisons(space) if all(_method_kind(m) in have for m in (c.a, c.b))]
        return comps, paper2_means(space, kinds), paper2_items(space, kinds)

    return run_study(out, seeds, lambda ctx: run_paper2_seed(ctx, kinds, progress=progress), rows,
                     "Paper 2 on " + dataset, quick=quick, device=device, data_root=data_root, dataset=dataset,
                     progress=progress, n_resamples=n_resamples, requires=[f"video/{k}" for k in kinds],
                     sections=("streets_classifier", "streets_fg_classifier", "heatmaps", "flow", "crf", "video_seg"))


def paper2_items(info, kinds: Sequence[str] = STUDY_KINDS) -> list[ItemMean]:
    """The issue's targets that are not segmentation scores: every class's per-image heatmap AUC on VAL
    >= 0.75 (background classes included), the heatmap regions' train mIoU >= 0.45; and, without a
    target, the flow magnitude's AUROC for moving-class pixels on TEST."""
    bases = {base_kind(k) for k in kinds}
    rows = [ItemMean(f"heatmap AUC on VAL images, {name}", "heatmap_auc_val", column=c, target=0.75)
            for c, name in enumerate(info.classes)]
    if bases & {"appearance", "two_stream"}:
        rows.append(ItemMean("heatmap regions, train mIoU", "regions_train_miou", target=0.45))
    if "two_stream" in bases:
        rows.append(ItemMean("flow magnitude AUROC of moving-class pixels, TEST (same flow every seed)",
                             "motion_auc_test"))
    return rows


# ----------------------------------------------------------------------------- choices on VAL

def choose_flow(ctx, grid: Sequence[dict] | None = None, progress: bool = True) -> dict:
    """The flow method and setting (``grid`` of :class:`~wsss_lib.ops.flow.FlowParams` overrides, each
    with an optional ``"method"``, see :func:`flow_setting`; default :data:`FLOW_GRID`) whose motion
    image best detects moving-class pixels on VAL: the AUROC of its magnitude
    (:func:`~wsss_lib.papers.video.motion_statistics`; no training, so no seed).
    Returns ``{"grid": [{"params", "val_moving_auc", "moving_mean", "static_mean"}], "best": params}``."""
    grid = FLOW_GRID if grid is None else grid
    rows = []
    for params in grid:
        streets = P.load_streets(ctx, splits=("val",), progress=progress, **flow_setting(ctx, params))
        st = motion_statistics(streets["data"]["val"], streets["info"])
        rows.append({"params": dict(params), "val_moving_auc": st["moving_auc"], "moving_mean": st["moving_mean"],
                     "static_mean": st["static_mean"]})
    return {"grid": rows, "best": max(rows, key=lambda r: r["val_moving_auc"])["params"]}


def choose_classifier(ctx, streets: dict, steps_grid: Sequence[int] | None = None, tolerance: float = 0.005,
                      progress: bool = True) -> dict:
    """The heatmap classifier's training steps on VAL: ``steps_grid`` (checkpoint
    ``streets_classifier_steps<n>``) climbed while the VAL mIoU of its heatmap regions (what the weak
    video models train from, :func:`~wsss_lib.papers.paper2.get_regions` with the ``heatmaps`` preset)
    rises; the fewest steps within ``tolerance`` of the best. Also recorded per point: tag mAP and the
    per-class heatmap AUC (mean over VAL images). Returns ``{"grid": [...], "chosen": n, "tolerance"}``."""
    steps_grid = STEPS_GRID if steps_grid is None else steps_grid
    names = list(streets["info"].classes)
    rows = []

    preset_steps = P._preset(ctx, "streets_classifier")["steps"]

    def score(n, _):
        clf, info = P.get_classifier(ctx, streets, progress=progress, steps=n,
                                     tag=grid_tag("streets_classifier", n, preset_steps))
        ev = evaluate_classifier(clf, streets["data"]["val"], device=ctx.device)
        auc = P.heatmap_localisation(ctx, clf, streets, "val")  # (N, C), NaN where a class is absent
        present = (~np.isnan(auc)).sum(0)
        auc = [float(np.nansum(auc[:, c]) / present[c]) if present[c] else None for c in range(auc.shape[1])]
        reg = P.get_regions(ctx, clf, streets, "val", progress=progress)["scores"]
        rows.append({"steps": n, "val_regions_miou": reg["miou"], "val_map": ev["map"],
                     "val_heatmap_auc": dict(zip(names, auc)), "train_loss": info["loss"],
                     "seconds": info["seconds"]})
        return reg["miou"]

    chosen = chosen_point(climb_steps_grid(steps_grid, score, tolerance=tolerance), tolerance)[0]
    return {"grid": rows, "chosen": chosen, "tolerance": tolerance}


def choose_fg_classifier(ctx, streets: dict, steps_grid: Sequence[int] | None = None, tolerance: float = 0.005,
                         progress: bool = True) -> dict:
    """The single-bg baseline's foreground-tag classifier steps on VAL -- the same care as the heatmap
    classifier (:func:`choose_classifier`): ``steps_grid`` (checkpoint ``streets_fg_classifier[_steps<n>]``)
    climbed while the VAL IoU of its fg/bg masks (what single_bg trains from,
    :func:`~wsss_lib.papers.paper2.get_fgbg_masks`: conv4 + conv5, threshold on VAL, CRF) rises; the fewest
    steps within ``tolerance`` of the best. Returns ``{"grid": [{"steps", "val_mask_iou", "val_map",
    "seconds"}], "chosen": n, "tolerance"}``."""
    steps_grid = STEPS_GRID if steps_grid is None else steps_grid
    preset_steps = P.fg_classifier_config(ctx)["steps"]
    rows = []

    def score(n, _):
        clf, info = P.get_fg_classifier(ctx, streets, progress=progress, steps=n,
                                        tag=grid_tag("streets_fg_classifier", n, preset_steps))
        ev = evaluate_classifier(clf, streets["data"]["val"], classes=info["classes"], device=ctx.device)
        iou = P.get_fgbg_masks(ctx, clf, streets, split="val", progress=progress)["mask_scores"]["iou"]
        rows.append({"steps": n, "val_mask_iou": iou, "val_map": ev["map"], "seconds": info["seconds"]})
        return iou

    chosen = chosen_point(climb_steps_grid(steps_grid, score, tolerance=tolerance), tolerance)[0]
    return {"grid": rows, "chosen": chosen, "tolerance": tolerance}


def choose_paper2(ctx, kinds: Sequence[str] = CHOOSE_KINDS, steps_grid: Sequence[int] | None = None,
                  tolerance: float = 0.005, flow_grid: Sequence[dict] | None = None, progress: bool = True) -> dict:
    """The VAL choices of paper 2 (seed of ``ctx``), written to ``<out>/choices.json``:

    * ``flow``: the flow setting of :func:`choose_flow` (motion AUROC on VAL), used for what follows;
    * ``classifier``: the heatmap classifier's steps (:func:`choose_classifier`, VAL regions mIoU); the
      video models below train from the preset's classifier (``presets_agree.classifier_steps`` says
      whether the two agree);
    * ``fg_classifier`` (when ``single_bg`` is among ``kinds``): the single-bg baseline's classifier steps
      (:func:`choose_fg_classifier`, VAL fg/bg mask IoU; ``presets_agree.fg_classifier_steps``);
    * ``steps``: per kind, the fewest steps of ``steps_grid`` (each a full poly schedule, checkpoint
      ``video_<kind>_steps<n>``) whose VAL mIoU is within ``tolerance`` of the best -- where VAL mIoU
      stops improving; the grid is climbed only while VAL mIoU rises
      (:func:`~wsss_lib.papers.common.climb_steps_grid`). The motion controls are not chosen: they train
      like ``two_stream`` (:func:`~wsss_lib.papers.paper2.kind_steps`).
    """
    steps_grid = STEPS_GRID if steps_grid is None else steps_grid
    flow = choose_flow(ctx, flow_grid, progress=progress)
    streets = P.load_streets(ctx, progress=progress, **flow_setting(ctx, flow["best"]))
    classifier = choose_classifier(ctx, streets, steps_grid, tolerance, progress=progress)
    fg_classifier = (choose_fg_classifier(ctx, streets, steps_grid, tolerance, progress=progress)
                     if "single_bg" in kinds else None)
    sup = P.video_supervision(ctx, kinds, streets, progress=progress)
    rows, chosen = [], {}
    for kind in kinds:
        lm = sup["fgbg"]["label_map"] if kind == "single_bg" else None

        def score(n, _, kind=kind, lm=lm):
            tag = grid_tag(f"video_{kind}", n, P.kind_steps(P._preset(ctx, "video_seg"), kind))
            model, hist = P.train_kind(ctx, kind, streets, sup, progress=progress, tag=tag, steps=n)
            ev = P.evaluate_model(ctx, kind, model, streets, split="val", label_map=lm)
            rows.append({"kind": kind, "steps": n, "val_miou": ev["miou"], "val_bg_miou": ev["bg_miou"],
                         "val_fg_miou": ev["fg_miou"], "val_moving_miou": ev["moving_miou"],
                         "seconds": hist["seconds"]})
            return ev["miou"]

        chosen[kind] = chosen_point(climb_steps_grid(steps_grid, score, tolerance=tolerance), tolerance)[0]
    cfg = preset("video_seg", ctx.quick)
    out = {"seed": ctx.seed, "quick": ctx.quick, "full_loss": cfg["full_loss"], "flow": flow, "classifier": classifier,
           "fg_classifier": fg_classifier, "steps": {"grid": rows, "chosen": chosen, "tolerance": tolerance},
           "presets_agree": {"steps": {k: v for k, v in cfg["kind_steps"].items() if k in chosen} == chosen,
                             "classifier_steps": preset("streets_classifier", ctx.quick)["steps"]
                             == classifier["chosen"],
                             "fg_classifier_steps": fg_classifier is None
                             or P.fg_classifier_config(ctx)["steps"] == fg_classifier["chosen"],
                             "flow": {k: preset("flow", ctx.quick)[k] for k in ("method", "params")}
                             == flow_setting(ctx, flow["best"])}}
    atomic_write_bytes(Path(ctx.out) / "choices.json", json.dumps(to_jsonable(out), indent=2).encode())
    return out
