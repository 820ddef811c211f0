"""Load-or-train steps of paper 2's pipeline (notebooks 05-07 and ``wsss`` paper-2 commands).

Every function takes a run context ``ctx`` (:func:`wsss_lib.notebook.setup` or
:func:`make_context`: ``quick``, ``seed``, ``device``, ``dataset``, ``data_root``, ``out``,
``checkpoints``) so notebooks stay thin and share trained models through
``ctx.checkpoints/<name>.pt``: a step loads its checkpoint when the stored config matches (sizes
from :func:`wsss_lib.config.preset`), else trains and saves it.

Pipeline: :func:`load_streets` (frames + cached flow of every split) ->
:func:`get_classifier` (multi-label tags over all classes) -> :func:`get_regions` (heatmap
regions of the training frames) / :func:`get_fgbg_masks` (paper 1's single fg/bg mask) ->
:func:`get_video_model` for ``appearance | two_stream | single_bg | full`` ->
:func:`evaluate_model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import torch

from .config import preset
from .errors import InvalidInputError

SPLITS = ("train", "val", "test")


def make_context(name: str = "cli", quick: bool = False, seed: int = 0, device: str = "auto",
                 dataset: str = "toy_streets", data_root: str | None = None, out: str | None = None):
    """A notebook-like context for scripts and the CLI (no printing, same folders)."""
    from .data.registry import default_data_root
    from .results import output_dir
    from .runtime import seed_everything, select_device

    seed_everything(seed)
    o = output_dir(out)
    ctx = SimpleNamespace(name=name, quick=bool(quick), seed=int(seed), device=select_device(device), dataset=dataset,
                          data_root=Path(data_root) if data_root else default_data_root(), out=o,
                          checkpoints=o / "checkpoints")
    ctx.checkpoints.mkdir(parents=True, exist_ok=True)
    return ctx


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
    """The :class:`~wsss_lib.flow.FlowCache` of ``ctx.dataset`` with the ``flow`` preset's method."""
    from .flow import FlowCache, FlowParams

    cfg = preset("flow", ctx.quick, **overrides)
    return FlowCache(flow_cache_root(ctx), ctx.dataset, FlowParams(method=cfg["method"]))


def load_streets(ctx, splits=SPLITS, flow: bool = True, progress: bool = True, **flow_overrides) -> dict:
    """Index, compute/cache flow for, and load every split of ``ctx.dataset`` into memory.

    Returns ``{"info", "samples": {split: [...]}, "data": {split: InMemoryDataset with flow},
    "flow": {split: compute summary}, "flow_cache": FlowCache}``.
    """
    from .data.registry import load_dataset
    from .flow import compute_dataset_flow
    from .video import load_video_data

    fcfg = preset("flow", ctx.quick, **flow_overrides)
    cache = flow_cache(ctx, **flow_overrides) if flow else None
    out = {"samples": {}, "data": {}, "flow": {}, "flow_cache": cache, "flow_config": fcfg if flow else None}
    for split in splits:
        info, samples = load_dataset(ctx.dataset, ctx.data_root, split)
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
    from .heatmaps import build_heatmap_classifier
    from .train import evaluate_classifier, train_classifier

    cfg = preset("streets_classifier", ctx.quick, **overrides)
    info = streets["info"]
    clf = build_heatmap_classifier(info.num_classes, backbone=cfg["backbone"], last_stage=cfg["last_stage"],
                                   pooling=cfg["pooling"], lse_r=cfg["lse_r"], hidden=cfg["hidden"],
                                   dropout=cfg["dropout"], widths=cfg["widths"],
                                   depths=cfg["depths"])
    hist = train_classifier(clf, streets["data"]["train"], steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                            optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"], device=ctx.device,
                            seed=ctx.seed, checkpoint_path=ctx.checkpoints / "streets_classifier.pt", resume=True,
                            config={"classifier": cfg, "data": _data_id(streets), "seed": ctx.seed},
                            progress=progress, desc="streets classifier")
    clf.eval()
    split = "test" if "test" in streets["data"] else "train"
    ev = evaluate_classifier(clf, streets["data"][split], device=ctx.device)
    return clf, {"map": ev["map"], "acc": ev["acc"], "ap": ev["ap"], "seconds": hist["seconds"],
                 "loss": hist["loss"][-1] if hist["loss"] else None}


def heatmap_config(ctx, **overrides) -> dict:
    """The heatmap -> region settings (``heatmaps`` preset) as keyword arguments of
    :func:`wsss_lib.video.compute_regions`."""
    cfg = preset("heatmaps", ctx.quick, **overrides)
    crf = None
    if cfg["crf"]:
        from .config import PRESETS
        from .crf import CRFParams

        crf = CRFParams(**{k: v for k, v in preset("crf", ctx.quick).items() if k != "workers"}) \
            if "crf" in PRESETS else CRFParams()
    return {"layer": cfg["layer"], "normalisation": cfg["normalisation"], "threshold": cfg["threshold"],
            "mode": cfg["mode"], "crf": crf}


def get_regions(ctx, classifier, streets: dict, split: str = "train", progress: bool = True, **overrides) -> dict:
    """Heatmap regions of ``split`` + how good they are vs GT (:func:`wsss_lib.video.pseudo_label_scores`)."""
    from .video import compute_regions, pseudo_label_scores

    kw = heatmap_config(ctx, **overrides)
    ds = streets["data"][split]
    reg = compute_regions(classifier, ds, device=ctx.device, progress=progress, **kw)
    return {"regions": reg, "scores": pseudo_label_scores(reg, ds.labels, streets["info"]),
            "config": {k: (v if not hasattr(v, "to_dict") else v.to_dict()) for k, v in kw.items()}}


def get_fgbg_masks(ctx, classifier, streets: dict, split: str = "train", progress: bool = True) -> dict:
    """Paper 1's fused fg/bg masks of ``split`` (threshold chosen on VAL) for the single-bg baseline,
    with their fg/bg mask IoU and the single-background pseudo-label scores."""
    from .masks import evaluate_masks
    from .video import compute_fgbg_masks, evaluate_predictions, fg_binary_labels, single_bg_label_map

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
    from .video import build_video_model, default_model_config, init_from_classifier, train_video_model

    cfg = preset("video_seg", ctx.quick, **overrides)
    info = streets["info"]
    arch = {k: cfg[k] for k in default_model_config()}
    model = build_video_model(kind, info, **arch)
    if cfg["init_from_classifier"] and classifier is not None:
        init_from_classifier(model, classifier)
    name = tag or f"video_{kind}"
    config = {"kind": kind, "video_seg": {k: v for k, v in cfg.items() if k != "kinds"},
              "data": _data_id(streets, flow=kind == "two_stream"), "seed": ctx.seed,
              "supervision": supervision_id or {}}
    hist = train_video_model(kind, model, streets["data"]["train"], info, regions=regions, fg_masks=fg_masks,
                             steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"], optimizer=cfg["optimizer"],
                             weight_decay=cfg["weight_decay"], pooling=cfg["pooling"],
                             absent_pooling=cfg["absent_pooling"], device=ctx.device, seed=ctx.seed,
                             checkpoint_path=ctx.checkpoints / f"{name}.pt", resume=True, config=config,
                             progress=progress, desc=name)
    model.eval()
    return model, hist


def evaluate_model(ctx, kind: str, model, streets: dict, split: str = "test", label_map=None) -> dict:
    """:func:`wsss_lib.video.evaluate_video` on ``split`` (single_bg: with its label map and the
    oracle-background ceiling)."""
    from .video import evaluate_video

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
    from .checkpoint import load_checkpoint
    from .video import build_video_model, default_model_config, single_bg_label_map

    info = streets["info"]
    out = {}
    for kind in ("appearance", "two_stream", "single_bg", "full"):
        path = Path(ctx.checkpoints) / f"video_{kind}.pt"
        if not path.is_file():
            continue
        state = load_checkpoint(path, map_location="cpu")
        if not state.get("complete"):
            continue
        cfg = state.get("config", {}).get("video_seg", {})
        arch = {k: cfg[k] for k in default_model_config() if k in cfg}
        model = build_video_model(kind, info, **arch)
        model.load_state_dict(state["model"])
        model.to(ctx.device).eval()
        lm = single_bg_label_map(info, streets["data"]["train"].labels) if kind == "single_bg" else None
        out[kind] = (model, lm)
    return out


# ------------------------------------------------------------------------------------------ figures
def _img(ds, i):
    return ds.images[i].permute(1, 2, 0).numpy()


def _lab(info, lab):
    from .viz import colorize

    return colorize(lab.numpy() if torch.is_tensor(lab) else lab, info.palette)


def tag_names(info, tags) -> str:
    return ", ".join(info.classes[i] for i in torch.nonzero(torch.as_tensor(tags) > 0.5).flatten().tolist())


def plot_frames(streets: dict, split: str = "train", indices=(0, 1, 2, 3), with_labels: bool = True):
    """Frames (and GT) of ``split`` with their tags as titles."""
    from .viz import show_grid

    ds, info = streets["data"][split], streets["info"]
    ims, titles = [], []
    for i in indices:
        ims.append(_img(ds, i))
        titles.append(f"{ds.ids[i]}\n{tag_names(info, ds.tags[i])}")
        if with_labels:
            ims.append(_lab(info, ds.labels[i]))
            titles.append("ground truth")
    return show_grid(ims, titles, ncols=4 if with_labels else len(ims))


def plot_class_heatmaps(classifier, streets: dict, index: int, split: str = "test", layer: str = "score",
                        normalisation: str = "max"):
    """One frame: the image and every class's normalised heatmap (untagged classes marked)."""
    from .heatmaps import class_heatmaps
    from .viz import overlay, show_grid

    ds, info = streets["data"][split], streets["info"]
    x = ds.images[index:index + 1].float().div(255.0)
    hm = class_heatmaps(classifier, x.to(next(classifier.parameters()).device), layer=layer,
                        normalisation=normalisation)[0].cpu()
    img = _img(ds, index)
    ims = [img] + [overlay(img, hm[k].numpy()) for k in range(info.num_classes)]
    titles = ["frame"] + [f"{c}{'' if ds.tags[index, k] > 0.5 else ' (absent)'}" for k, c in enumerate(info.classes)]
    return show_grid(ims, titles, ncols=min(5, len(ims)))


def plot_heatmap_explorer(classifier, streets: dict, index: int = 0, cls: str = "road", layer: str = "score",
                          normalisation: str = "max", threshold: float = 0.2, split: str = "test", fgbg=None):
    """The notebook-05 explorer view: frame, one class's heatmap, the regions of all tagged classes
    (argmax among tagged, ``threshold``), GT and (optionally) paper 1's single fg/bg mask."""
    import matplotlib.pyplot as plt

    from .heatmaps import class_heatmaps, heatmap_regions, regions_to_label
    from .viz import overlay

    ds, info = streets["data"][split], streets["info"]
    if cls not in info.classes:
        raise InvalidInputError(f"unknown class {cls!r}; classes: {info.classes}")
    k = info.classes.index(cls)
    x = ds.images[index:index + 1].float().div(255.0)
    hm = class_heatmaps(classifier, x.to(next(classifier.parameters()).device), layer=layer,
                        normalisation=normalisation).cpu()
    reg = heatmap_regions(hm, ds.tags[index:index + 1], threshold=threshold)
    lab = regions_to_label(reg, info.ignore_index)[0]
    img = _img(ds, index)
    panels = [(img, f"{ds.ids[index]}"), (overlay(img, hm[0, k].numpy()), f"heatmap: {cls} ({layer}, {normalisation})"),
              (_lab(info, lab), f"regions (t={threshold:.2f}; cream = none)"), (_lab(info, ds.labels[index]), "ground truth")]
    if fgbg is not None:
        panels.append((fgbg["masks"][index].float().numpy(), "paper 1: single fg/bg mask"))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 2.6))
    for ax, (im, t) in zip(axes, panels):
        ax.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=1 if im.ndim == 2 else None)
        ax.set_title(t, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"tags: {tag_names(info, ds.tags[index])}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_regions_vs_fgbg(streets: dict, regions: torch.Tensor, fgbg: dict, indices=(0, 1, 2), split: str = "train"):
    """Heatmap regions (all classes) next to paper 1's single fg/bg mask, per frame."""
    from .heatmaps import regions_to_label
    from .viz import show_grid

    ds, info = streets["data"][split], streets["info"]
    ims, titles = [], []
    for i in indices:
        lab = regions_to_label(regions[i:i + 1].float(), info.ignore_index)[0]
        ims += [_img(ds, i), _lab(info, lab), fgbg["masks"][i].float().numpy(), _lab(info, ds.labels[i])]
        titles += [ds.ids[i], "heatmap regions (per class)", "paper 1: fg/bg mask", "ground truth"]
    return show_grid(ims, titles, ncols=4)


def plot_flow_clip(streets: dict, clip_index: int = 0, split: str = "test", frames: int = 4):
    """A clip: frames, GT, colour-wheel flow and the motion stream's input magnitude channel."""
    from .viz import flow_to_color, show_grid

    ds, info = streets["data"][split], streets["info"]
    samples = streets["samples"][split]
    clips = sorted({s.clip for s in samples})
    if not clips:
        raise InvalidInputError("this split has no video clips")
    clip = clips[clip_index % len(clips)]
    idx = [i for i, s in enumerate(samples) if s.clip == clip][:frames]
    cache = streets["flow_cache"]
    ims, titles = [], []
    for i in idx:
        f = cache.load(samples[i].id)
        ims += [_img(ds, i), _lab(info, ds.labels[i]), flow_to_color(f),
                ds.extra["flow"][i, 2].float().div(255).numpy()]
        titles += [samples[i].id, "ground truth", "flow (colour wheel)", "motion input: |flow - median|"]
    return show_grid(ims, titles, ncols=4)


def iou_table(results: dict, info) -> str:
    """Markdown table: rows = classes (bg first, then fg; moving marked), columns = models."""
    kinds = list(results)
    lines = ["| class | type | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]

    def f(v):
        return "-" if v is None or v != v else f"{100 * v:.1f}"

    for c in list(info.background) + list(info.foreground):
        name = info.classes[c]
        typ = "bg" if c in info.background else ("fg, moving" if c in info.moving else "fg")
        lines.append(f"| {name} | {typ} | " + " | ".join(f(results[k]["iou"].get(name)) for k in kinds) + " |")
    for key, label in (("bg_miou", "**mean bg**"), ("fg_miou", "**mean fg**"), ("moving_miou", "**mean moving**"),
                       ("miou", "**mIoU**")):
        lines.append(f"| {label} | | " + " | ".join(f(results[k][key]) for k in kinds) + " |")
    return "\n".join(lines)


def plot_iou_bars(results: dict, info):
    """Grouped bars of per-class IoU for each model."""
    import matplotlib.pyplot as plt
    import numpy as np

    kinds = list(results)
    order = list(info.background) + list(info.foreground)
    names = [info.classes[c] for c in order]
    x = np.arange(len(names))
    w = 0.8 / max(1, len(kinds))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 3.2))
    for j, k in enumerate(kinds):
        vals = [results[k]["iou"].get(n) or 0.0 for n in names]
        ax.bar(x + j * w - 0.4 + w / 2, vals, w, label=k)
    ax.axvline(len(info.background) - 0.5, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=30, fontsize=8)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=len(kinds))
    fig.tight_layout()
    return fig


def plot_video_strip(models: dict, streets: dict, clip_index: int = 0, split: str = "test", frames: int = 4,
                     label_maps: dict | None = None):
    """A test clip: frames, GT and every model's prediction, one row per frame."""
    from .video import predict_video
    from .viz import show_grid

    ds, info = streets["data"][split], streets["info"]
    samples = streets["samples"][split]
    clips = sorted({s.clip for s in samples})
    clip = clips[clip_index % len(clips)]
    idx = [i for i, s in enumerate(samples) if s.clip == clip][:frames]
    sub = ds.subset(idx)
    preds = {k: predict_video(m, sub, label_map=(label_maps or {}).get(k)) for k, m in models.items()}
    ims, titles = [], []
    for j, i in enumerate(idx):
        ims += [_img(ds, i), _lab(info, ds.labels[i])] + [_lab(info, preds[k][j]) for k in models]
        titles += [samples[i].id, "ground truth"] + list(models)
    return show_grid(ims, titles, ncols=2 + len(models), size=2.2)
