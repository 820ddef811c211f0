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

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.checkpoint import load_checkpoint, save_checkpoint
from ..core.config import preset
from ..core.errors import CheckpointError, InvalidInputError
from ..core.io import plain_config, write_masks
from ..data.base import SegmentationDataset
from ..engine.predict import evaluate_segmentation_both
from ..engine.train import InMemoryDataset, preload, train_classifier
from ..models import SegNet, TagClassifier, build_backbone
from ..ops.checkmask import simulate_checkmask
from ..ops.crf import CRFParams
from ..ops.masks import (cam_maps, choose_threshold, evaluate_masks, extract_masks, floor_mask, fuse_activations,
                         refine_masks)
from .common import complete_checkpoints, config_hash, dataset_split, load_or_train, state_fingerprint
from .segmentation import train_segmentation

# ----------------------------------------------------------------------------- data

_DATA_CACHE: dict[tuple, InMemoryDataset] = {}


def split_size(ctx, split: str) -> int | None:
    """How many images of ``split`` a run uses (quick mode: subsets; see the "data" keys of the
    "classifier" / "seg" presets)."""
    p = preset("seg", ctx.quick)
    return {"train": p["n_train"], "val": p["n_val"], "test": p["n_test"]}.get(split)


def load_split(ctx, split: str, n: int | None = None, progress: bool = False) -> InMemoryDataset:
    """The first ``n`` images (default :func:`split_size`) of ``split`` as an :class:`InMemoryDataset`
    (cached in memory and under ``<out>/cache``). Toy data is generated on first use."""
    n = split_size(ctx, split) if n is None else n
    key = (str(ctx.data_root), ctx.dataset, split, n)
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    info, samples = dataset_split(ctx, split)
    if n is not None:
        samples = samples[:n]
    size = preset("classifier", ctx.quick)["image_size"]
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
    """The classifier section of the presets (+ overrides) plus the run's seed and dataset."""
    cfg = preset("classifier", ctx.quick, **overrides)
    cfg.update(seed=int(ctx.seed), dataset=ctx.dataset, n_train=split_size(ctx, "train"))
    return plain_config(cfg)


def build_backbone_from(cfg: dict):
    if cfg["backbone"] == "small_vgg":
        return build_backbone("small_vgg", widths=cfg["widths"], depths=cfg["depths"])
    return build_backbone(cfg["backbone"], pretrained=cfg.get("pretrained"))


def build_classifier(cfg: dict, num_classes: int):
    """A :class:`~wsss_lib.models.TagClassifier` as described by ``cfg`` (untrained)."""
    torch.manual_seed(int(cfg.get("seed", 0)))
    return TagClassifier(build_backbone_from(cfg), num_classes, pooling=cfg["pooling"], hidden=cfg.get("hidden", 0))


# Zhou et al. 2016's CAM layout: global average pooling + ONE linear layer on the last conv stage, so
# the 1x1-conv score maps are the class activation maps (the faithful CAM baseline [paper: CAM])
CAM_CLASSIFIER = {"pooling": "mean", "hidden": 0}


def get_tag_classifier(ctx, retrain: bool = False, progress: bool = True, resume: bool = True,
                       name: str = "tag_classifier", **overrides):
    """Load the run's tag classifier if ``<out>/checkpoints/<name>.pt`` matches the config, else
    train it (resumable). ``overrides`` change the "classifier" preset (e.g. ``**CAM_CLASSIFIER``
    with ``name="cam_classifier"`` for the faithful CAM baseline). Returns ``(classifier (eval
    mode), info)`` with ``info = {"config", "trained": bool, "history": {...}, "seconds": float}``."""
    cfg = classifier_config(ctx, **overrides)
    train = load_split(ctx, "train")
    fg = train.info.foreground
    model = build_classifier(cfg, len(fg))
    path = Path(ctx.out) / "checkpoints" / f"{name}.pt"

    def fit_it():
        return train_classifier(model, train, classes=fg, steps=cfg["steps"], batch_size=cfg["batch_size"],
                                lr=cfg["lr"], optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"],
                                device=ctx.device, seed=ctx.seed, checkpoint_path=path, resume=resume and not retrain,
                                config=cfg, progress=progress, checkpoint_every=max(50, cfg["steps"] // 4))

    return model, load_or_train(path, cfg, model, fit_it, ctx.device, retrain, "tag classifier")


# ----------------------------------------------------------------------------- masks

def mask_config(ctx, **overrides) -> dict:
    return plain_config(preset("masks", ctx.quick, **overrides))


def crf_params(ctx, **overrides):
    """:class:`~wsss_lib.ops.crf.CRFParams` from the "crf" preset (+ overrides)."""
    p = preset("crf", ctx.quick, **overrides)
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
    grid = preset("masks", ctx.quick)["thresholds"]
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
        q = refine_masks(ds.uint8_images(), maps, threshold, params, workers=preset("crf", ctx.quick)["workers"],
                         progress=progress, device=ctx.device)
        save_checkpoint({"probs": torch.from_numpy(q).half(), "key": plain_config(key)}, path)
    if write_png:
        write_masks(Path(ctx.out) / "masks" / f"{split}_crf", ds.ids, list(q >= 0.5))
    return q


def mask_pipeline(ctx, classifier, progress: bool = False) -> dict[str, Any]:
    """Everything notebooks 2-4 need: VAL-chosen thresholds, fused/CAM maps and CRF masks for
    val/test/train, and their mask scores. Returns a dict with keys ``thresholds``, ``maps``
    ({split: {...}}), ``crf`` ({split: (N, H, W) probs}), ``scores`` ({split: {method: scores}})."""
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


def cam_baseline(ctx, progress: bool = False, splits=("val", "test")) -> dict:
    """Zhou et al.'s CAM as the baseline of the prior [paper: CAM, Zhou et al. 2016]: a second tag
    classifier with the CAM layout (:data:`CAM_CLASSIFIER`, same backbone, data and schedule),
    its class activation maps of the tagged classes (min-max normalised per class, max over
    classes), the threshold chosen on VAL, and the TEST masks raw and after the same dense CRF as
    the prior. Returns ``{"classifier", "maps": {split: (N, H, W) [0, 1]}, "threshold",
    "crf": {"test": (N, H, W) probs}, "scores": {"test": {"cam": ..., "cam_crf": ...}}}``."""
    clf, _ = get_tag_classifier(ctx, progress=progress, name="cam_classifier", **CAM_CLASSIFIER)
    maps = {s: compute_masks(ctx, clf, s, cam_normalize="minmax")["cam"] for s in splits}
    grid = preset("masks", ctx.quick)["thresholds"]
    th = choose_threshold(maps["val"], load_split(ctx, "val").labels.long(), grid)[0]
    crf = refine_split(ctx, "test", maps["test"], th, progress=progress)
    lab = load_split(ctx, "test").labels.long()
    return {"classifier": clf, "maps": maps, "threshold": th, "crf": {"test": crf},
            "scores": {"test": {"cam": evaluate_masks(maps["test"] >= th, lab),
                                "cam_crf": evaluate_masks(crf >= 0.5, lab)}}}


# ----------------------------------------------------------------------------- segmentation

def seg_config(ctx, mode: str, **overrides) -> dict:
    cfg = preset("seg", ctx.quick, **{k: v for k, v in overrides.items() if k in preset("seg", ctx.quick)})
    cfg.pop("mode_steps")  # the mode's own steps are in "steps" (seg_run): other modes' schedules are not its config
    cfg.update(mode=mode, seed=int(ctx.seed), dataset=ctx.dataset)
    extra = {k: v for k, v in overrides.items() if k not in cfg}
    cfg.update(extra)
    return plain_config(cfg)


def build_segnet(cfg: dict, clf_cfg: dict, num_classes: int):
    torch.manual_seed(int(cfg.get("seed", 0)))
    return SegNet(build_backbone_from(clf_cfg), num_classes, head=cfg["head"], width=cfg["head_width"],
                  dilation=cfg["dilation"], dropout=cfg["dropout"])


def get_segnet(ctx, name: str, mode: str, classifier, masks=None, accepted=None, retrain: bool = False,
               progress: bool = True, resume: bool = True, **overrides):
    """Load ``<out>/checkpoints/segnet_<name>.pt`` if its config matches, else train a SegNet
    (backbone initialised from ``classifier``) with ``mode`` "prior" | "tags" | "full".
    ``masks`` (N, H, W) in [0, 1] for "prior"; ``accepted`` (N,) for check-mask. Returns
    ``(model, info)``."""
    train = load_split(ctx, "train")
    clf_cfg = classifier_config(ctx)
    cfg = seg_config(ctx, mode, **overrides)
    if masks is not None:
        cfg["masks_fingerprint"] = float(torch.as_tensor(np.asarray(masks, dtype=np.float32)).double().sum())
    if accepted is not None:
        cfg["accepted_fingerprint"] = int(np.asarray(accepted).sum())
    cfg["classifier"] = state_fingerprint(classifier)
    cfg = plain_config(cfg)
    num_classes = train.info.num_classes
    model = build_segnet(cfg, clf_cfg, num_classes)
    path = Path(ctx.out) / "checkpoints" / f"segnet_{name}.pt"
    m = None if masks is None else torch.as_tensor(np.asarray(masks, dtype=np.float32))

    def fit_it():
        model.init_from_classifier(classifier)
        return train_segmentation(model, train, mode, masks=m, accepted=accepted, pooling=cfg["pooling"],
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
                                     workers=preset("crf", ctx.quick)["workers"],
                                     return_predictions=return_predictions)
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
    """The training masks of paper 1: CRF-refined fused maps of the train split, binarised (N, H, W)."""
    mp = mask_pipeline(ctx, classifier, progress=progress)
    return torch.from_numpy(mp["crf"]["train"] >= 0.5).float()


def checkmask_acceptance(ctx, masks: torch.Tensor, tau: float | None = None) -> dict:
    """Simulated check-mask clicks on the train masks (:func:`wsss_lib.ops.checkmask.simulate_checkmask`)."""
    tau = preset("seg", ctx.quick)["tau"] if tau is None else tau
    return simulate_checkmask(masks, load_split(ctx, "train").labels.long(), tau=tau)


def mode_steps(ctx, mode: str) -> int:
    """Training steps of seg ``mode`` ("prior" | "tags" | "full"): the "seg" preset's ``mode_steps``
    (chosen on VAL), else its ``steps``."""
    p = preset("seg", ctx.quick)
    return int(p["mode_steps"].get(mode, p["steps"]))


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
        cm = checkmask_acceptance(ctx, masks, overrides.get("tau"))
        accepted = torch.from_numpy(cm["accepted"].astype(np.float32))
        extra = {"clicks": cm["clicks"], "accept_rate": cm["accept_rate"]}
    if pooling is not None:
        overrides["pooling"] = pooling
    name = name or (kind if pooling is None else f"{kind}_{pooling}")
    mode = "prior" if kind == "checkmask" else kind
    if "steps" not in overrides:  # each mode's schedule as chosen on VAL (see the "seg" preset)
        overrides["steps"] = mode_steps(ctx, mode)
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
