"""Figures and tables of the notebooks (front layer): everything that draws or formats results.

Shared: :func:`plot_histories` (loss curves of several models), :func:`plot_maps` (the in-view
method cells' intermediate maps), :func:`class_legend`.
Paper 1 (notebooks 01-04): :func:`plot_samples`, :func:`plot_history`, :func:`plot_stage_activations`,
:func:`plot_masks`, :func:`plot_segmentations`, :func:`markdown_table`, the widget views
:func:`mask_explorer` and :func:`crf_explorer`. Paper 2 (notebooks 05-07): :func:`plot_frames`,
:func:`plot_class_heatmaps`, :func:`plot_heatmap_explorer`, :func:`plot_regions_vs_fgbg`,
:func:`plot_flow_clip`, :func:`iou_table`, :func:`plot_iou_bars`, :func:`plot_video_strip`.
The numbers they show come from :mod:`wsss_lib.papers`; drawing primitives from :mod:`wsss_lib.viz`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .core.errors import InvalidInputError
from .engine.train import InMemoryDataset
from .ops.heatmaps import class_heatmaps, heatmap_regions, regions_to_label
from .ops.masks import fuse_activations, per_image_iou, refine_masks
from .papers.paper1 import stage_maps
from .papers.video import predict_video
from .viz import colorize, flow_to_color, overlay, show_grid

# ------------------------------------------------------------------------------------------ paper 1

def fg_tag_names(info, tags_row) -> str:
    """``"disc, star"`` for a multi-hot row over ``info.classes`` (background left out)."""
    return ", ".join(info.classes[i] for i in info.foreground if float(tags_row[i]) > 0.5) or "-"


def plot_samples(ds: InMemoryDataset, indices, with_labels: bool = True):
    """Images (titles = their tags) and, below, their label maps."""
    imgs = ds.uint8_images()
    ims, titles = [], []
    for i in indices:
        ims.append(imgs[i])
        titles.append(fg_tag_names(ds.info, ds.tags[i]))
    if with_labels:
        for i in indices:
            ims.append(colorize(ds.labels[i].numpy(), ds.info.palette))
            titles.append("label")
    return show_grid(ims, titles, ncols=len(indices))


def plot_history(history: dict, title: str = "training loss", smooth: int = 20):
    """Loss per step (and a running mean)."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is heavy and only needed when drawing

    fig, ax = plt.subplots(figsize=(6, 3))
    loss = np.asarray(history.get("loss", []), dtype=float)
    if loss.size:
        ax.plot(history["step"], loss, alpha=0.3, label="loss")
        k = max(1, min(smooth, loss.size))
        ax.plot(history["step"][k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), label=f"mean of {k}")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "loaded from checkpoint (no history)", ha="center")
    ax.set_xlabel("step")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_histories(histories: dict[str, dict], title: str = "training loss", smooth: int = 20):
    """Loss curves of several trained models on one axes: ``histories`` ``{name: {"step": [...],
    "loss": [...]}}`` (a model loaded from a checkpoint without a history is named in the legend).
    Each curve is a running mean over ``smooth`` steps (the raw loss faint behind it)."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is heavy and only needed when drawing

    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for j, (name, h) in enumerate(histories.items()):
        loss = np.asarray((h or {}).get("loss") or [], dtype=float)
        steps = np.asarray((h or {}).get("step") or range(1, loss.size + 1), dtype=float)
        color = f"C{j % 10}"
        if not loss.size:
            ax.plot([], [], color=color, label=f"{name} (no history stored)")
            continue
        k = max(1, min(smooth, loss.size))
        ax.plot(steps, loss, color=color, alpha=0.2)
        ax.plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), color=color,
                label=f"{name}: {loss[-k:].mean():.3f} at step {int(steps[-1])}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_maps(maps: dict[str, Any], ncols: int | None = None, size: float = 2.2, suptitle: str | None = None,
              cmap: str = "viridis", shared_scale: bool = False):
    """A row (or grid) of 2-D maps, each with its own colour bar and its shape in the title (the
    in-view method cells: one intermediate per panel). ``maps`` ``{title: (H, W) array/tensor or
    uint8 (H, W, 3) image}``; ``shared_scale`` uses one colour range for all 2-D maps."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is heavy and only needed when drawing

    arrs = {k: (v.detach().cpu().float().numpy() if torch.is_tensor(v) and v.dtype != torch.uint8
                else np.asarray(v.cpu() if torch.is_tensor(v) else v)) for k, v in maps.items()}
    n = len(arrs)
    ncols = max(1, min(ncols or n, n))
    nrows = (n + ncols - 1) // ncols
    flat = [a for a in arrs.values() if a.ndim == 2]
    lo = min(float(a.min()) for a in flat) if shared_scale and flat else None
    hi = max(float(a.max()) for a in flat) if shared_scale and flat else None
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols * 1.15, size * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, a) in zip(axes.flat, arrs.items()):
        if a.ndim == 3:
            ax.imshow(a)
        else:
            im = ax.imshow(a, cmap=cmap, vmin=lo, vmax=hi)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
        shape = "x".join(str(d) for d in a.shape[:2])
        ax.set_title(f"{title}\n({shape})", fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def class_legend(fig, info, classes, none_label: str | None = "no class / ignored", ncol: int | None = None) -> None:
    """A figure-level colour legend of ``classes`` (indices into ``info.classes``; others, e.g. the
    ignore value, are skipped) with the dataset palette (plus the ignore colour, named
    ``none_label``), below the panels."""
    from matplotlib.patches import Patch  # lazy: matplotlib is heavy and only needed when drawing

    pal = np.asarray(info.palette if getattr(info, "palette", None) is not None else colorize(np.arange(256)[None])[0])
    classes = [int(c) for c in classes if 0 <= int(c) < len(info.classes)]  # the ignore value etc. are left out
    handles = [Patch(color=pal[min(c, len(pal) - 1)] / 255.0, label=info.classes[c]) for c in classes]
    if none_label:
        ign = int(getattr(info, "ignore_index", 255))
        handles.append(Patch(color=pal[min(ign, len(pal) - 1)] / 255.0, label=none_label))
    fig.legend(handles=handles, loc="lower center", ncol=ncol or min(len(handles), 9), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, -0.02))


def plot_stage_activations(classifier, ds: InMemoryDataset, indices):
    """Rows = images; columns = image, label, conv1..conv5 channel means, CAM."""
    maps = stage_maps(classifier, ds, indices)
    imgs = ds.uint8_images()
    ims, titles = [], []
    cols = [k for k in maps if not k.startswith("_")]
    for r, i in enumerate(indices):
        ims += [imgs[i], colorize(ds.labels[i].numpy(), ds.info.palette)]
        titles += [tag_names(ds.info, ds.tags[i]), "label"]
        for k in cols:
            ims.append(maps[k][r].numpy())
            titles.append(f"{k} mean" if k != "cam" else "CAM")
    return show_grid(ims, titles, ncols=2 + len(cols), size=1.9)


def plot_masks(ds: InMemoryDataset, indices, columns: dict[str, Any], threshold: dict[str, float] | None = None):
    """Rows = images; columns = image, GT foreground, then each named map (float maps drawn as
    heat maps, or thresholded at ``threshold[name]`` when given)."""
    imgs = ds.uint8_images()
    ims, titles = [], []
    for i in indices:
        lab = ds.labels[i].numpy()
        ims += [imgs[i], ((lab != 0) & (lab != 255)).astype(np.float32)]
        titles += [tag_names(ds.info, ds.tags[i]), "GT foreground"]
        for name, maps in columns.items():
            m = np.asarray(maps[i], dtype=np.float32)
            if threshold and name in threshold:
                m = (m >= threshold[name]).astype(np.float32)
            ims.append(overlay(imgs[i], m, alpha=0.55))
            titles.append(name)
    return show_grid(ims, titles, ncols=2 + len(columns), size=2.0)


def plot_segmentations(ds: InMemoryDataset, indices, preds: dict[str, torch.Tensor]):
    """Rows = images; columns = image, GT, then each model's label map."""
    imgs = ds.uint8_images()
    ims, titles = [], []
    for i in indices:
        ims += [imgs[i], colorize(ds.labels[i].numpy(), ds.info.palette)]
        titles += [tag_names(ds.info, ds.tags[i]), "ground truth"]
        for name, p in preds.items():
            ims.append(colorize(p[i].numpy(), ds.info.palette))
            titles.append(name)
    return show_grid(ims, titles, ncols=2 + len(preds), size=1.9)


def markdown_table(rows: list[dict], columns: list[str] | None = None, digits: int = 3) -> str:
    """A list of dicts as a markdown table (for ``IPython.display.Markdown``)."""
    if not rows:
        return ""
    columns = columns or list(rows[0])
    def fmt(v):
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def mask_explorer(maps: dict, ds: InMemoryDataset, indices, row: int, weights: dict[str, float], threshold: float,
                  aggregate: str = "mean"):
    """One image of :func:`stage_maps` output: fuse the stages with ``weights`` (``{stage: w}``, 0 =
    left out), threshold, and draw image / fused map / mask / GT. Returns ``(figure, mask IoU)``."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is heavy and only needed when drawing

    layers = [k for k, w in weights.items() if w > 0]
    if not layers:
        raise InvalidInputError("give at least one layer a weight > 0")
    i = list(indices)[row]
    img = ds.uint8_images()[i]
    st = {k: maps["_stages"][k][row:row + 1] for k in layers}
    fused = fuse_activations(st, layers, [weights[k] for k in layers], aggregate, out_size=img.shape[:2])[0].numpy()
    mask = fused >= threshold
    lab = ds.labels[i].numpy().astype(np.int64)
    iou = float(per_image_iou(mask[None], lab[None])[0])
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
    panels = [(img, "image"), (overlay(img, fused), "fused " + "+".join(layers)),
              (overlay(img, mask.astype(np.float32)), f"mask >= {threshold:.2f}  IoU {iou:.2f}"),
              (((lab != 0) & (lab != 255)).astype(np.float32), "GT foreground")]
    for ax, (im, t) in zip(axes, panels):
        ax.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=1 if im.ndim == 2 else None)
        ax.set_title(t, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig, iou


def crf_explorer(ds: InMemoryDataset, index: int, fused: torch.Tensor, threshold: float, params):
    """Raw thresholded map vs CRF result for one image with ``params``; returns ``(figure, (iou_raw, iou_crf))``."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is heavy and only needed when drawing

    img = ds.uint8_images()[index]
    m = np.asarray(fused[index], dtype=np.float32)
    q = refine_masks([img], m[None], threshold, params, workers=1)[0]
    lab = ds.labels[index].numpy().astype(np.int64)[None]
    iou_raw = float(per_image_iou((m >= threshold)[None], lab)[0])
    iou_crf = float(per_image_iou((q >= 0.5)[None], lab)[0])
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
    panels = [(img, "image"), (overlay(img, m), "fused map"),
              (overlay(img, (m >= threshold).astype(np.float32)), f"raw mask IoU {iou_raw:.2f}"),
              (overlay(img, (q >= 0.5).astype(np.float32)), f"CRF mask IoU {iou_crf:.2f}")]
    for ax, (im, t) in zip(axes, panels):
        ax.imshow(im)
        ax.set_title(t, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig, (iou_raw, iou_crf)


# ------------------------------------------------------------------------------------------ paper 2
def _img(ds, i):
    return ds.images[i].permute(1, 2, 0).numpy()


def _lab(info, lab):
    return colorize(lab.numpy() if torch.is_tensor(lab) else lab, info.palette)


def tag_names(info, tags) -> str:
    return ", ".join(info.classes[i] for i in torch.nonzero(torch.as_tensor(tags) > 0.5).flatten().tolist())


def plot_frames(streets: dict, split: str = "train", indices=None, with_labels: bool = True):
    """Frames (and GT) of ``split`` with their tags as titles; ``indices`` default: 4 frames spread
    evenly over the split (so several clips)."""
    ds, info = streets["data"][split], streets["info"]
    if indices is None:
        indices = sorted({int(v) for v in np.linspace(0, len(ds) - 1, min(4, len(ds)))})
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
    ds, info = streets["data"][split], streets["info"]
    x = ds.images[index:index + 1].float().div(255.0)
    hm = class_heatmaps(classifier, x.to(next(classifier.parameters()).device), layer=layer,
                        normalisation=normalisation)[0].cpu()
    img = _img(ds, index)
    ims = [img] + [overlay(img, hm[k].numpy()) for k in range(info.num_classes)]
    titles = ["frame"] + [f"{c}{'' if ds.tags[index, k] > 0.5 else ' (absent)'}" for k, c in enumerate(info.classes)]
    return show_grid(ims, titles, ncols=min(5, len(ims)))


def plot_heatmap_explorer(classifier, streets: dict, index: int = 0, cls: str = "road", layer: str = "score",
                          normalisation: str = "max", threshold: float = 0.2, split: str = "test", fgbg=None,
                          return_info: bool = False):
    """The notebook-05 explorer view: frame, one class's heatmap, the regions of all tagged classes
    (argmax among tagged, ``threshold``), GT and (optionally) paper 1's single fg/bg mask, with a
    colour legend of the classes in the region and GT panels. ``return_info``: return ``(figure,
    {"coverage": share of pixels given a class, "best_max": the largest tagged heatmap value})``."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is heavy and only needed when drawing

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
    shown = sorted(set(torch.unique(lab).tolist()) | set(torch.unique(ds.labels[index].long()).tolist()))
    class_legend(fig, info, [c for c in shown if 0 <= c < info.num_classes])
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    if not return_info:
        return fig
    tagged = ds.tags[index] > 0.5
    best = float(hm[0, tagged].amax()) if bool(tagged.any()) else 0.0
    return fig, {"coverage": float((lab != info.ignore_index).float().mean()), "best_max": best}


def plot_regions_vs_fgbg(streets: dict, regions: torch.Tensor, fgbg: dict, indices=(0, 1, 2), split: str = "train"):
    """Heatmap regions (all classes) next to paper 1's single fg/bg mask, per frame."""
    ds, info = streets["data"][split], streets["info"]
    ims, titles = [], []
    for i in indices:
        lab = regions_to_label(regions[i:i + 1].float(), info.ignore_index)[0]
        ims += [_img(ds, i), _lab(info, lab), fgbg["masks"][i].float().numpy(), _lab(info, ds.labels[i])]
        titles += [ds.ids[i], "heatmap regions (per class)", "paper 1: fg/bg mask", "ground truth"]
    return show_grid(ims, titles, ncols=4)


def plot_flow_clip(streets: dict, clip_index: int = 0, split: str = "test", frames: int = 4):
    """A clip: frames, GT, colour-wheel flow and the motion stream's input magnitude channel."""
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


def plot_bars(series: dict[str, dict[str, float]], ylabel: str, title: str | None = None, ylim=(0.0, 1.0),
              horizontal: bool = False, separator: float | None = None):
    """Grouped bars: one colour per series (``{series: {category: value}}``, shown in the legend), one
    group per category (the first series' order; a missing value draws no bar). ``horizontal``: for long
    category names; ``separator``: a dashed line between groups (e.g. background | foreground classes)."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is heavy and only needed when drawing

    if not series:
        raise InvalidInputError("plot_bars needs at least one series")
    cats = list(dict.fromkeys(c for v in series.values() for c in v))
    x = np.arange(len(cats))
    w = 0.8 / len(series)
    size = (7, 0.45 * len(cats) + 1.2) if horizontal else (max(6, 0.9 * len(cats)), 3.2)
    fig, ax = plt.subplots(figsize=size)
    for j, (name, vals) in enumerate(series.items()):
        pos = x + j * w - 0.4 + w / 2
        v = [np.nan if vals.get(c) is None else float(vals[c]) for c in cats]
        (ax.barh if horizontal else ax.bar)(pos, v, w, label=name)
    if horizontal:
        ax.set_yticks(x, cats, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
        ax.set_xlim(*ylim)
    else:
        ax.set_xticks(x, cats, rotation=30, fontsize=8, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_ylim(*ylim)
    if separator is not None:
        (ax.axhline if horizontal else ax.axvline)(separator, color="k", lw=0.8, ls="--")
    ax.legend(fontsize=7, ncol=min(len(series), 4))
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_iou_bars(results: dict, info):
    """Grouped bars of per-class IoU for each model (background classes, then foreground)."""
    order = [info.classes[c] for c in list(info.background) + list(info.foreground)]
    series = {k: {n: results[k]["iou"].get(n) or 0.0 for n in order} for k in results}
    return plot_bars(series, "IoU", separator=len(info.background) - 0.5)


def plot_video_strip(models: dict, streets: dict, clip_index: int = 0, split: str = "test", frames: int = 4,
                     label_maps: dict | None = None):
    """A test clip: frames, GT and every model's prediction, one row per frame."""
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
