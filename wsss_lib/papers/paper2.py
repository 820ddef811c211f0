"""Load-or-train steps of paper 2's pipeline (notebooks 05-07 and ``wsss`` paper-2 commands).

Every function takes a run context ``ctx`` (:func:`wsss_lib.notebook.setup` or
:func:`wsss_lib.papers.common.make_context`: ``quick``, ``seed``, ``device``, ``dataset``,
``data_root``, ``out``, ``checkpoints``) so notebooks stay thin and share trained models through
``ctx.checkpoints/<name>.pt``: a step loads its checkpoint when the stored config matches (sizes
from :func:`wsss_lib.core.config.preset`), else trains and saves it
(:func:`wsss_lib.papers.common.load_or_train`, the same cache as paper 1's).

Pipeline: :func:`load_streets` (frames + cached flow of every split) ->
:func:`get_classifier` (multi-label tags over all classes) -> :func:`get_regions` (heatmap
regions of the training frames) / :func:`get_fg_classifier` + :func:`get_fgbg_masks` (paper 1's
single fg/bg mask, from a foreground-tag classifier's conv4 + conv5) -> :func:`get_video_model` for
every kind of :data:`~wsss_lib.papers.video.KINDS` (``appearance | two_stream | two_stream_zero_flow |
two_stream_shuffled_flow | single_bg | full``) -> :func:`evaluate_model`.

The motion controls (``two_stream_zero_flow``, ``two_stream_shuffled_flow``) see their
:func:`~wsss_lib.papers.video.flow_control` in training and evaluation alike (:func:`split_data`);
the shuffled one deranges the clips by ``ctx.seed``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from ..core.config import PRESETS, preset
from ..core.errors import InvalidInputError
from ..core.io import plain_config, read_image
from ..data.registry import dataset_fingerprint
from ..engine.shard import FlowCache, compute_dataset_flow
from ..engine.predict import evaluate_classifier
from ..engine.train import train_classifier
from ..models.classifier import build_heatmap_classifier
from ..models.init import init_from
from ..ops.crf import CRFParams
from ..ops.flow import FlowParams, flow_partners
from ..ops.heatmaps import class_heatmaps, heatmap_auc
from ..ops.losses import median_frequency_weights
from ..ops.masks import evaluate_masks
from .common import TOY_DATASETS, complete_checkpoints, dataset_split, load_or_train, profile, scaled_steps
from .video import (KINDS, base_kind, build_video_model, compute_fgbg_masks, compute_regions, flow_control,
                    model_config, evaluate_predictions, evaluate_video, evaluate_video_full_size, fg_binary_labels,
                    load_video_data, pseudo_label_scores, single_bg_label_map, train_video_model, uses_flow)

FULL_LOSSES = ("plain", "balanced")

SPLITS = ("train", "val", "test")


def _preset(ctx, section: str, **overrides) -> dict:
    """``section`` of the presets for this run's quick flag and profile (toy or paper scale,
    :func:`~wsss_lib.papers.common.profile`: "streets_classifier" -> "paper2_classifier", "video_seg"
    -> "paper2_video_seg" on real data)."""
    return preset(section, ctx.quick, profile(ctx), **overrides)


# real datasets: the split whose frames stand for each of the pipeline's splits. Cityscapes' test labels are
# not public, so its official val split is the pipeline's "test" (and "val") [ours]; CamVid has all three
REAL_SPLITS = {"cityscapes": {"test": "val"}}


def source_split(ctx, split: str) -> str:
    """The dataset split read for the pipeline's ``split`` (:data:`REAL_SPLITS`; toy data: itself)."""
    return REAL_SPLITS.get(ctx.dataset, {}).get(split, split)


def frame_size(ctx) -> tuple[int, int] | None:
    """``(H, W)`` that a real dataset's frames are resized to before they are preloaded (the run's
    ``ctx.frame_size``, else ``image_size[dataset]`` of the paper-scale ``paper2_video_seg`` preset, in both profiles);
    None for the toy datasets (stored size)."""
    if ctx.dataset in TOY_DATASETS:
        return None
    if getattr(ctx, "frame_size", None):  # the run's override (notebook parameter frame_size)
        return tuple(int(v) for v in ctx.frame_size)
    sizes = preset("paper2_video_seg", ctx.quick)["image_size"]
    if ctx.dataset not in sizes:
        raise InvalidInputError(f"no frame size for dataset {ctx.dataset!r} in the paper2_video_seg preset "
                                f"(image_size has {sorted(sizes)})")
    return tuple(int(v) for v in sizes[ctx.dataset])


def backbone_kwargs(cfg: dict) -> dict:
    """Backbone keywords of a classifier config: widths/depths (small_vgg) or pretrained (vgg16)."""
    if cfg["backbone"] == "small_vgg":
        return {"widths": cfg["widths"], "depths": cfg["depths"]}
    return {"pretrained": cfg.get("pretrained")}


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
    """The :class:`~wsss_lib.engine.shard.FlowCache` of ``ctx.dataset`` with the ``flow`` preset's method
    and its ``params`` (:class:`~wsss_lib.ops.flow.FlowParams` overrides); each setting has its own folder."""
    cfg = _preset(ctx, "flow", **overrides)
    return FlowCache(flow_cache_root(ctx), ctx.dataset, FlowParams(method=cfg["method"], **cfg["params"]),
                     dataset_fingerprint(ctx.dataset, ctx.data_root))


def load_streets(ctx, splits=SPLITS, flow: bool = True, progress: bool = True, **flow_overrides) -> dict:
    """Index, compute/cache flow for, and load every split of ``ctx.dataset`` into memory.

    Clips per split: the ``video_seg`` preset's ``clips``, updated with the run's ``ctx.clips``.
    Real datasets: each split reads :func:`source_split` (Cityscapes' "test" = its official val),
    frames are resized to :func:`frame_size` (bilinear; labels nearest; flow resized and rescaled),
    and the flow of a Cityscapes frame goes to its ``leftImg8bit_sequence`` neighbour.

    Returns ``{"info", "samples": {split: [...]}, "data": {split: InMemoryDataset with flow},
    "flow": {split: compute summary}, "flow_cache": FlowCache, "size": (H, W) or None}``.
    """
    fcfg = _preset(ctx, "flow", **flow_overrides)
    cache = None
    size = frame_size(ctx)
    out = {"samples": {}, "data": {}, "flow": {}, "flow_cache": None, "flow_config": fcfg if flow else None,
           "size": size}
    clips = {**_preset(ctx, "video_seg")["clips"], **(getattr(ctx, "clips", None) or {})}
    for split in splits:
        info, samples = dataset_split(ctx, source_split(ctx, split), clips.get(split))
        out["info"] = info
        out["samples"][split] = samples
        out["fingerprint"] = dataset_fingerprint(ctx.dataset, ctx.data_root)
        if flow and cache is None:  # after the data exist: the cache is keyed by their generation
            cache = out["flow_cache"] = flow_cache(ctx, **flow_overrides)
        if cache is not None:
            out["flow"][split] = compute_dataset_flow(samples, cache, progress=progress)
        out["data"][split] = load_video_data(info, samples, size=size, flow_cache=cache, max_flow=fcfg["max_flow"],
                                             flow_normalisation=fcfg["normalisation"], flow_subtract=fcfg["subtract"],
                                             progress=progress)
    return out


def frame_pair(streets: dict, split: str, i: int) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Frame ``i`` of ``split`` and the frame its flow is computed to
    (:func:`~wsss_lib.ops.flow.flow_partners`: the next frame of its clip, or Cityscapes' sequence
    neighbour), both uint8 ``(H, W, 3)`` at the loaded size, and the flow's sign; None without a partner."""
    j, sign = flow_partners(streets["samples"][split])[i]
    if isinstance(j, int) and j < 0:
        return None
    ds = streets["data"][split]
    a = ds.images[i].permute(1, 2, 0).numpy()
    if isinstance(j, int):
        return a, ds.images[j].permute(1, 2, 0).numpy(), sign
    b = torch.from_numpy(read_image(j)).permute(2, 0, 1)[None].float()  # a sequence file at its stored size
    b = torch.nn.functional.interpolate(b, size=a.shape[:2], mode="bilinear", align_corners=False)
    return a, b[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy(), sign


def _data_id(streets: dict, flow: bool = False) -> dict:
    info = streets["info"]
    out = {"dataset": info.name, "classes": list(info.classes),
           "n": {k: len(v) for k, v in streets["samples"].items()}}
    if streets.get("fingerprint"):  # a regenerated toy dataset (same sizes, new generator) retrains
        out["fingerprint"] = streets["fingerprint"]
    if streets.get("size"):  # real frames resized: another size retrains
        out["size"] = list(streets["size"])
    if flow and streets.get("flow_config"):  # how the motion input was made: a change must retrain
        out["flow"] = dict(streets["flow_config"])
    return out


def get_classifier(ctx, streets: dict, progress: bool = True, tag: str = "streets_classifier", **overrides):
    """The multi-label tag classifier over all classes (``streets_classifier`` preset + ``overrides``):
    loaded from ``checkpoints/<tag>.pt`` when its config matches, else trained. Returns
    ``(classifier, info_dict)`` with tag mAP/accuracy on the test split."""
    cfg = _preset(ctx, "streets_classifier", **overrides)
    info = streets["info"]
    clf = build_heatmap_classifier(info.num_classes, backbone=cfg["backbone"], last_stage=cfg["last_stage"],
                                   pooling=cfg["pooling"], lse_r=cfg["lse_r"], hidden=cfg["hidden"],
                                   dropout=cfg["dropout"], **backbone_kwargs(cfg))
    path = ctx.checkpoints / f"{tag}.pt"
    config = {"classifier": cfg, "data": _data_id(streets), "seed": ctx.seed}

    def fit_it():
        return train_classifier(clf, streets["data"]["train"], steps=cfg["steps"], batch_size=cfg["batch_size"],
                                lr=cfg["lr"], optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"],
                                momentum=cfg.get("momentum", 0.9), device=ctx.device, seed=ctx.seed,
                                checkpoint_path=path, resume=True, config=config, progress=progress,
                                desc="streets classifier")

    run = load_or_train(path, config, clf, fit_it, ctx.device, what="streets classifier")
    hist = run["history"]
    clf.eval()
    split = "test" if "test" in streets["data"] else "train"
    ev = evaluate_classifier(clf, streets["data"][split], device=ctx.device)
    return clf, {"map": ev["map"], "acc": ev["acc"], "ap": ev["ap"], "seconds": run["seconds"],
                 "loss": hist["loss"][-1] if hist["loss"] else None, "config": plain_config(cfg)}


def fg_classifier_config(ctx, **overrides) -> dict:
    """Settings of the single-background baseline's classifier: the ``streets_classifier`` preset with
    the ``streets_fg_classifier`` section on top (``last_stage: conv5``, its own VAL-chosen steps; a None
    there keeps the streets classifier's value), then ``overrides``."""
    fg = {k: v for k, v in _preset(ctx, "streets_fg_classifier").items() if v is not None}
    return _preset(ctx, "streets_classifier", **{**fg, **overrides})


def get_fg_classifier(ctx, streets: dict, progress: bool = True, tag: str = "streets_fg_classifier", **overrides):
    """Paper 1's classifier on street data, for the single-background baseline: a multi-label
    classifier over the FOREGROUND tags only (paper 1 has no background tags [summary]) whose conv4
    and conv5 exist (``last_stage: conv5``, otherwise the streets classifier's widths/depths and
    schedule [ours]). Loaded from ``checkpoints/<tag>.pt`` when its config matches, else trained.
    Returns ``(classifier, info_dict)`` with foreground-tag mAP/accuracy on test and the settings."""
    cfg = fg_classifier_config(ctx, **overrides)
    info = streets["info"]
    fg = list(info.foreground)
    clf = build_heatmap_classifier(len(fg), backbone=cfg["backbone"], last_stage=cfg["last_stage"],
                                   pooling=cfg["pooling"], lse_r=cfg["lse_r"], hidden=cfg["hidden"],
                                   dropout=cfg["dropout"], **backbone_kwargs(cfg))
    path = ctx.checkpoints / f"{tag}.pt"
    config = {"classifier": cfg, "classes": fg, "data": _data_id(streets), "seed": ctx.seed}

    def fit_it():
        return train_classifier(clf, streets["data"]["train"], classes=fg, steps=cfg["steps"],
                                batch_size=cfg["batch_size"], lr=cfg["lr"], optimizer=cfg["optimizer"],
                                weight_decay=cfg["weight_decay"], momentum=cfg.get("momentum", 0.9),
                                device=ctx.device, seed=ctx.seed, checkpoint_path=path, resume=True, config=config,
                                progress=progress, desc="streets fg classifier")

    run = load_or_train(path, config, clf, fit_it, ctx.device, what="streets fg classifier")
    hist = run["history"]
    clf.eval()
    split = "test" if "test" in streets["data"] else "train"
    ev = evaluate_classifier(clf, streets["data"][split], classes=fg, device=ctx.device)
    return clf, {"map": ev["map"], "acc": ev["acc"], "ap": ev["ap"], "seconds": run["seconds"],
                 "loss": hist["loss"][-1] if hist["loss"] else None, "classes": fg, "last_stage": cfg["last_stage"],
                 "config": plain_config(cfg)}


def heatmap_config(ctx, **overrides) -> dict:
    """The heatmap -> region settings (``heatmaps`` preset) as keyword arguments of
    :func:`wsss_lib.papers.video.compute_regions`."""
    cfg = _preset(ctx, "heatmaps", **overrides)
    crf = None
    if cfg["crf"]:
        crf = CRFParams(**{k: v for k, v in _preset(ctx, "crf").items() if k != "workers"}) \
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


def heatmap_localisation(ctx, classifier, streets: dict, split: str = "val", batch_size: int = 32) -> np.ndarray:
    """Per-image, per-class heatmap AUC of ``split`` (:func:`wsss_lib.ops.heatmaps.heatmap_auc`) with the
    ``heatmaps`` preset's layer and normalisation: float64 ``(N, C)``, NaN where a class is absent."""
    kw = heatmap_config(ctx)
    ds, info = streets["data"][split], streets["info"]
    out = []
    for s in range(0, len(ds), batch_size):
        x = ds.images[s:s + batch_size].to(ctx.device).float().div_(255.0)
        hm = class_heatmaps(classifier, x, layer=kw["layer"], normalisation=kw["normalisation"], batch_size=batch_size)
        out.append(heatmap_auc(hm, ds.labels[s:s + batch_size], info.ignore_index))
    return np.concatenate(out) if out else np.zeros((0, info.num_classes))


def get_fgbg_masks(ctx, classifier=None, streets: dict | None = None, split: str = "train",
                   progress: bool = True) -> dict:
    """Paper 1's fused fg/bg masks of ``split`` (``video_seg`` ``fgbg_layers``, conv4 + conv5
    [summary]; threshold chosen on VAL; dense CRF) for the single-bg baseline, with their fg/bg mask
    IoU and the single-background pseudo-label scores.

    ``classifier``: default (None) :func:`get_fg_classifier`, paper 1's foreground-tag classifier;
    a classifier whose ``fgbg_layers`` are truncated to identities (e.g. :func:`get_classifier`'s,
    which stops at conv3) is refused (:func:`~wsss_lib.papers.video.check_stages`).
    """
    if streets is None:
        raise InvalidInputError("get_fgbg_masks needs streets (load_streets)")
    if classifier is None:
        classifier, _ = get_fg_classifier(ctx, streets, progress=progress)
    cfg = _preset(ctx, "video_seg")
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


def kind_steps(cfg: dict, kind: str, overrides: dict | None = None) -> int:
    """Training steps of ``kind`` under the ``video_seg`` settings ``cfg``: an explicit ``steps``
    override, else ``kind_steps[kind]`` (the VAL choice, ``wsss study paper2 --choose``), else
    ``kind_steps`` of its base kind (a motion control trains exactly like the two-stream model),
    else ``steps``."""
    if overrides and "steps" in overrides:
        return int(overrides["steps"])
    ks = cfg.get("kind_steps") or {}
    return int(ks.get(kind, ks.get(base_kind(kind), cfg["steps"])))


def full_class_weights(cfg: dict, streets: dict) -> torch.Tensor | None:
    """The cross-entropy class weights of ``full`` (``video_seg`` ``full_loss``): ``"balanced"`` ->
    median-frequency balancing over the training labels [ours], ``"plain"`` -> None."""
    if cfg["full_loss"] not in FULL_LOSSES:
        raise InvalidInputError(f"video_seg full_loss must be one of {FULL_LOSSES}, got {cfg['full_loss']!r}")
    if cfg["full_loss"] == "plain":
        return None
    info = streets["info"]
    return median_frequency_weights(streets["data"]["train"].labels, info.num_classes, info.ignore_index)


def split_data(ctx, streets: dict, split: str, kind: str):
    """The in-memory ``split`` as ``kind`` sees it: the motion controls get their
    :func:`~wsss_lib.papers.video.flow_control` (derangement seeded by ``ctx.seed``), others the data as loaded."""
    fcfg = streets.get("flow_config") or {}
    return flow_control(streets["data"][split], kind, streets["samples"][split], seed=ctx.seed,
                        max_flow=fcfg.get("max_flow"), normalisation=fcfg.get("normalisation", "fixed"),
                        subtract=fcfg.get("subtract", "median"))


def get_video_model(ctx, kind: str, streets: dict, classifier=None, regions: torch.Tensor | None = None,
                    fg_masks: torch.Tensor | None = None, progress: bool = True, tag: str | None = None,
                    supervision_id: dict | None = None, **overrides):
    """Load (matching config) or train the ``kind`` video model; returns ``(model, history)``.

    ``regions`` for appearance/two_stream (and its controls), ``fg_masks`` for single_bg;
    ``classifier`` initialises the RGB backbone (``init_from_classifier``; single_bg: pass
    :func:`get_fg_classifier`'s). ``supervision_id`` (e.g. the heatmap config) is part of the
    checkpoint config so a change of supervision retrains. Steps: :func:`kind_steps`; ``full``'s
    loss: :func:`full_class_weights`.
    """
    cfg = _preset(ctx, "video_seg", **overrides)
    cfg["steps"] = kind_steps(cfg, kind, overrides)
    base = base_kind(kind)
    info = streets["info"]
    model = build_video_model(kind, info, **model_config(cfg))
    name = tag or f"video_{kind}"
    stored = {k: v for k, v in cfg.items() if k not in ("kinds", "kind_steps")}
    if base != "full":
        stored.pop("full_loss")
    config = {"kind": kind, "video_seg": stored, "data": _data_id(streets, flow=uses_flow(kind)), "seed": ctx.seed,
              "supervision": supervision_id or {}}
    path = ctx.checkpoints / f"{name}.pt"

    def fit_it():
        if cfg["init_from_classifier"] and classifier is not None:
            # paper 2's heatmap classifier stops at conv3 (later stages are identities): a partial copy,
            # on purpose; the fg classifier of single_bg has every stage
            init_from(model, classifier, partial=True, head=False)
        return train_video_model(kind, model, split_data(ctx, streets, "train", kind), info, regions=regions,
                                 fg_masks=fg_masks, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                                 optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"],
                                 momentum=cfg.get("momentum", 0.9), pooling=cfg["pooling"],
                                 absent_pooling=cfg["absent_pooling"],
                                 class_weights=full_class_weights(cfg, streets) if base == "full" else None,
                                 device=ctx.device, seed=ctx.seed, checkpoint_path=path, resume=True, config=config,
                                 progress=progress, desc=name)

    run = load_or_train(path, config, model, fit_it, ctx.device, what=name)
    return model, {**run["history"], "seconds": run["seconds"], "steps": cfg["steps"]}


def evaluate_model(ctx, kind: str, model, streets: dict, split: str = "test", label_map=None,
                   full_size: bool | None = None) -> dict:
    """:func:`wsss_lib.papers.video.evaluate_video` on ``split`` as ``kind`` sees it (:func:`split_data`:
    the motion controls on their flow control; single_bg: with its label map and the
    oracle-background ceiling, ``"oracle_bg"``). ``full_size`` (default: when the frames were
    resized, i.e. real data): score at the stored label resolution
    (:func:`~wsss_lib.papers.video.evaluate_video_full_size`)."""
    if base_kind(kind) == "single_bg" and label_map is None:
        raise InvalidInputError("single_bg needs its label_map (get_fgbg_masks(...)['label_map'])")
    if full_size is None:
        full_size = streets.get("size") is not None
    if full_size:
        return evaluate_video_full_size(model, split_data(ctx, streets, split, kind), streets["samples"][split],
                                        streets["info"], device=ctx.device, label_map=label_map,
                                        oracle_bg=kind == "single_bg")
    return evaluate_video(model, split_data(ctx, streets, split, kind), streets["info"], device=ctx.device,
                          label_map=label_map, oracle_bg=kind == "single_bg")


def video_supervision(ctx, kinds, streets: dict, progress: bool = True, classifier_overrides: dict | None = None,
                      fg_classifier_overrides: dict | None = None) -> dict:
    """What the weak ``kinds`` train from: ``{"classifier", "classifier_info"}`` always, ``"regions"``
    (heatmap regions) for appearance / two-stream kinds, ``"fg_classifier"``, ``"fg_classifier_info"``
    and ``"fgbg"`` (:func:`get_fgbg_masks` of :func:`get_fg_classifier`) for single_bg."""
    bases = {base_kind(k) for k in kinds}
    clf, clf_info = get_classifier(ctx, streets, progress=progress, **(classifier_overrides or {}))
    out = {"classifier": clf, "classifier_info": clf_info}
    if bases & {"appearance", "two_stream"}:
        out["regions"] = get_regions(ctx, clf, streets, progress=progress)
    if "single_bg" in bases:
        fg_clf, fg_info = get_fg_classifier(ctx, streets, progress=progress, **(fg_classifier_overrides or {}))
        out.update(fg_classifier=fg_clf, fg_classifier_info=fg_info)
        out["fgbg"] = get_fgbg_masks(ctx, fg_clf, streets, progress=progress)
    return out


def train_kind(ctx, kind: str, streets: dict, sup: dict, progress: bool = True, **overrides):
    """:func:`get_video_model` for ``kind`` with its supervision from :func:`video_supervision` (the
    RGB backbone initialised from the heatmap classifier, single_bg's from the fg classifier);
    ``overrides``: ``video_seg`` keys and ``tag``. Returns ``(model, history)``."""
    base = base_kind(kind)
    sid = {}
    # what the model learns from, so that another classifier (e.g. other steps) retrains it: the heatmap
    # settings and the heatmap classifier's settings, or the fg/bg threshold and the fg classifier's
    if base in ("appearance", "two_stream"):
        sid = {**sup["regions"]["config"], "classifier": sup["classifier_info"]["config"]}
    elif base == "single_bg":
        sid = {"threshold": sup["fgbg"]["threshold"], "classifier": "streets_fg_classifier",
               "classifier_config": sup["fg_classifier_info"]["config"]}
    clf = sup["fg_classifier"] if base == "single_bg" else sup["classifier"]
    scale, cap = ctx.steps_scale, ctx.steps_cap
    if "steps" not in overrides and (scale != 1.0 or cap is not None):  # the VAL-chosen schedule x scale, <= cap
        overrides["steps"] = scaled_steps(kind_steps(_preset(ctx, "video_seg"), kind), scale, cap)
    return get_video_model(ctx, kind, streets, classifier=clf, regions=sup.get("regions", {}).get("regions"),
                           fg_masks=sup.get("fgbg", {}).get("masks"), progress=progress, supervision_id=sid,
                           **overrides)


def run_video_experiment(ctx, kinds=None, progress: bool = True, streets: dict | None = None,
                         model_overrides: dict | None = None, classifier_overrides: dict | None = None,
                         evaluate: bool = True) -> dict:
    """Everything notebook 07 compares: returns ``{"streets", "classifier", "fg_classifier" (single_bg),
    "regions", "fgbg", "models": {kind: model}, "results": {kind: scores on test}, "histories": {kind:
    {"seconds", "steps", "final_loss"}}, "curves": {kind: {"step": [...], "loss": [...]}}}`` (the loss
    curve as trained, or as stored in the checkpoint; ``evaluate=False``: no ``results``)."""
    kinds = list(kinds or _preset(ctx, "video_seg")["kinds"])
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise InvalidInputError(f"unknown video model kind(s) {bad}; use {', '.join(KINDS)}")
    streets = streets or load_streets(ctx, progress=progress)
    out = {"streets": streets, **video_supervision(ctx, kinds, streets, progress, classifier_overrides),
           "models": {}, "results": {}, "histories": {}, "curves": {}}
    for kind in kinds:
        model, hist = train_kind(ctx, kind, streets, out, progress=progress, **(model_overrides or {}))
        out["models"][kind] = model
        out["histories"][kind] = {"seconds": hist["seconds"], "steps": hist["steps"],
                                  "final_loss": hist["loss"][-1] if hist["loss"] else None}
        out["curves"][kind] = {"step": list(hist.get("step") or []), "loss": list(hist.get("loss") or [])}
        if evaluate:
            lm = out["fgbg"]["label_map"] if kind == "single_bg" else None
            out["results"][kind] = evaluate_model(ctx, kind, model, streets, label_map=lm)
    return out


def load_video_checkpoints(ctx, streets: dict) -> dict:
    """Every trained video model in ``ctx.checkpoints`` (``video_<kind>.pt``, complete ones only; the
    steps-grid runs of :func:`~wsss_lib.papers.study_paper2.choose_paper2` are left out):
    ``{kind: (model, label_map or None)}``; the architecture comes from the stored config. Evaluate
    them with :func:`evaluate_model` (the motion controls then see their flow control)."""
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


# ----------------------------------------------------------------------------- the whole pipeline

# kinds `wsss reproduce paper2` may train (the motion controls need >= 2 clips per split: CamVid only)
REPRODUCE_KINDS = KINDS


def reproduce(ctx, kinds=None, pretrained: str | None = None, steps_scale: float = 1.0,
              progress: bool = True) -> dict:
    """Paper 2 end to end on a real video dataset, each step a cached load-or-compute (a killed run
    resumes where it stopped; a finished one retrains nothing):

    frames of train/test resized and preloaded with their optical flow (cached on disk per frame,
    Cityscapes: towards the ``leftImg8bit_sequence`` neighbour) -> tags from the label maps (every
    class present, background ones included) -> heatmap classifier over all classes -> heatmap
    regions of the training frames -> the video models ``kinds`` (default: the preset's, appearance
    and two-stream) trained with the heatmap-region loss -> scores on test (Cityscapes: its official
    val) at the stored label resolution.

    ``pretrained``: the classifier backbone's ImageNet weights (a path, "imagenet" or "none";
    None = the preset's). ``steps_scale`` multiplies every training's steps.

    Returns ``{"rows": [{"kind", "miou", "bg_miou", "fg_miou", "moving_miou"}], "metrics": {...},
    "seconds": {...}, "config": {...}}``.
    """
    kinds = list(kinds or _preset(ctx, "video_seg")["kinds"])
    bad = [k for k in kinds if k not in REPRODUCE_KINDS]
    if bad:
        raise InvalidInputError(f"unknown video model kind(s) {bad}; use {', '.join(REPRODUCE_KINDS)}")
    seconds, metrics = {}, {}
    t0 = time.time()
    streets = load_streets(ctx, splits=("train", "test"), flow=any(uses_flow(k) for k in kinds), progress=progress)
    for split, fl in streets["flow"].items():
        if fl["zero_flow"] == len(streets["samples"][split]):
            hint = (" (expected leftImg8bit_sequence/{split}/{city}/{city}_{seq}_{frame+1}_leftImg8bit.png next to "
                    "each labelled frame)" if ctx.dataset == "cityscapes" else " (no two frames of one clip)")
            raise InvalidInputError(f"{ctx.dataset} under {ctx.data_root}: no frame of {source_split(ctx, split)} has "
                                    f"a neighbouring frame for optical flow{hint}; the two-stream model needs them")
    metrics["data"] = {split: {"frames": len(v), "source_split": source_split(ctx, split),
                               "zero_flow": streets["flow"].get(split, {}).get("zero_flow")}
                       for split, v in streets["samples"].items()}
    metrics["data"]["size"] = list(streets["size"]) if streets["size"] else None
    seconds["data_and_flow"] = time.time() - t0
    t0 = time.time()
    clf_over, fg_over = {}, {}
    if pretrained is not None:
        clf_over["pretrained"] = fg_over["pretrained"] = None if str(pretrained).lower() == "none" else str(pretrained)
    if steps_scale != 1.0:
        clf_over["steps"] = scaled_steps(_preset(ctx, "streets_classifier")["steps"], steps_scale)
        fg_over["steps"] = scaled_steps(fg_classifier_config(ctx)["steps"], steps_scale)
    sup = video_supervision(ctx, kinds, streets, progress=progress, classifier_overrides=clf_over,
                            fg_classifier_overrides=fg_over)
    ci = sup["classifier_info"]
    metrics["classifier"] = {"map": ci["map"], "trained_now": ci["seconds"] > 0}
    if "regions" in sup:
        sc = sup["regions"]["scores"]
        metrics["regions"] = {"miou": sc["miou"], "bg_miou": sc["bg_miou"], "fg_miou": sc["fg_miou"],
                              "coverage": sc["coverage"]}
    seconds["classifier_and_regions"] = time.time() - t0
    rows, trained = [], {}
    vcfg = _preset(ctx, "video_seg")
    for kind in kinds:
        t0 = time.time()
        over = {} if steps_scale == 1.0 else {"steps": scaled_steps(kind_steps(vcfg, kind), steps_scale)}
        model, hist = train_kind(ctx, kind, streets, sup, progress=progress, **over)
        seconds[f"train_{kind}"] = time.time() - t0
        trained[kind] = {"steps": hist["steps"], "trained_now": hist["seconds"] > 0,
                         "final_loss": hist["loss"][-1] if hist.get("loss") else None}
        t0 = time.time()
        lm = sup["fgbg"]["label_map"] if kind == "single_bg" else None
        res = evaluate_model(ctx, kind, model, streets, split="test", label_map=lm)
        seconds[f"eval_{kind}"] = time.time() - t0
        metrics[kind] = res
        rows.append({"kind": kind, **{k: res[k] for k in ("miou", "bg_miou", "fg_miou", "moving_miou")}})
    metrics["trained"] = trained
    return {"rows": rows, "metrics": metrics, "seconds": seconds,
            "config": {"dataset": ctx.dataset, "profile": profile(ctx), "quick": ctx.quick, "seed": ctx.seed,
                       "device": str(ctx.device), "steps_scale": steps_scale, "kinds": kinds,
                       "test_split": source_split(ctx, "test"),
                       "classifier": _preset(ctx, "streets_classifier", **clf_over),
                       "heatmaps": sup["regions"]["config"] if "regions" in sup else None,
                       "flow": streets["flow_config"],
                       "video_seg": {k: v for k, v in vcfg.items() if k not in ("kinds",)}}}
