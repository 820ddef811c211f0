"""Paper 1's pipeline as load-or-compute steps, shared by notebooks 01-04 and ``wsss`` CLI commands.

Each step takes a *run context* — a :class:`~wsss_lib.notebook.NotebookContext` or anything with
``data_root``, ``out``, ``device``, ``quick``, ``seed``, ``dataset`` — and caches its result under
``<out>``, keyed by the step's full config, so notebook 2 reuses notebook 1's classifier, 3 and 4
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

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .config import preset
from .errors import CheckpointError, InvalidInputError
from .runtime import select_device, seed_everything
from .train import InMemoryDataset, preload

# ----------------------------------------------------------------------------- context


@dataclass
class RunContext:
    """Minimal run context for the CLI (notebooks pass their NotebookContext instead)."""

    data_root: Path | None
    out: Path
    device: torch.device
    quick: bool = False
    seed: int = 0
    dataset: str = "toy_objects"

    @property
    def checkpoints(self) -> Path:
        return Path(self.out) / "checkpoints"


def make_context(data_root=None, out="runs/latest", device="auto", quick=False, seed=0,
                 dataset="toy_objects") -> RunContext:
    """A :class:`RunContext` with the device selected and folders created."""
    from .data.registry import default_data_root

    out = Path(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    return RunContext(Path(data_root) if data_root else default_data_root(), out, select_device(device), bool(quick),
                      int(seed), dataset)


def _config_hash(cfg: dict) -> str:
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _plain(cfg: dict) -> dict:
    return json.loads(json.dumps(cfg, sort_keys=True, default=str))


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
    from .data.base import SegmentationDataset
    from .data.registry import load_dataset

    n = split_size(ctx, split) if n is None else n
    key = (str(ctx.data_root), ctx.dataset, split, n)
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    kw = preset(ctx.dataset, False) if ctx.dataset in ("toy_objects", "toy_streets") else {}
    info, samples = load_dataset(ctx.dataset, ctx.data_root, split, **kw)
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
    return _plain(cfg)


def build_backbone_from(cfg: dict):
    from .models import build_backbone

    if cfg["backbone"] == "small_vgg":
        return build_backbone("small_vgg", widths=cfg["widths"], depths=cfg["depths"])
    return build_backbone(cfg["backbone"], pretrained=cfg.get("pretrained"))


def build_classifier(cfg: dict, num_classes: int):
    """A :class:`~wsss_lib.models.TagClassifier` as described by ``cfg`` (untrained)."""
    from .models import TagClassifier

    torch.manual_seed(int(cfg.get("seed", 0)))
    return TagClassifier(build_backbone_from(cfg), num_classes, pooling=cfg["pooling"], hidden=cfg.get("hidden", 0))


def _load_if_matching(path: Path, cfg: dict, model, device) -> dict | None:
    if not path.is_file():
        return None
    try:
        st = load_checkpoint(path, map_location=device)
    except CheckpointError as exc:
        print(f"[wsss] ignoring {path}: {exc}")
        return None
    if st.get("config") != cfg or not st.get("complete", False):
        return None
    model.load_state_dict(st["model"])
    model.to(device).eval()
    return st


def get_tag_classifier(ctx, retrain: bool = False, progress: bool = True, resume: bool = True, **overrides):
    """Load the run's tag classifier if ``<out>/checkpoints/tag_classifier.pt`` matches the config,
    else train it (resumable). Returns ``(classifier (eval mode), info)`` with ``info = {"config",
    "trained": bool, "history": {...}, "seconds": float}``."""
    from .train import train_classifier

    cfg = classifier_config(ctx, **overrides)
    train = load_split(ctx, "train")
    fg = train.info.foreground
    model = build_classifier(cfg, len(fg))
    path = Path(ctx.out) / "checkpoints" / "tag_classifier.pt"
    st = None if retrain else _load_if_matching(path, cfg, model, ctx.device)
    if st is not None:
        print(f"[wsss] loaded tag classifier from {path}")
        return model, {"config": cfg, "trained": False, "history": st.get("history", {}), "seconds": 0.0}
    t0 = time.time()
    hist = train_classifier(model, train, classes=fg, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                            optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"], device=ctx.device,
                            seed=ctx.seed, checkpoint_path=path, resume=resume and not retrain, config=cfg,
                            progress=progress, checkpoint_every=max(50, cfg["steps"] // 4))
    model.eval()
    return model, {"config": cfg, "trained": True, "history": hist, "seconds": time.time() - t0}


# ----------------------------------------------------------------------------- masks

def mask_config(ctx, **overrides) -> dict:
    return _plain(preset("masks", ctx.quick, **overrides))


def crf_params(ctx, **overrides):
    """:class:`~wsss_lib.crf.CRFParams` from the "crf" preset (+ overrides)."""
    from .crf import CRFParams

    p = preset("crf", ctx.quick, **overrides)
    return CRFParams(**{k: v for k, v in p.items() if k in CRFParams.__dataclass_fields__})


def compute_masks(ctx, classifier, split: str, progress: bool = False, **overrides) -> dict[str, torch.Tensor]:
    """Fused fg/bg maps and CAM maps of ``split`` (one forward pass per batch), cached under
    ``<out>/masks``: ``{"fused": float (N, H, W) [0, 1], "cam": float (N, H, W) [0, 1],
    "logits": (N, K)}``. CAM uses the image tags (as the weak supervision provides them)."""
    from .masks import extract_masks

    mcfg = mask_config(ctx, **overrides)
    ds = load_split(ctx, split)
    fg = ds.info.foreground
    key = {"masks": mcfg, "classifier": _state_fingerprint(classifier), "split": split, "ids": len(ds)}
    path = Path(ctx.out) / "masks" / f"{split}_{_config_hash(key)}.pt"
    if path.is_file():
        try:
            st = load_checkpoint(path)
            return {k: (v.float() if v.is_floating_point() else v) for k, v in st["maps"].items()}
        except CheckpointError:
            pass
    out = extract_masks(classifier, ds.images.float().div(255.0), ds.tags[:, fg], layers=mcfg["layers"],
                        weights=mcfg["weights"], aggregate=mcfg["aggregate"], normalize=mcfg["normalize"],
                        align=mcfg["align"], normalize_each=mcfg["normalize_each"], device=ctx.device,
                        progress=progress)
    stored = {k: v.half() if k != "logits" else v for k, v in out.items()}
    save_checkpoint({"maps": stored, "key": _plain(key)}, path)
    # return exactly what a later cache hit returns (float16-rounded), so downstream caches agree
    return {k: v.float() for k, v in stored.items()}


def _state_fingerprint(model) -> str:
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            h.update(k.encode())
            h.update(np.float64(v.double().sum().item()).tobytes())
    return h.hexdigest()[:12]


def choose_thresholds(ctx, val_maps: dict[str, torch.Tensor]) -> dict[str, float]:
    """Thresholds of the fused map and of CAM with the best pooled mask IoU on VAL."""
    from .masks import choose_threshold

    val = load_split(ctx, "val")
    grid = preset("masks", ctx.quick)["thresholds"]
    return {name: choose_threshold(val_maps[name], val.labels.long(), grid)[0] for name in ("fused", "cam")}


def refine_split(ctx, split: str, maps: torch.Tensor, threshold: float, params=None, write_png: bool = False,
                 progress: bool = False) -> np.ndarray:
    """CRF-refined fg probabilities ``(N, H, W)`` for ``split`` (cached). ``write_png`` also saves
    the thresholded masks as ``<out>/masks/<split>_crf/<id>.png``."""
    from .crf import write_masks
    from .masks import refine_masks

    params = params if params is not None else crf_params(ctx)
    ds = load_split(ctx, split)
    key = {"maps": float(maps.double().sum()), "n": len(ds), "t": float(threshold), "crf": params.to_dict(),
           "split": split}
    path = Path(ctx.out) / "masks" / f"{split}_crf_{_config_hash(key)}.pt"
    q = None
    if path.is_file():
        try:
            q = load_checkpoint(path)["probs"].float().numpy()
        except CheckpointError:
            q = None
    if q is None:
        q = refine_masks(ds.uint8_images(), maps, threshold, params, workers=preset("crf", ctx.quick)["workers"],
                         progress=progress)
        save_checkpoint({"probs": torch.from_numpy(q).half(), "key": _plain(key)}, path)
    if write_png:
        write_masks(Path(ctx.out) / "masks" / f"{split}_crf", ds.ids, list(q >= 0.5))
    return q


def mask_pipeline(ctx, classifier, progress: bool = False) -> dict[str, Any]:
    """Everything notebooks 2-4 need: VAL-chosen thresholds, fused/CAM maps and CRF masks for
    val/test/train, and their mask scores. Returns a dict with keys ``thresholds``, ``maps``
    ({split: {...}}), ``crf`` ({split: (N, H, W) probs}), ``scores`` ({split: {method: scores}})."""
    from .masks import evaluate_masks, floor_mask

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


# ----------------------------------------------------------------------------- segmentation

def seg_config(ctx, mode: str, **overrides) -> dict:
    cfg = preset("seg", ctx.quick, **{k: v for k, v in overrides.items() if k in preset("seg", ctx.quick)})
    cfg.update(mode=mode, seed=int(ctx.seed), dataset=ctx.dataset)
    extra = {k: v for k, v in overrides.items() if k not in cfg}
    cfg.update(extra)
    return _plain(cfg)


def build_segnet(cfg: dict, clf_cfg: dict, num_classes: int):
    from .models import SegNet

    torch.manual_seed(int(cfg.get("seed", 0)))
    return SegNet(build_backbone_from(clf_cfg), num_classes, head=cfg["head"], width=cfg["head_width"],
                  dilation=cfg["dilation"], dropout=cfg["dropout"])


def get_segnet(ctx, name: str, mode: str, classifier, masks=None, accepted=None, retrain: bool = False,
               progress: bool = True, resume: bool = True, **overrides):
    """Load ``<out>/checkpoints/segnet_<name>.pt`` if its config matches, else train a SegNet
    (backbone initialised from ``classifier``) with ``mode`` "prior" | "tags" | "full".
    ``masks`` (N, H, W) in [0, 1] for "prior"; ``accepted`` (N,) for check-mask. Returns
    ``(model, info)``."""
    from .train import train_segmentation

    train = load_split(ctx, "train")
    clf_cfg = classifier_config(ctx)
    cfg = seg_config(ctx, mode, **overrides)
    if masks is not None:
        cfg["masks_fingerprint"] = float(torch.as_tensor(np.asarray(masks, dtype=np.float32)).double().sum())
    if accepted is not None:
        cfg["accepted_fingerprint"] = int(np.asarray(accepted).sum())
    cfg["classifier"] = _state_fingerprint(classifier)
    cfg = _plain(cfg)
    num_classes = train.info.num_classes
    model = build_segnet(cfg, clf_cfg, num_classes)
    path = Path(ctx.out) / "checkpoints" / f"segnet_{name}.pt"
    st = None if retrain else _load_if_matching(path, cfg, model, ctx.device)
    if st is not None:
        print(f"[wsss] loaded {name} from {path}")
        return model, {"config": cfg, "trained": False, "history": st.get("history", {}), "seconds": 0.0}
    model.init_from_classifier(classifier)
    t0 = time.time()
    m = None if masks is None else torch.as_tensor(np.asarray(masks, dtype=np.float32))
    hist = train_segmentation(model, train, mode, masks=m, accepted=accepted, pooling=cfg["pooling"],
                              tag_pooling=cfg["tag_pooling"], rejected=cfg["rejected"], steps=cfg["steps"],
                              batch_size=cfg["batch_size"],
                              lr=cfg["lr"], optimizer=cfg["optimizer"], weight_decay=cfg["weight_decay"],
                              head_lr_mult=cfg["head_lr_mult"], device=ctx.device, seed=ctx.seed,
                              checkpoint_path=path, resume=resume and not retrain, config=cfg, progress=progress,
                              checkpoint_every=max(50, cfg["steps"] // 4), desc=f"seg[{name}]")
    model.eval()
    return model, {"config": cfg, "trained": True, "history": hist, "seconds": time.time() - t0}


def evaluate_segnet(ctx, model, split: str = "test", crf: bool = True, return_predictions: bool = False) -> dict:
    """mIoU / per-class IoU on ``split`` without and with CRF post-processing.

    Returns ``{"miou", "iou": {class: IoU}, "miou_crf", "iou_crf", ...}`` (+ predictions)."""
    from .train import evaluate_segmentation_both

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
    """Simulated check-mask clicks on the train masks (:func:`wsss_lib.checkmask.simulate_checkmask`)."""
    from .checkmask import simulate_checkmask

    tau = preset("seg", ctx.quick)["tau"] if tau is None else tau
    return simulate_checkmask(masks, load_split(ctx, "train").labels.long(), tau=tau)


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
    model, info = get_segnet(ctx, name, mode, classifier, masks=masks, accepted=accepted, retrain=retrain,
                             progress=progress, resume=resume, **overrides)
    info["checkmask"] = extra
    return model, info


def load_trained_segnets(ctx) -> dict[str, Any]:
    """Every complete ``segnet_*.pt`` under ``<out>/checkpoints`` rebuilt from its stored config."""
    out = {}
    for path in sorted((Path(ctx.out) / "checkpoints").glob("segnet_*.pt")):
        try:
            st = load_checkpoint(path, map_location=ctx.device)
        except CheckpointError as exc:
            print(f"[wsss] skipping {path}: {exc}")
            continue
        if not st.get("complete"):
            continue
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


# ----------------------------------------------------------------------------- figures (notebooks)

def tag_names(info, tags_row) -> str:
    """``"disc, star"`` for a multi-hot row over ``info.classes`` (background left out)."""
    return ", ".join(info.classes[i] for i in info.foreground if float(tags_row[i]) > 0.5) or "-"


def plot_samples(ds: InMemoryDataset, indices, with_labels: bool = True):
    """Images (titles = their tags) and, below, their label maps."""
    from .viz import colorize, show_grid

    imgs = ds.uint8_images()
    ims, titles = [], []
    for i in indices:
        ims.append(imgs[i])
        titles.append(tag_names(ds.info, ds.tags[i]))
    if with_labels:
        for i in indices:
            ims.append(colorize(ds.labels[i].numpy(), ds.info.palette))
            titles.append("label")
    return show_grid(ims, titles, ncols=len(indices))


def plot_history(history: dict, title: str = "training loss", smooth: int = 20):
    """Loss per step (and a running mean)."""
    import matplotlib.pyplot as plt

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


@torch.no_grad()
def stage_maps(classifier, ds: InMemoryDataset, indices, stages=("conv1", "conv2", "conv3", "conv4", "conv5")):
    """Channel-mean activation of every stage, upsampled and min-max normalised ``{stage: (n, H, W)}``,
    plus ``"cam"`` (CAM of the tagged classes), for ``indices`` (one forward pass)."""
    from .masks import cam_maps, fuse_activations

    idx = list(indices)
    x = ds.images[idx].float().div(255.0).to(next(classifier.parameters()).device)
    classifier.eval()
    out = classifier(x, return_stages=tuple(stages))
    size = tuple(x.shape[-2:])
    maps = {s: fuse_activations(out["stages"], (s,), out_size=size).cpu() for s in stages}
    maps["cam"] = cam_maps(out["score_maps"], ds.tags[idx][:, ds.info.foreground].to(x.device), size).cpu()
    maps["_stages"] = {k: v.float().cpu() for k, v in out["stages"].items()}
    return maps


def plot_stage_activations(classifier, ds: InMemoryDataset, indices):
    """Rows = images; columns = image, label, conv1..conv5 channel means, CAM."""
    from .viz import colorize, show_grid

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
    from .viz import overlay, show_grid

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
    from .viz import colorize, show_grid

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
    import matplotlib.pyplot as plt

    from .masks import fuse_activations, per_image_iou
    from .viz import overlay

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
    import matplotlib.pyplot as plt

    from .masks import per_image_iou, refine_masks
    from .viz import overlay

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
