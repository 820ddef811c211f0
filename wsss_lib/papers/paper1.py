"""Paper 1's pipeline as load-or-compute steps, shared by notebooks 01-04 and ``wsss`` CLI commands.

Each step takes a *run context* (:class:`~wsss_lib.papers.common.RunContext`, or a notebook's
:class:`~wsss_lib.notebook.NotebookContext`: ``data_root``, ``out``, ``device``, ``quick``, ``seed``,
``dataset``) and caches its result under ``<out>`` (:func:`~wsss_lib.papers.common.load_or_train`),
keyed by the step's full config, so notebook 2 reuses notebook 1's classifier, 3 and 4
reuse 2's masks, and the CLI reuses both::

    <out>/checkpoints/tag_classifier.pt       classifier (config stored inside; retrained on mismatch)
    <out>/checkpoints/segnet_<name>.pt        segmentation nets (tags / prior / full / checkmask ...)
    <out>/cache/<dataset>_<split>_<n>.pt      decoded images/labels/tags (uint8 tensors)
    <out>/masks/<split>_<hash>.pt             fused / CAM maps, CRF-refined masks
    <out>/masks/<split>_crf/<id>.png          CRF-refined fg/bg masks as PNGs

Model selection follows evaluation hygiene: thresholds and CRF settings are chosen on VAL; the TEST
split is only evaluated.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.checkpoint import load_checkpoint, save_checkpoint
from ..core.config import preset
from ..core.errors import CheckpointError, InvalidInputError
from ..core.io import atomic_write_bytes, plain_config, read_label, write_masks
from ..data.base import SegmentationDataset
from ..data.transforms import JointTransform
from ..engine.predict import evaluate_classifier, evaluate_segmentation_both, iterate_samples
from ..engine.shard import extract_masks_job
from ..engine.train import InMemoryDataset, preload, train_classifier
from ..models import SegNet, TagClassifier, build_backbone
from ..ops.checkmask import checkmask_decisions, simulate_checkmask
from ..ops.crf import CRFParams
from ..ops.masks import (cam_maps, choose_threshold, evaluate_masks, extract_masks, floor_mask, fuse_activations,
                         per_image_iou, refine_masks, threshold_counts)
from .common import (TOY_DATASETS, complete_checkpoints, config_hash, dataset_split, load_or_train, profile,
                     scaled_steps, state_fingerprint)
from .segmentation import train_segmentation

# ----------------------------------------------------------------------------- data

_DATA_CACHE: dict[tuple, InMemoryDataset] = {}


def _preset(ctx, section: str, **overrides) -> dict:
    """``section`` of the presets for this run's quick flag and profile (toy or paper scale)."""
    return preset(section, ctx.quick, profile(ctx), **overrides)


def streamed(ctx) -> bool:
    """Whether the run streams its data (the "paper" profile: real, variable-size images, read from
    disk by DataLoader workers, cropped for training, scored at full size) instead of preloading it."""
    return profile(ctx) == "paper"


def train_dataset(ctx, section: str, maps: dict | None = None):
    """The training data of a "classifier" or "seg" step: the preloaded train split (toy), or the
    streamed train split with the section's joint transform (random scale, padded crop, flip) and
    extra ``maps`` (``{"fg_mask": folder}``) (paper profile)."""
    if not streamed(ctx):
        return load_split(ctx, "train")
    cfg = _preset(ctx, section)
    if not cfg.get("crop"):
        raise InvalidInputError(f"streamed training needs a crop size in the {section!r} preset")
    ds = load_split(ctx, "train")
    return SegmentationDataset(ds.info, ds.samples, transform=JointTransform(int(cfg["crop"]), tuple(cfg["scale"]),
                                                                             bool(cfg["flip"])), maps=maps)


def split_size(ctx, split: str) -> int | None:
    """How many images of ``split`` a run uses (quick mode: subsets; see the "data" keys of the
    "classifier" / "seg" presets)."""
    p = real_subset(ctx) or _preset(ctx, "seg")
    return {"train": p["n_train"], "val": p["n_val"], "test": p["n_test"]}.get(split)


def real_subset(ctx) -> dict | None:
    """The "real_subset" preset (with the run's ``ctx.real_subset`` overrides) when the run uses a real
    dataset in the toy-sized (preloaded) pipeline (notebooks 01-04 with ``dataset="voc"``...), else None."""
    if streamed(ctx) or ctx.dataset in TOY_DATASETS:
        return None
    return preset("real_subset", ctx.quick, **(getattr(ctx, "real_subset", None) or {}))


def _subset_split(ctx, split: str):
    """``(info, samples)`` of a real dataset's split in the toy-sized pipeline: test = the official
    val split, val = the tail of the official train split held out, train = the rest (see the
    "real_subset" preset)."""
    p = real_subset(ctx)
    if split == "test":
        return dataset_split(ctx, "val")
    info, samples = dataset_split(ctx, "train")
    if len(samples) <= p["n_val"]:
        raise InvalidInputError(f"{ctx.dataset}: {len(samples)} train images cannot give {p['n_val']} held-out VAL "
                                "images and a train set; lower real_subset n_val")
    return info, (samples[-p["n_val"]:] if split == "val" else samples[:-p["n_val"]])


def load_split(ctx, split: str, n: int | None = None, progress: bool = False) -> InMemoryDataset:
    """The first ``n`` images (default :func:`split_size`) of ``split`` as an :class:`InMemoryDataset`
    (cached in memory and under ``<out>/cache``). Toy data is generated on first use. A streamed run
    (:func:`streamed`) gets a full-size :class:`~wsss_lib.data.base.SegmentationDataset` instead
    (nothing preloaded; tags derived from the label maps)."""
    n = split_size(ctx, split) if n is None else n
    key = (str(ctx.data_root), ctx.dataset, split, n, streamed(ctx))
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    info, samples = _subset_split(ctx, split) if real_subset(ctx) else dataset_split(ctx, split)
    if n is not None:
        samples = samples[:n]
    if streamed(ctx):
        _DATA_CACHE[key] = SegmentationDataset(info, samples)
        return _DATA_CACHE[key]
    size = (real_subset(ctx) or {}).get("image_size") or _preset(ctx, "classifier")["image_size"]
    cache = Path(ctx.out) / "cache" / f"{ctx.dataset}_{split}_{len(samples)}_{size}.pt"
    sig = [s.id for s in samples]
    ds = None
    if cache.is_file():
        try:
            st = load_checkpoint(cache)
            if st.get("ids") == sig:
                ds = InMemoryDataset(st["images"], st["labels"], st["tags"], st["ids"], info)
        except CheckpointError:
            ds = None
    if ds is None:
        ds = preload(SegmentationDataset(info, samples, size=tuple(size) if size else None), progress=progress,
                     desc=f"load {split}")
        ds.info = info
        save_checkpoint({"images": ds.images, "labels": ds.labels, "tags": ds.tags, "ids": ds.ids}, cache)
    _DATA_CACHE[key] = ds
    return ds


# ----------------------------------------------------------------------------- classifier

def classifier_config(ctx, **overrides) -> dict:
    """The classifier section of the presets (+ overrides) plus the run's seed, dataset, train size and
    (real data in the toy-sized pipeline) the size its images are resized to: a change of any retrains."""
    cfg = _preset(ctx, "classifier", **overrides)
    cfg.update(seed=int(ctx.seed), dataset=ctx.dataset, n_train=split_size(ctx, "train"))
    sub = real_subset(ctx)
    if sub and sub.get("image_size"):
        cfg["image_size"] = list(sub["image_size"])
    return plain_config(cfg)


def build_backbone_from(cfg: dict):
    if cfg["backbone"] == "small_vgg":
        return build_backbone("small_vgg", widths=cfg["widths"], depths=cfg["depths"])
    return build_backbone(cfg["backbone"], pretrained=cfg.get("pretrained"))


def build_classifier(cfg: dict, num_classes: int):
    """A :class:`~wsss_lib.models.TagClassifier` as described by ``cfg`` (untrained)."""
    torch.manual_seed(int(cfg.get("seed", 0)))
    return TagClassifier(build_backbone_from(cfg), num_classes, pooling=cfg["pooling"], hidden=cfg.get("hidden", 0))


def get_tag_classifier(ctx, retrain: bool = False, progress: bool = True, resume: bool = True,
                       name: str = "tag_classifier", **overrides):
    """Load the run's tag classifier if ``<out>/checkpoints/<name>.pt`` matches the config, else
    train it (resumable). ``overrides`` change the "classifier" preset (:func:`get_cam_classifier` passes
    the CAM baseline's). Returns ``(classifier (eval
    mode), info)`` with ``info = {"config", "trained": bool, "history": {...}, "seconds": float}``."""
    cfg = classifier_config(ctx, **overrides)
    train = train_dataset(ctx, "classifier")
    fg = train.info.foreground
    model = build_classifier(cfg, len(fg))
    path = Path(ctx.out) / "checkpoints" / f"{name}.pt"

    def fit_it():
        return train_classifier(model, train, classes=fg, steps=cfg["steps"], batch_size=cfg["batch_size"],
                                lr=cfg["lr"], optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"],
                                momentum=cfg.get("momentum", 0.9), workers=cfg.get("workers", 0),
                                device=ctx.device, seed=ctx.seed, checkpoint_path=path, resume=resume and not retrain,
                                config=cfg, progress=progress, checkpoint_every=max(50, cfg["steps"] // 4))

    return model, load_or_train(path, cfg, model, fit_it, ctx.device, retrain, "tag classifier")


def cam_classifier_overrides(ctx) -> dict:
    """The CAM baseline classifier's settings over the "classifier" preset: the ``cam_classifier`` section
    (global average pooling + one linear layer [paper: CAM], its own VAL-chosen steps; a None there keeps
    the classifier's value)."""
    return {k: v for k, v in _preset(ctx, "cam_classifier").items() if v is not None}


def get_cam_classifier(ctx, progress: bool = True, name: str = "cam_classifier", **overrides):
    """Zhou et al.'s CAM classifier (:func:`cam_classifier_overrides`, then ``overrides``, e.g. ``steps``
    of a VAL grid), loaded or trained like :func:`get_tag_classifier`. Returns ``(classifier, info)``."""
    return get_tag_classifier(ctx, progress=progress, name=name, **{**cam_classifier_overrides(ctx), **overrides})


# ----------------------------------------------------------------------------- masks

def mask_config(ctx, **overrides) -> dict:
    return plain_config(_preset(ctx, "masks", **overrides))


def crf_params(ctx, **overrides):
    """:class:`~wsss_lib.ops.crf.CRFParams` from the "crf" preset (+ overrides)."""
    p = _preset(ctx, "crf", **overrides)
    return CRFParams(**{k: v for k, v in p.items() if k in CRFParams.__dataclass_fields__})


def compute_masks(ctx, classifier, split: str, progress: bool = False, **overrides) -> dict[str, torch.Tensor]:
    """Fused fg/bg maps and CAM maps of ``split`` (one forward pass per batch), cached under
    ``<out>/masks``: ``{"fused": float (N, H, W) [0, 1], "cam": float (N, H, W) [0, 1],
    "logits": (N, K)}``. CAM uses the image tags (as the weak supervision provides them)."""
    mcfg = mask_config(ctx, **overrides)
    ds = load_split(ctx, split)
    fg = ds.info.foreground
    key = {"masks": mcfg, "classifier": state_fingerprint(classifier), "split": split, "ids": len(ds)}
    path = Path(ctx.out) / "masks" / f"{split}_{config_hash(key)}.pt"
    if path.is_file():
        try:
            st = load_checkpoint(path)
            return {k: (v.float() if v.is_floating_point() else v) for k, v in st["maps"].items()}
        except CheckpointError:
            pass
    out = extract_masks(classifier, ds.images.float().div(255.0), ds.tags[:, fg], layers=mcfg["layers"],
                        weights=mcfg["weights"], aggregate=mcfg["aggregate"], normalize=mcfg["normalize"],
                        align=mcfg["align"], normalize_each=mcfg["normalize_each"], device=ctx.device,
                        progress=progress, cam_normalize=mcfg["cam_normalize"])
    stored = {k: v.half() if k != "logits" else v for k, v in out.items()}
    save_checkpoint({"maps": stored, "key": plain_config(key)}, path)
    # return exactly what a later cache hit returns (float16-rounded), so downstream caches agree
    return {k: v.float() for k, v in stored.items()}


def choose_thresholds(ctx, val_maps: dict[str, torch.Tensor]) -> dict[str, float]:
    """Thresholds of the fused map and of CAM with the best pooled mask IoU on VAL."""
    val = load_split(ctx, "val")
    grid = _preset(ctx, "masks")["thresholds"]
    return {name: choose_threshold(val_maps[name], val.labels.long(), grid)[0] for name in ("fused", "cam")}


def refine_split(ctx, split: str, maps: torch.Tensor, threshold: float, params=None, write_png: bool = False,
                 progress: bool = False) -> np.ndarray:
    """CRF-refined fg probabilities ``(N, H, W)`` for ``split`` (cached). ``write_png`` also saves
    the thresholded masks as ``<out>/masks/<split>_crf/<id>.png``."""
    params = params if params is not None else crf_params(ctx)
    ds = load_split(ctx, split)
    key = {"maps": float(maps.double().sum()), "n": len(ds), "t": float(threshold), "crf": params.to_dict(),
           "split": split}
    path = Path(ctx.out) / "masks" / f"{split}_crf_{config_hash(key)}.pt"
    q = None
    if path.is_file():
        try:
            q = load_checkpoint(path)["probs"].float().numpy()
        except CheckpointError:
            q = None
    if q is None:
        q = refine_masks(ds.uint8_images(), maps, threshold, params, workers=_preset(ctx, "crf")["workers"],
                         progress=progress, device=ctx.device)
        stored = torch.from_numpy(q).half()
        save_checkpoint({"probs": stored, "key": plain_config(key)}, path)
        # return exactly what a later cache hit returns (float16-rounded): masks binarised at 0.5, and the
        # nets keyed by their fingerprint, then agree between the run that computed them and every later one
        q = stored.float().numpy()
    if write_png:
        write_masks(Path(ctx.out) / "masks" / f"{split}_crf", ds.ids, list(q >= 0.5))
    return q


def streamed_masks(ctx, classifier, progress: bool = False) -> dict[str, Any]:
    """The mask step on streamed (real, full-size) data, resumable after a kill:

    1. the threshold of the fused map with the best pooled mask IoU over the first ``n_threshold``
       VAL images (counts summed image by image), stored in ``<folder>/threshold.json``;
    2. CRF-refined fg/bg masks of every train image and of those VAL images, written once per image
       as ``<folder>/<split>/<id>.png`` (0/1) by :func:`~wsss_lib.engine.shard.extract_masks_job`
       (sharded under torchrun, finished images skipped on a re-run);
    3. the VAL mask IoU of the raw fused map (at the threshold) and of the CRF masks.

    ``<folder>`` = ``<out>/masks/streamed_<hash of masks + crf presets + classifier weights>``.
    Returns ``{"thresholds": {"fused": t}, "scores": {"val": {"fused": {"iou"}, "fused_crf": {"iou"}}},
    "dirs": {"train": Path, "val": Path}, "n_val": int}``.
    """
    mcfg = mask_config(ctx)
    params = crf_params(ctx)
    fuse_kw = {k: mcfg[k] for k in ("layers", "weights", "aggregate", "normalize", "align", "normalize_each")}
    key = {"masks": mcfg, "crf": params.to_dict(), "classifier": state_fingerprint(classifier), "dataset": ctx.dataset,
           "n_train": split_size(ctx, "train")}
    folder = Path(ctx.out) / "masks" / f"streamed_{config_hash(key)}"
    val = load_split(ctx, "val")
    n_th = len(val) if mcfg["n_threshold"] is None else min(int(mcfg["n_threshold"]), len(val))
    val = val.subset(range(n_th))
    grid = mcfg["thresholds"]
    th_file = folder / "threshold.json"
    if th_file.is_file():
        chosen = json.loads(th_file.read_text())
    else:
        counts = np.zeros((len(grid), 2), np.int64)
        for s in iterate_samples(val, progress=progress, desc="VAL threshold"):
            fused = extract_masks(classifier, s["image"][None], None, device=ctx.device, **fuse_kw)["fused"][0]
            counts += threshold_counts(fused, s["label"], grid)
        t, scores = choose_threshold(None, None, grid, counts=counts)
        chosen = {"threshold": t, "val_iou": scores[t], "scores": {str(k): v for k, v in scores.items()}, "n_val": n_th}
        atomic_write_bytes(th_file, json.dumps(chosen, indent=2).encode())
    dirs = {"train": folder / "train", "val": folder / "val"}
    for split, ds in (("train", load_split(ctx, "train")), ("val", val)):
        extract_masks_job(classifier, ds, dirs[split], threshold=chosen["threshold"], crf=params,
                          batch_size=mcfg["batch_size"], device=ctx.device, crf_workers=params_workers(ctx),
                          progress=progress, **fuse_kw)
    crf_counts = np.zeros((1, 2), np.int64)
    for i, sid in enumerate(val.ids):
        crf_counts += threshold_counts(read_label(dirs["val"] / f"{sid}.png").astype(np.float32),
                                       val.load_arrays(i)[1], [0.5])
    return {"thresholds": {"fused": chosen["threshold"]}, "dirs": dirs, "n_val": n_th,
            "scores": {"val": {"fused": {"iou": chosen["val_iou"]},
                               "fused_crf": {"iou": float(crf_counts[0, 0] / max(1, crf_counts[0, 1]))}}}}


def params_workers(ctx) -> int | None:
    """CRF worker processes of the run (the "crf" preset's ``workers``; None = every core)."""
    return _preset(ctx, "crf")["workers"]


def mask_pipeline(ctx, classifier, progress: bool = False) -> dict[str, Any]:
    """Everything notebooks 2-4 need: VAL-chosen thresholds, fused/CAM maps and CRF masks for
    val/test/train, and their mask scores. Returns a dict with keys ``thresholds``, ``maps``
    ({split: {...}}), ``crf`` ({split: (N, H, W) probs}), ``scores`` ({split: {method: scores}}).
    A streamed run (real data) returns :func:`streamed_masks` instead (masks as PNG folders)."""
    if streamed(ctx):
        return streamed_masks(ctx, classifier, progress)
    maps = {s: compute_masks(ctx, classifier, s, progress=progress) for s in ("val", "test", "train")}
    th = choose_thresholds(ctx, maps["val"])
    crf = {s: refine_split(ctx, s, maps[s]["fused"], th["fused"], write_png=(s == "train"), progress=progress)
           for s in ("val", "test", "train")}
    scores = {}
    for s in ("val", "test"):
        lab = load_split(ctx, s).labels.long()
        scores[s] = {"fused": evaluate_masks(maps[s]["fused"] >= th["fused"], lab),
                     "fused_crf": evaluate_masks(crf[s] >= 0.5, lab),
                     "cam": evaluate_masks(maps[s]["cam"] >= th["cam"], lab),
                     "floor": evaluate_masks(floor_mask(lab.shape), lab)}
    return {"thresholds": th, "maps": maps, "crf": crf, "scores": scores}


def cam_baseline_maps(ctx, classifier, split: str) -> torch.Tensor:
    """CAMs of the tagged classes of ``split``, each min-max normalised, max over classes: float
    ``(N, H, W)`` in [0, 1] (cached with the masks, :func:`compute_masks`)."""
    return compute_masks(ctx, classifier, split, cam_normalize="minmax")["cam"]


def cam_baseline_threshold(ctx, val_maps: torch.Tensor) -> tuple[float, float]:
    """``(threshold, VAL IoU)``: the grid threshold of the "masks" preset with the best pooled VAL mask IoU."""
    th, ious = choose_threshold(val_maps, load_split(ctx, "val").labels.long(), _preset(ctx, "masks")["thresholds"])
    return th, ious[th]


def cam_baseline(ctx, progress: bool = False, splits=("val", "test")) -> dict:
    """Zhou et al.'s CAM as the baseline of the prior [paper: CAM, Zhou et al. 2016]: a second tag
    classifier with the CAM layout (:func:`get_cam_classifier`: same backbone and data, its own VAL-chosen steps),
    its class activation maps of the tagged classes (min-max normalised per class, max over
    classes), the threshold chosen on VAL, and the TEST masks raw and after the same dense CRF as
    the prior. Returns ``{"classifier", "maps": {split: (N, H, W) [0, 1]}, "threshold",
    "crf": {"test": (N, H, W) probs}, "scores": {"test": {"cam": ..., "cam_crf": ...}}}``."""
    clf, _ = get_cam_classifier(ctx, progress=progress)
    maps = {s: cam_baseline_maps(ctx, clf, s) for s in splits}
    th = cam_baseline_threshold(ctx, maps["val"])[0]
    crf = refine_split(ctx, "test", maps["test"], th, progress=progress)
    lab = load_split(ctx, "test").labels.long()
    return {"classifier": clf, "maps": maps, "threshold": th, "crf": {"test": crf},
            "scores": {"test": {"cam": evaluate_masks(maps["test"] >= th, lab),
                                "cam_crf": evaluate_masks(crf >= 0.5, lab)}}}


# ----------------------------------------------------------------------------- segmentation

def seg_config(ctx, mode: str, **overrides) -> dict:
    cfg = _preset(ctx, "seg", **{k: v for k, v in overrides.items() if k in _preset(ctx, "seg")})
    cfg.pop("mode_steps")  # the mode's own steps are in "steps" (seg_run): other modes' schedules are not its config
    cfg.pop("mode_lr", None)  # likewise its own learning rate is in "lr"
    if mode != "prior":  # the present-class term is part of the prior loss only: not the other modes' config
        cfg["present_term"] = 0.0
    cfg.update(mode=mode, seed=int(ctx.seed), dataset=ctx.dataset)
    extra = {k: v for k, v in overrides.items() if k not in cfg}
    cfg.update(extra)
    return plain_config(cfg)


def build_segnet(cfg: dict, clf_cfg: dict, num_classes: int):
    """A SegNet on the classifier's backbone architecture (its weights come from the classifier,
    :meth:`~wsss_lib.models.SegNet.init_from_classifier`, or a checkpoint: nothing is downloaded)."""
    torch.manual_seed(int(cfg.get("seed", 0)))
    return SegNet(build_backbone_from({**clf_cfg, "pretrained": None}), num_classes, head=cfg["head"], width=cfg["head_width"],
                  dilation=cfg["dilation"], dropout=cfg["dropout"])


def get_segnet(ctx, name: str, mode: str, classifier, masks=None, accepted=None, retrain: bool = False,
               progress: bool = True, resume: bool = True, **overrides):
    """Load ``<out>/checkpoints/segnet_<name>.pt`` if its config matches, else train a SegNet
    (backbone initialised from ``classifier``) with ``mode`` "prior" | "tags" | "full".
    ``masks`` (N, H, W) in [0, 1] for "prior"; ``accepted`` (N,) for check-mask. Returns
    ``(model, info)``."""
    clf_cfg = classifier_config(ctx)
    cfg = seg_config(ctx, mode, **overrides)
    if streamed(ctx):  # masks: the folder of the train masks' PNGs (its name holds their config hash)
        train = train_dataset(ctx, "seg", maps=None if masks is None else {"fg_mask": Path(masks)})
        if masks is not None:
            cfg["masks_fingerprint"] = Path(masks).parent.name
    else:
        train = load_split(ctx, "train")
    if masks is not None and not streamed(ctx):
        cfg["masks_fingerprint"] = float(torch.as_tensor(np.asarray(masks, dtype=np.float32)).double().sum())
    if accepted is not None:
        cfg["accepted_fingerprint"] = int(np.asarray(accepted).sum())
    cfg["classifier"] = state_fingerprint(classifier)
    cfg = plain_config(cfg)
    num_classes = train.info.num_classes
    model = build_segnet(cfg, clf_cfg, num_classes)
    path = Path(ctx.out) / "checkpoints" / f"segnet_{name}.pt"
    m = None if masks is None or streamed(ctx) else torch.as_tensor(np.asarray(masks, dtype=np.float32))

    def fit_it():
        model.init_from_classifier(classifier)
        return train_segmentation(model, train, mode, masks=m, accepted=accepted, pooling=cfg["pooling"],
                                  momentum=cfg.get("momentum", 0.9), workers=cfg.get("workers", 0),
                                  tag_pooling=cfg["tag_pooling"], rejected=cfg["rejected"],
                                  present_term=cfg["present_term"], steps=cfg["steps"],
                                  batch_size=cfg["batch_size"], lr=cfg["lr"], optimizer=cfg["optimizer"],
                                  weight_decay=cfg["weight_decay"], head_lr_mult=cfg["head_lr_mult"], device=ctx.device,
                                  seed=ctx.seed, checkpoint_path=path, resume=resume and not retrain, config=cfg,
                                  progress=progress, checkpoint_every=max(50, cfg["steps"] // 4), desc=f"seg[{name}]")

    return model, load_or_train(path, cfg, model, fit_it, ctx.device, retrain, name)


def evaluate_segnet(ctx, model, split: str = "test", crf: bool = True, return_predictions: bool = False) -> dict:
    """mIoU / per-class IoU on ``split`` without and with CRF post-processing.

    Returns ``{"miou", "iou": {class: IoU}, "miou_crf", "iou_crf", ...}`` (+ predictions)."""
    ds = load_split(ctx, split)
    params = crf_params(ctx) if crf else None
    res = evaluate_segmentation_both(model, ds, ds.info.num_classes, params, device=ctx.device,
                                     workers=params_workers(ctx), return_predictions=return_predictions,
                                     io_workers=_preset(ctx, "seg").get("workers", 0) if streamed(ctx) else 0)
    raw = res["raw"].summary(ds.info.classes)
    out = {"miou": raw["miou"], "iou": raw["iou"], "pixel_acc": raw["pixel_acc"]}
    if res["crf"] is not None:
        c = res["crf"].summary(ds.info.classes)
        out.update(miou_crf=c["miou"], iou_crf=c["iou"], pixel_acc_crf=c["pixel_acc"])
    if return_predictions:
        out["pred"] = res["pred"]
        out["pred_crf"] = res.get("pred_crf")
    return out


SEG_KINDS = ("prior", "tags", "full", "checkmask")


def train_masks(ctx, classifier, progress: bool = False) -> torch.Tensor:
    """The training masks of paper 1: CRF-refined fused maps of the train split, binarised (N, H, W);
    a streamed run: the folder of their ``<id>.png`` files (:func:`streamed_masks`)."""
    mp = mask_pipeline(ctx, classifier, progress=progress)
    if streamed(ctx):
        return mp["dirs"]["train"]
    return torch.from_numpy(mp["crf"]["train"] >= 0.5).float()


def checkmask_acceptance(ctx, masks, tau: float | None = None, progress: bool = False) -> dict:
    """Simulated check-mask clicks on the train masks (:func:`wsss_lib.ops.checkmask.simulate_checkmask`):
    ``masks`` (N, H, W) of the preloaded train split, or on streamed data the folder of their
    ``<id>.png`` (0/1) files, each compared with its full-size label image by image."""
    tau = _preset(ctx, "seg")["tau"] if tau is None else tau
    train = load_split(ctx, "train")
    if not streamed(ctx):
        return simulate_checkmask(masks, train.labels.long(), tau=tau)
    pairs = SegmentationDataset(train.info, train.samples, maps={"fg_mask": Path(masks)})

    def iou(i):  # reads the label and the mask only, not the image
        lab = pairs.load_label(i)
        if lab is None:
            raise InvalidInputError(f"check-mask needs train labels; {pairs.samples[i].id} has none")
        m = torch.from_numpy(pairs.load_map("fg_mask", i, lab.shape))
        return per_image_iou(m[None] == 1, torch.from_numpy(lab)[None], train.info.ignore_index)[0]

    idx = range(len(pairs))
    return checkmask_decisions([iou(i) for i in (tqdm(idx, desc="check-mask clicks", leave=False)
                                                  if progress else idx)], tau=tau)


def mode_steps(ctx, mode: str) -> int:
    """Training steps of seg ``mode`` ("prior" | "tags" | "full"): the "seg" preset's ``mode_steps``
    (chosen on VAL), else its ``steps``."""
    p = _preset(ctx, "seg")
    return int(p["mode_steps"].get(mode, p["steps"]))


def mode_lr(ctx, mode: str) -> float:
    """Learning rate of seg ``mode`` ("prior" | "tags" | "full"): the "seg" preset's ``mode_lr``
    (chosen on VAL with the steps), else its ``lr``."""
    p = _preset(ctx, "seg")
    return float(p.get("mode_lr", {}).get(mode, p["lr"]))


def seg_run(ctx, kind: str, classifier=None, pooling: str | None = None, name: str | None = None,
            progress: bool = True, retrain: bool = False, resume: bool = True, **overrides):
    """Load or train one of paper 1's segmentation nets: ``kind`` "prior" (fg/bg prior loss),
    "tags" (tags only), "full" (pixel labels) or "checkmask" (prior loss, mask term only on the
    images a simulated annotator accepted). Returns ``(model, info)``; ``info["checkmask"]`` holds
    the clicks / acceptance rate for "checkmask"."""
    if kind not in SEG_KINDS:
        raise InvalidInputError(f"kind must be one of {SEG_KINDS}, got {kind!r}")
    if classifier is None:
        classifier, _ = get_tag_classifier(ctx, progress=progress)
    masks = accepted = None
    extra = {}
    if kind in ("prior", "checkmask"):
        masks = train_masks(ctx, classifier)
    if kind == "checkmask":
        cm = checkmask_acceptance(ctx, masks, overrides.get("tau"), progress=progress)
        accepted = torch.from_numpy(cm["accepted"].astype(np.float32))
        extra = {"clicks": cm["clicks"], "accept_rate": cm["accept_rate"]}
    if pooling is not None:
        overrides["pooling"] = pooling
    name = name or (kind if pooling is None else f"{kind}_{pooling}")
    mode = "prior" if kind == "checkmask" else kind
    if "steps" not in overrides:  # the mode's VAL-chosen schedule ("seg" preset) x ctx.steps_scale, <= ctx.steps_cap
        overrides["steps"] = scaled_steps(mode_steps(ctx, mode), ctx.steps_scale, ctx.steps_cap)
    if "lr" not in overrides:
        overrides["lr"] = mode_lr(ctx, mode)
    model, info = get_segnet(ctx, name, mode, classifier, masks=masks, accepted=accepted, retrain=retrain,
                             progress=progress, resume=resume, **overrides)
    info["checkmask"] = extra
    return model, info


def load_trained_segnets(ctx) -> dict[str, Any]:
    """Every complete ``segnet_*.pt`` under ``<out>/checkpoints`` rebuilt from its stored config."""
    out = {}
    for path, st in complete_checkpoints(ctx.checkpoints, "segnet_*.pt", ctx.device):
        cfg = st["config"]
        train = load_split(ctx, "train")
        model = build_segnet(cfg, classifier_config(ctx), train.info.num_classes)
        try:
            model.load_state_dict(st["model"])
        except RuntimeError as exc:
            print(f"[wsss] skipping {path}: it was trained with another architecture ({str(exc).splitlines()[0]})")
            continue
        out[path.stem[len("segnet_"):]] = model.to(ctx.device).eval()
    return out


@torch.no_grad()
def stage_maps(classifier, ds: InMemoryDataset, indices, stages=("conv1", "conv2", "conv3", "conv4", "conv5")):
    """Channel-mean activation of every stage, upsampled and min-max normalised ``{stage: (n, H, W)}``,
    plus ``"cam"`` (CAM of the tagged classes), for ``indices`` (one forward pass)."""
    idx = list(indices)
    x = ds.images[idx].float().div(255.0).to(next(classifier.parameters()).device)
    classifier.eval()
    out = classifier(x, return_stages=tuple(stages))
    size = tuple(x.shape[-2:])
    maps = {s: fuse_activations(out["stages"], (s,), out_size=size).cpu() for s in stages}
    maps["cam"] = cam_maps(out["score_maps"], ds.tags[idx][:, ds.info.foreground].to(x.device), size).cpu()
    maps["_stages"] = {k: v.float().cpu() for k, v in out["stages"].items()}
    return maps


# ----------------------------------------------------------------------------- the whole pipeline

# paper 1's reported VOC 2012 numbers [summary, papers README]: from tags only
PAPER1_REPORTED = {"val_miou": 0.466, "test_miou": 0.480, "val_miou_checkmask": 0.515}


REPRODUCE_BASELINES = {"tags": "segmentation (tags only, no prior) [baseline]",
                       "full": "segmentation (fully supervised) [upper bound]",
                       "checkmask": "segmentation (fg/bg prior + check-mask, simulated annotator)"}


def reproduce(ctx, pretrained: str | None = None, steps_scale: float = 1.0, progress: bool = True,
              split: str = "val", baselines: Sequence[str] = ()) -> dict[str, Any]:
    """Paper 1 end to end, each step a cached load-or-compute (a killed run resumes where it stopped):
    tag classifier -> fg/bg masks (conv4 + conv5, 2-label CRF; written per image, resumable) ->
    DeepLab-LargeFOV with the fg/bg prior loss -> evaluation on ``split`` without and with the
    test-time CRF. ``pretrained``: the classifier's ImageNet weights (a path or "imagenet"; None =
    the preset's). ``steps_scale`` multiplies every training's steps. ``baselines``: also train and
    score the same network from tags only (``"tags"``), fully supervised (``"full"``, the upper
    bound) and with the prior plus check-mask clicks (``"checkmask"``: the paper's extra supervision,
    an annotator simulated from the train labels, ``tau`` of the "seg" preset), same schedule rule and
    evaluation, as rows of the table (``metrics["seg_<mode>"]``).

    Returns ``{"rows": [{"step", "metric", "measured", "paper"}], "metrics": {...}, "seconds": {...}}``.
    """
    unknown = set(baselines) - set(REPRODUCE_BASELINES)
    if unknown:
        raise InvalidInputError(f"unknown baseline(s) {sorted(unknown)}; known: {sorted(REPRODUCE_BASELINES)}")
    seconds, metrics = {}, {}
    t0 = time.time()
    over = {} if pretrained is None else {"pretrained": None if str(pretrained).lower() == "none" else pretrained}
    clf_steps = _preset(ctx, "classifier")["steps"]
    if steps_scale != 1.0:
        over["steps"] = scaled_steps(clf_steps, steps_scale)
    clf, info = get_tag_classifier(ctx, progress=progress, **over)
    val = load_split(ctx, split)
    ev = evaluate_classifier(clf, val, classes=val.info.foreground, device=ctx.device)
    metrics["classifier"] = {"map": ev["map"], "steps": info["config"]["steps"], "trained_now": info["trained"]}
    seconds["classifier"] = time.time() - t0
    t0 = time.time()
    mp = mask_pipeline(ctx, clf, progress=progress)
    metrics["masks"] = {"threshold": mp["thresholds"]["fused"], **{k: v["iou"] for k, v in mp["scores"]["val"].items()}}
    seconds["masks"] = time.time() - t0
    t0 = time.time()
    seg_over = {"steps": scaled_steps(mode_steps(ctx, "prior"), steps_scale)}
    model, sinfo = seg_run(ctx, "prior", clf, progress=progress, **seg_over)
    seconds["seg_train"] = time.time() - t0
    t0 = time.time()
    res = evaluate_segnet(ctx, model, split, crf=True)
    seconds["seg_eval"] = time.time() - t0
    metrics["seg"] = {"miou": res["miou"], "miou_crf": res["miou_crf"], "iou": res["iou"], "iou_crf": res["iou_crf"],
                      "steps": sinfo["config"]["steps"], "trained_now": sinfo["trained"]}
    ref = PAPER1_REPORTED["val_miou"] if split == "val" else None
    n = len(val)
    rows = [
        {"step": "tag classifier", "metric": f"{split.upper()} mAP ({n} images)", "measured": ev["map"], "paper": None},
        {"step": "fg/bg mask (fused conv layers)", "metric": f"{split.upper()} mask IoU ({mp['n_val']} images)",
         "measured": metrics["masks"]["fused"], "paper": None},
        {"step": "fg/bg mask + 2-label CRF", "metric": f"{split.upper()} mask IoU ({mp['n_val']} images)",
         "measured": metrics["masks"]["fused_crf"], "paper": None},
        {"step": "segmentation (fg/bg prior)", "metric": f"{split.upper()} mIoU ({n} images, full size)",
         "measured": res["miou"], "paper": ref},
        {"step": "segmentation + test-time CRF", "metric": f"{split.upper()} mIoU ({n} images, full size)",
         "measured": res["miou_crf"], "paper": ref},
    ]
    seg_cfgs = {"prior": sinfo["config"]}
    for mode in baselines:
        t0 = time.time()
        m, binfo = seg_run(ctx, mode, clf, progress=progress,
                           steps=scaled_steps(mode_steps(ctx, "prior" if mode == "checkmask" else mode), steps_scale))
        r = evaluate_segnet(ctx, m, split, crf=True)
        seconds[f"seg_{mode}"] = time.time() - t0
        seg_cfgs[mode] = binfo["config"]
        metrics[f"seg_{mode}"] = {"miou": r["miou"], "miou_crf": r["miou_crf"], "iou": r["iou"], "iou_crf": r["iou_crf"],
                                  "steps": binfo["config"]["steps"], "trained_now": binfo["trained"],
                                  **binfo["checkmask"]}
        ref_mode = PAPER1_REPORTED["val_miou_checkmask"] if mode == "checkmask" and split == "val" else None
        for suffix, key in (("", "miou"), (" + test-time CRF", "miou_crf")):
            rows.append({"step": REPRODUCE_BASELINES[mode] + suffix,
                         "metric": f"{split.upper()} mIoU ({n} images, full size)", "measured": r[key],
                         "paper": ref_mode})
    return {"rows": rows, "metrics": metrics, "seconds": seconds,
            "config": {"dataset": ctx.dataset, "profile": profile(ctx), "quick": ctx.quick, "seed": ctx.seed,
                       "device": str(ctx.device), "steps_scale": steps_scale,
                       "classifier": info["config"], "seg": sinfo["config"], "seg_modes": seg_cfgs,
                       "masks": mask_config(ctx),
                       "crf": crf_params(ctx).to_dict()}}
