"""Load-or-train steps of paper 2's pipeline (notebooks 05-07 and ``wsss`` paper-2 commands).

Every function takes a run context ``ctx`` (:func:`wsss_lib.notebook.setup` or
:func:`wsss_lib.papers.common.make_context`: ``quick``, ``seed``, ``device``, ``dataset``,
``data_root``, ``out``, ``checkpoints``) so notebooks stay thin and share trained models through
``ctx.checkpoints/<name>.pt``: a step loads its checkpoint when the stored config matches (sizes
from :func:`wsss_lib.core.config.preset`), else trains and saves it
(:func:`wsss_lib.papers.common.load_or_train`, the same cache as paper 1's).

Pipeline: :func:`load_streets` (frames + cached flow of every split) ->
:func:`get_classifier` (multi-label tags over all classes) -> :func:`get_regions` (heatmap
regions of the training frames) / :func:`get_fgbg_masks` (paper 1's single fg/bg mask) ->
:func:`get_video_model` for ``appearance | two_stream | single_bg | full`` ->
:func:`evaluate_model`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core.config import PRESETS, preset
from ..core.errors import InvalidInputError
from ..engine.shard import FlowCache, compute_dataset_flow
from ..engine.predict import evaluate_classifier
from ..engine.train import train_classifier
from ..models.classifier import build_heatmap_classifier
from ..models.init import init_from
from ..ops.crf import CRFParams
from ..ops.flow import FlowParams
from ..ops.masks import evaluate_masks
from .common import complete_checkpoints, dataset_split, load_or_train
from .video import (KINDS, build_video_model, compute_fgbg_masks, compute_regions, model_config,
                    evaluate_predictions, evaluate_video, fg_binary_labels, load_video_data,
                    pseudo_label_scores, single_bg_label_map, train_video_model)

SPLITS = ("train", "val", "test")


def flow_cache_root(ctx) -> Path:
    """``<data_root>/cache/flow`` when writable, else ``<out>/cache/flow``."""
    cand = Path(ctx.data_root) / "cache" / "flow"
    try:
        cand.mkdir(parents=True, exist_ok=True)
        if os.access(cand, os.W_OK):
            return cand
    except OSError:
        pass
    p = Path(ctx.out) / "cache" / "flow"
    p.mkdir(parents=True, exist_ok=True)
    return p


def flow_cache(ctx, **overrides):
    """The :class:`~wsss_lib.engine.shard.FlowCache` of ``ctx.dataset`` with the ``flow`` preset's method."""
    cfg = preset("flow", ctx.quick, **overrides)
    return FlowCache(flow_cache_root(ctx), ctx.dataset, FlowParams(method=cfg["method"]))


def load_streets(ctx, splits=SPLITS, flow: bool = True, progress: bool = True, **flow_overrides) -> dict:
    """Index, compute/cache flow for, and load every split of ``ctx.dataset`` into memory.

    Returns ``{"info", "samples": {split: [...]}, "data": {split: InMemoryDataset with flow},
    "flow": {split: compute summary}, "flow_cache": FlowCache}``.
    """
    fcfg = preset("flow", ctx.quick, **flow_overrides)
    cache = flow_cache(ctx, **flow_overrides) if flow else None
    out = {"samples": {}, "data": {}, "flow": {}, "flow_cache": cache, "flow_config": fcfg if flow else None}
    for split in splits:
        info, samples = dataset_split(ctx, split, preset("video_seg", ctx.quick)["clips"].get(split))
        out["info"] = info
        out["samples"][split] = samples
        if cache is not None:
            out["flow"][split] = compute_dataset_flow(samples, cache, progress=progress)
        out["data"][split] = load_video_data(info, samples, flow_cache=cache, max_flow=fcfg["max_flow"],
                                             flow_normalisation=fcfg["normalisation"], flow_subtract=fcfg["subtract"],
                                             progress=progress)
    return out


def _data_id(streets: dict, flow: bool = False) -> dict:
    info = streets["info"]
    out = {"dataset": info.name, "classes": list(info.classes),
           "n": {k: len(v) for k, v in streets["samples"].items()}}
    if flow and streets.get("flow_config"):  # how the motion input was made: a change must retrain
        out["flow"] = dict(streets["flow_config"])
    return out


def get_classifier(ctx, streets: dict, progress: bool = True, **overrides):
    """The multi-label tag classifier over all classes (``streets_classifier`` preset): loaded from
    ``checkpoints/streets_classifier.pt`` when its config matches, else trained. Returns
    ``(classifier, info_dict)`` with tag mAP/accuracy on the test split."""
    cfg = preset("streets_classifier", ctx.quick, **overrides)
    info = streets["info"]
    clf = build_heatmap_classifier(info.num_classes, backbone=cfg["backbone"], last_stage=cfg["last_stage"],
                                   pooling=cfg["pooling"], lse_r=cfg["lse_r"], hidden=cfg["hidden"],
                                   dropout=cfg["dropout"], widths=cfg["widths"],
                                   depths=cfg["depths"])
    path = ctx.checkpoints / "streets_classifier.pt"
    config = {"classifier": cfg, "data": _data_id(streets), "seed": ctx.seed}

    def fit_it():
        return train_classifier(clf, streets["data"]["train"], steps=cfg["steps"], batch_size=cfg["batch_size"],
                                lr=cfg["lr"], optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"],
                                device=ctx.device, seed=ctx.seed, checkpoint_path=path, resume=True, config=config,
                                progress=progress, desc="streets classifier")

    run = load_or_train(path, config, clf, fit_it, ctx.device, what="streets classifier")
    hist = run["history"]
    clf.eval()
    split = "test" if "test" in streets["data"] else "train"
    ev = evaluate_classifier(clf, streets["data"][split], device=ctx.device)
    return clf, {"map": ev["map"], "acc": ev["acc"], "ap": ev["ap"], "seconds": run["seconds"],
                 "loss": hist["loss"][-1] if hist["loss"] else None}


def heatmap_config(ctx, **overrides) -> dict:
    """The heatmap -> region settings (``heatmaps`` preset) as keyword arguments of
    :func:`wsss_lib.papers.video.compute_regions`."""
    cfg = preset("heatmaps", ctx.quick, **overrides)
    crf = None
    if cfg["crf"]:
        crf = CRFParams(**{k: v for k, v in preset("crf", ctx.quick).items() if k != "workers"}) \
            if "crf" in PRESETS else CRFParams()
    return {"layer": cfg["layer"], "normalisation": cfg["normalisation"], "threshold": cfg["threshold"],
            "mode": cfg["mode"], "crf": crf}


def get_regions(ctx, classifier, streets: dict, split: str = "train", progress: bool = True, **overrides) -> dict:
    """Heatmap regions of ``split`` + how good they are vs GT (:func:`wsss_lib.papers.video.pseudo_label_scores`)."""
    kw = heatmap_config(ctx, **overrides)
    ds = streets["data"][split]
    reg = compute_regions(classifier, ds, device=ctx.device, progress=progress, **kw)
    return {"regions": reg, "scores": pseudo_label_scores(reg, ds.labels, streets["info"]),
            "config": {k: (v if not hasattr(v, "to_dict") else v.to_dict()) for k, v in kw.items()}}


def get_fgbg_masks(ctx, classifier, streets: dict, split: str = "train", progress: bool = True) -> dict:
    """Paper 1's fused fg/bg masks of ``split`` (threshold chosen on VAL) for the single-bg baseline,
    with their fg/bg mask IoU and the single-background pseudo-label scores."""
    cfg = preset("video_seg", ctx.quick)
    info = streets["info"]
    ds = streets["data"][split]
    res = compute_fgbg_masks(classifier, ds, layers=cfg["fgbg_layers"], val_ds=streets["data"].get("val"),
                             crf=cfg["fgbg_crf"], device=ctx.device, background=info.background, progress=progress)
    fgl = fg_binary_labels(ds.labels, info.background, info.ignore_index)
    res["mask_scores"] = evaluate_masks(res["masks"] > 0.5, fgl)
    # the single-bg pseudo labels: fg pixels -> the first present fg tag is unknown, so score fg/bg only;
    # background pixels named by the single-bg mapping
    lm = single_bg_label_map(info, streets["data"]["train"].labels)
    pseudo = torch.where(res["masks"] > 0.5, torch.full_like(ds.labels.long(), info.ignore_index), lm[0].expand_as(ds.labels.long()))
    target = torch.where(res["masks"] > 0.5, torch.full_like(ds.labels.long(), info.ignore_index), ds.labels.long())
    res["bg_scores"] = evaluate_predictions(pseudo.clamp(max=info.num_classes - 1), target, info)
    res["label_map"] = lm
    return res


def get_video_model(ctx, kind: str, streets: dict, classifier=None, regions: torch.Tensor | None = None,
                    fg_masks: torch.Tensor | None = None, progress: bool = True, tag: str | None = None,
                    supervision_id: dict | None = None, **overrides):
    """Load (matching config) or train the ``kind`` video model; returns ``(model, history)``.

    ``regions`` for appearance/two_stream, ``fg_masks`` for single_bg; ``classifier`` initialises
    the RGB backbone (``init_from_classifier``). ``supervision_id`` (e.g. the heatmap config) is
    part of the checkpoint config so a change of supervision retrains.
    """
    cfg = preset("video_seg", ctx.quick, **overrides)
    info = streets["info"]
    model = build_video_model(kind, info, **model_config(cfg))
    name = tag or f"video_{kind}"
    config = {"kind": kind, "video_seg": {k: v for k, v in cfg.items() if k != "kinds"},
              "data": _data_id(streets, flow=kind == "two_stream"), "seed": ctx.seed,
              "supervision": supervision_id or {}}
    path = ctx.checkpoints / f"{name}.pt"

    def fit_it():
        if cfg["init_from_classifier"] and classifier is not None:
            # paper 2's classifier stops at conv3 (later stages are identities): a partial copy, on purpose
            init_from(model, classifier, partial=True, head=False)
        return train_video_model(kind, model, streets["data"]["train"], info, regions=regions, fg_masks=fg_masks,
                                 steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                                 optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"], pooling=cfg["pooling"],
                                 absent_pooling=cfg["absent_pooling"], device=ctx.device, seed=ctx.seed,
                                 checkpoint_path=path, resume=True, config=config, progress=progress, desc=name)

    run = load_or_train(path, config, model, fit_it, ctx.device, what=name)
    return model, {**run["history"], "seconds": run["seconds"]}


def evaluate_model(ctx, kind: str, model, streets: dict, split: str = "test", label_map=None) -> dict:
    """:func:`wsss_lib.papers.video.evaluate_video` on ``split`` (single_bg: with its label map and the
    oracle-background ceiling)."""
    if kind == "single_bg" and label_map is None:
        raise InvalidInputError("single_bg needs its label_map (get_fgbg_masks(...)['label_map'])")
    return evaluate_video(model, streets["data"][split], streets["info"], device=ctx.device, label_map=label_map,
                          oracle_bg=kind == "single_bg")


def run_video_experiment(ctx, kinds=None, progress: bool = True, streets: dict | None = None,
                         model_overrides: dict | None = None, classifier_overrides: dict | None = None) -> dict:
    """Everything notebook 07 compares: returns ``{"streets", "classifier", "regions", "fgbg",
    "models": {kind: model}, "results": {kind: scores}, "histories": {kind: history}}``."""
    kinds = list(kinds or preset("video_seg", ctx.quick)["kinds"])
    bad = [k for k in kinds if k not in ("appearance", "two_stream", "single_bg", "full")]
    if bad:
        raise InvalidInputError(f"unknown video model kind(s) {bad}; use appearance, two_stream, single_bg, full")
    streets = streets or load_streets(ctx, progress=progress)
    clf, clf_info = get_classifier(ctx, streets, progress=progress, **(classifier_overrides or {}))
    out = {"streets": streets, "classifier": clf, "classifier_info": clf_info, "models": {}, "results": {},
           "histories": {}}
    if any(k in ("appearance", "two_stream") for k in kinds):
        out["regions"] = get_regions(ctx, clf, streets, progress=progress)
    if "single_bg" in kinds:
        out["fgbg"] = get_fgbg_masks(ctx, clf, streets, progress=progress)
    for kind in kinds:
        sup = {}
        if kind in ("appearance", "two_stream"):
            sup = out["regions"]["config"]
        elif kind == "single_bg":
            sup = {"threshold": out["fgbg"]["threshold"]}
        model, hist = get_video_model(ctx, kind, streets, classifier=clf,
                                      regions=out.get("regions", {}).get("regions"),
                                      fg_masks=out.get("fgbg", {}).get("masks"), progress=progress,
                                      supervision_id=sup, **(model_overrides or {}))
        out["models"][kind] = model
        out["histories"][kind] = {"seconds": hist["seconds"], "final_loss": hist["loss"][-1] if hist["loss"] else None}
        lm = out["fgbg"]["label_map"] if kind == "single_bg" else None
        out["results"][kind] = evaluate_model(ctx, kind, model, streets, label_map=lm)
    return out


def load_video_checkpoints(ctx, streets: dict) -> dict:
    """Every trained video model in ``ctx.checkpoints`` (``video_<kind>.pt``, complete ones only):
    ``{kind: (model, label_map or None)}``; the architecture comes from the stored config."""
    info = streets["info"]
    out = {}
    for path, state in complete_checkpoints(ctx.checkpoints, "video_*.pt"):
        kind = path.stem[len("video_"):]
        if kind not in KINDS:
            continue
        model = build_video_model(kind, info, **model_config(state.get("config", {}).get("video_seg", {})))
        model.load_state_dict(state["model"])
        model.to(ctx.device).eval()
        lm = single_bg_label_map(info, streets["data"]["train"].labels) if kind == "single_bg" else None
        out[kind] = (model, lm)
    return out
