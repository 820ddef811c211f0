"""Video semantic segmentation from tags (paper 2): data, models, training and evaluation.

* :func:`load_video_data` — frames of a dataset split (any ``(DatasetInfo, samples)``) in memory,
  each with its encoded optical-flow image (``extra["flow"]`` uint8 ``(N, 3, H, W)``, see
  :mod:`wsss_lib.ops.flow`).
* :func:`compute_regions` — heatmap regions of every training frame (:mod:`wsss_lib.ops.heatmaps`),
  stored as uint8 ``(N, C, H, W)`` (``255`` = weight 1).
* :func:`compute_fgbg_masks` — paper 1's single fg/bg mask (fused conv activations of a tag
  classifier, :func:`wsss_lib.ops.masks.extract_masks`, optional dense CRF) for the single-background
  baseline. Paper 1's method on street data [summary: conv4 + conv5 of a classifier trained on
  foreground tags only; ours: that classifier is the streets SmallVGG kept to conv5] needs a
  classifier whose conv4/conv5 exist: :func:`check_stages` refuses stages truncated to identities.
* :func:`flow_control` — the motion controls: the same two-stream network fed the encoding of zero
  motion, or each frame the flow of the same frame index of another clip.
* :func:`build_video_model` / :func:`train_video_model` — the models compared in notebook 07
  (``kind``):

  ``"appearance"``  SegNet on RGB, all C classes, :func:`~wsss_lib.ops.losses.region_loss` with
                    heatmap regions (every tagged class, fg or bg, rewarded over its own region);
  ``"two_stream"``  :class:`~wsss_lib.models.two_stream.TwoStreamNet` (RGB + flow), same loss;
  ``"two_stream_zero_flow"``, ``"two_stream_shuffled_flow"``  [ours] motion controls: exactly the
                    two-stream network and loss, trained AND evaluated on :func:`flow_control`'s
                    flow (zero motion / another clip's flow), so a two-stream gain over them is due
                    to the motion information, not to the extra capacity of the motion stream;
  ``"single_bg"``   paper 1's approach: SegNet with K_fg + 1 outputs (all background classes
                    collapsed into one), :func:`~wsss_lib.ops.losses.fgbg_prior_loss` with the fused
                    fg/bg mask;
  ``"full"``        SegNet on RGB trained with pixel labels (cross-entropy, optionally class-weighted,
                    :func:`~wsss_lib.ops.losses.median_frequency_weights`): the upper bound.

  :func:`base_kind` maps a kind to the network/loss it shares (the controls -> ``"two_stream"``).

* :func:`evaluate_video` — confusion matrix over all frames with GT -> mIoU, per-class IoU and
  the means over background classes, foreground classes and moving foreground classes;
  :func:`evaluate_video_full_size` the same at the stored label resolution of resized frames.

Scoring the single-background baseline (documented choice): it predicts one "background" label
that cannot say road vs sky. :func:`single_bg_label_map` maps that label to the background class
with the most training pixels (a constant mapping; it favours the baseline over e.g. "ignore",
which would give every background class IoU 0). :func:`evaluate_video` with ``oracle_bg=True``
additionally reports the ceiling of a single-background method: its background pixels given
their true background class (a perfect bg sub-classifier), so the gap to the heatmap approach
is not an artefact of the mapping.
"""

from __future__ import annotations

import copy

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.config import PRESETS
from ..core.errors import InvalidInputError
from ..core.io import to_uint8
from ..core.metrics import ConfusionMatrix, binary_auc
from ..core.runtime import predict_batches
from ..data.base import SegmentationDataset
from ..data.registry import load_label
from ..engine.distributed import eval_shard
from ..engine.train import fit, hflip_batch, preload
from ..models.backbones import build_backbone
from ..models.deeplab import SegNet
from ..models.two_stream import TwoStreamNet
from ..ops.crf import CRFParams
from ..ops.flow import default_max_flow, encode_flow
from ..ops.heatmaps import class_heatmaps, heatmap_regions, regions_to_label
from ..ops.losses import cross_entropy, fgbg_prior_loss, region_loss
from ..ops.masks import choose_threshold, extract_masks, refine_masks

KINDS = ("appearance", "two_stream", "two_stream_zero_flow", "two_stream_shuffled_flow", "single_bg", "full")
# motion-control kind -> its flow control (see flow_control)
FLOW_CONTROLS = {"two_stream_zero_flow": "zero", "two_stream_shuffled_flow": "shuffled"}


def base_kind(kind: str) -> str:
    """The kind whose network and loss ``kind`` uses: a motion control -> ``"two_stream"``, others
    themselves; an unknown kind raises :class:`~wsss_lib.core.errors.InvalidInputError`."""
    if kind not in KINDS:
        raise InvalidInputError(f"unknown video model kind {kind!r}; use one of {KINDS}")
    return "two_stream" if kind in FLOW_CONTROLS else kind


def uses_flow(kind: str) -> bool:
    """Whether ``kind``'s network takes a flow image (two-stream and its controls)."""
    return base_kind(kind) == "two_stream"


# ------------------------------------------------------------------------------------------ data
def load_video_data(info, samples: Sequence, size: tuple[int, int] | None = None, flow_cache=None,
                    max_flow: float | None = None, flow_normalisation: str = "fixed", flow_subtract: str = "median",
                    progress: bool = False):
    """Frames + labels + tags (+ encoded flow) of one split, in memory.

    Parameters
    ----------
    info, samples: a dataset split (e.g. ``load_dataset("toy_streets", root, "train")``).
    size: ``(H, W)`` to resize to (default: stored size; frames must then share one size).
    flow_cache: a :class:`~wsss_lib.engine.shard.FlowCache` with the split's flow computed
        (:func:`~wsss_lib.engine.shard.compute_dataset_flow`); ``None`` -> no ``flow`` field.
    max_flow, flow_normalisation, flow_subtract: :func:`~wsss_lib.ops.flow.encode_flow` settings;
        ``max_flow`` is in pixels of the *stored* frame.

    Returns
    -------
    :class:`~wsss_lib.engine.train.InMemoryDataset` (``images`` uint8 ``(N, 3, H, W)``, ``labels``,
    ``tags`` ``(N, C)``, ``extra["flow"]`` uint8 ``(N, 3, H, W)`` = flow image x 255).
    """
    ds = preload(SegmentationDataset(info, samples, size=size), progress=progress, desc="frames")
    if flow_cache is None:
        return ds
    H, W = ds.images.shape[-2:]
    flows = torch.empty((len(samples), 3, H, W), dtype=torch.uint8)
    it = range(len(samples))
    if progress:
        it = tqdm(it, desc="flow images", leave=False)
    for i in it:
        f = torch.from_numpy(flow_cache.load(samples[i].id)).permute(2, 0, 1)[None]  # (1, 2, h, w)
        h, w = f.shape[-2:]
        mf = max_flow
        if (h, w) != (H, W):
            f = F.interpolate(f, size=(H, W), mode="bilinear", align_corners=False)
            f[:, 0] *= W / w
            f[:, 1] *= H / h
            mf = None if max_flow is None else max_flow * W / w
        if mf is None:
            mf = default_max_flow(W)
        enc = encode_flow(f, max_flow=mf, normalisation=flow_normalisation, subtract=flow_subtract)
        flows[i] = to_uint8(enc[0])
    return ds.with_extra(flow=flows)


def hflip_video_batch(batch: dict) -> dict:
    """Flip a random half of a batch horizontally: image, label, regions, fg_mask and flow (whose x
    channel is mirrored, ``v -> 1 - v``, since dx changes sign); :func:`~wsss_lib.engine.train.hflip_batch`."""
    return hflip_batch(batch, ("image", "label", "regions", "fg_mask", "flow"), mirror=("flow",))


def flow_input(batch: dict, device) -> torch.Tensor:
    """The batch's flow image as float ``(B, 3, H, W)`` in [0, 1] on ``device``."""
    if "flow" not in batch:
        raise InvalidInputError("this model needs optical flow: load the data with a flow cache (load_video_data)")
    f = batch["flow"].to(device, non_blocking=True)
    return f.float().div_(255.0) if f.dtype == torch.uint8 else f.float()


def model_logits(model: torch.nn.Module, batch: dict, device) -> torch.Tensor:
    """Run a video model on a batch: two-stream models get ``(image, flow)``, others the image."""
    x = batch["image"].to(device, non_blocking=True).float()
    if getattr(model, "uses_flow", False):
        return model(x, flow_input(batch, device))
    return model(x)


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation of ``range(n)`` with no fixed point (Sattolo's algorithm: a uniformly random
    ``n``-cycle), deterministic in ``seed``; ``n >= 2``."""
    if n < 2:
        raise InvalidInputError(f"a derangement needs at least 2 elements, got {n}")
    rng = np.random.default_rng(seed)
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))  # j < i: Sattolo (j <= i would be Fisher-Yates)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def flow_control(ds, kind: str, samples: Sequence | None = None, seed: int = 0, max_flow: float | None = None,
                 normalisation: str = "fixed", subtract: str = "median"):
    """The flow control of a dataset for video model ``kind`` [ours] (other kinds: ``ds`` unchanged).

    * ``"two_stream_zero_flow"``: every flow image is the encoding of zero motion, computed with
      :func:`~wsss_lib.ops.flow.encode_flow` and the split's encoding settings (``max_flow``,
      ``normalisation``, ``subtract``, as :func:`load_video_data`'s), so it is exactly what a static
      frame would get;
    * ``"two_stream_shuffled_flow"``: frame t of clip c gets the flow image of frame t of clip
      ``pi(c)``, ``pi`` a derangement of the split's clips (:func:`derangement`, by ``seed``): real
      flow statistics, but unrelated to the frame (when ``pi(c)`` is shorter, its nearest frame index).
      Needs ``samples`` (their ``clip`` and ``frame``, in the rows' order) and >= 2 clips.

    Returns a view of ``ds`` with ``extra["flow"]`` replaced and ``extra["flow_source"]`` int64 ``(N,)``:
    the row whose flow each frame got (-1 = zero motion); :func:`train_video_model` requires it for
    the control kinds. ``ds`` must carry flow (:func:`load_video_data` with a flow cache).
    """
    control = FLOW_CONTROLS.get(kind) if base_kind(kind) == "two_stream" else None
    if control is None:
        return ds
    if "flow" not in ds.extra:
        raise InvalidInputError(f"{kind}: the dataset has no flow to control (load_video_data with a flow cache)")
    flow = ds.extra["flow"]
    n = len(ds)
    if control == "zero":
        zero = encode_flow(torch.zeros(1, 2, *flow.shape[-2:]), max_flow=max_flow, normalisation=normalisation,
                           subtract=subtract)
        enc = to_uint8(zero[0]) if flow.dtype == torch.uint8 else zero[0].to(flow.dtype)
        return ds.with_extra(flow=enc.expand(n, *enc.shape).clone(),
                             flow_source=torch.full((n,), -1, dtype=torch.long))
    if samples is None or len(samples) != n:
        raise InvalidInputError(f"{kind} needs the split's samples (clip, frame of each of the {n} rows)")
    clips = list(dict.fromkeys(s.clip for s in samples))
    if len(clips) < 2:
        raise InvalidInputError(f"{kind} needs at least 2 clips, got {len(clips)}")
    perm = derangement(len(clips), seed)
    rows: dict[str, dict[int, int]] = {c: {} for c in clips}
    for i, s in enumerate(samples):
        rows[s.clip][int(s.frame)] = i
    src = np.empty(n, dtype=np.int64)
    for i, s in enumerate(samples):
        other = rows[clips[perm[clips.index(s.clip)]]]
        t = int(s.frame) if int(s.frame) in other else min(other, key=lambda f: (abs(f - int(s.frame)), f))
        src[i] = other[t]
    src_t = torch.from_numpy(src)
    return ds.with_extra(flow=flow[src_t].clone(), flow_source=src_t)


def check_flow_control(ds, kind: str) -> None:
    """Raise unless ``ds`` carries ``kind``'s flow control (:func:`flow_control`); no-op for other kinds."""
    control = FLOW_CONTROLS.get(kind)
    if control is None:
        return
    src = ds.extra.get("flow_source")
    ok = src is not None and (bool((src == -1).all()) if control == "zero" else
                              bool((src >= 0).all()) and not bool((src == torch.arange(len(src))).any()))
    if not ok:
        raise InvalidInputError(f"kind={kind!r} trains and is evaluated on its flow control: pass "
                                f"flow_control(ds, {kind!r}, samples, seed) instead of the real flow")


# ------------------------------------------------------------------------------------------ supervision
@torch.no_grad()
def compute_regions(classifier: torch.nn.Module, ds, layer: str = "score", normalisation: str = "minmax",
                    threshold: float = 0.2, mode: str = "argmax", crf=None, complement=(), batch_size: int = 32,
                    device=None, progress: bool = False) -> torch.Tensor:
    """Heatmap regions of every frame of ``ds`` from its tags: uint8 ``(N, C, H, W)`` (x 255).

    Settings as :func:`wsss_lib.ops.heatmaps.class_heatmaps` / :func:`~wsss_lib.ops.heatmaps.heatmap_regions`.
    """
    device = torch.device(device) if device is not None else next(classifier.parameters()).device
    n = len(ds)
    C = ds.tags.shape[1]
    H, W = ds.images.shape[-2:]
    out = torch.empty((n, C, H, W), dtype=torch.uint8)
    it = range(0, n, batch_size)
    if progress:
        it = tqdm(it, desc="heatmap regions", leave=False)
    for s in it:
        x = ds.images[s:s + batch_size].to(device).float().div_(255.0)
        hm = class_heatmaps(classifier, x, layer=layer, normalisation=normalisation, batch_size=batch_size)
        reg = heatmap_regions(hm, ds.tags[s:s + batch_size].to(device), threshold=threshold, mode=mode,
                              images=x.cpu() if crf else None, crf=crf, complement=complement)
        out[s:s + batch_size] = to_uint8(reg).cpu()
    return out


def compute_fgbg_masks(classifier: torch.nn.Module, ds, layers: Sequence[str] = ("conv4", "conv5"),
                       threshold: float | None = None, val_ds=None, crf=None, device=None,
                       background: Sequence[int] = (), crf_workers: int = 1, progress: bool = False) -> dict:
    """Paper 1's fg/bg masks of ``ds`` for the single-background baseline.

    Fused activations (:func:`wsss_lib.ops.masks.extract_masks`) of ``layers``; the threshold is
    ``threshold`` or, when ``val_ds`` is given, the one with the best fg/bg mask IoU on it (all
    classes not in ``background`` are foreground); ``crf`` (``CRFParams``/dict/True) refines the
    masks with a dense CRF (:func:`wsss_lib.ops.masks.refine_masks`). Returns ``{"masks": float16
    (N, H, W) in {0, 1}, "threshold": t, "maps": float (N, H, W)}``. ``layers`` must be real stages of
    the classifier (:func:`check_stages`).
    """
    check_stages(classifier, layers)
    device = torch.device(device) if device is not None else next(classifier.parameters()).device
    maps = extract_masks(classifier, ds.images.float().div(255.0), layers=tuple(layers), device=device,
                         progress=progress)["fused"]
    if threshold is None:
        if val_ds is None:
            threshold = 0.5
        else:
            vm = extract_masks(classifier, val_ds.images.float().div(255.0), layers=tuple(layers), device=device)["fused"]
            threshold, _ = choose_threshold(vm, fg_binary_labels(val_ds.labels, background))
    if crf:
        params = CRFParams() if crf is True else crf
        # in-process (workers=1): a forked CRF pool can hang inside a Jupyter kernel whose torch
        # threads are running; 96x128 frames take ~10 ms each
        probs = refine_masks(list(ds.uint8_images()), maps, threshold=threshold, params=params, workers=crf_workers,
                             progress=progress, device=device)
        masks = torch.from_numpy(probs >= 0.5)
    else:
        masks = maps >= threshold
    return {"masks": masks.to(torch.float16), "threshold": float(threshold), "maps": maps}


def check_stages(classifier: torch.nn.Module, layers: Sequence[str]) -> None:
    """Raise unless every stage in ``layers`` is a real layer of ``classifier``'s backbone: a
    classifier built with ``last_stage="conv3"`` (:func:`~wsss_lib.models.build_heatmap_classifier`)
    replaces conv4/conv5 by identities, so "conv4 + conv5" would silently be conv3 twice."""
    stages = getattr(getattr(classifier, "backbone", None), "stages", None)
    if stages is None:
        return
    fake = [n for n in layers if n in stages and isinstance(stages[n], torch.nn.Identity)]
    if fake:
        real = [n for n in stages if not isinstance(stages[n], torch.nn.Identity)]
        raise InvalidInputError(f"the classifier's stage(s) {fake} are identities (it stops at {real[-1]}): the fg/bg "
                                "mask of those layers is an earlier stage's; use a classifier that has them "
                                "(paper 2's single-bg baseline: get_fg_classifier)")


def fg_binary_labels(labels: torch.Tensor, background: Sequence[int], ignore_index: int = 255) -> torch.Tensor:
    """Class labels ``(N, H, W)`` -> fg/bg labels (1 = any non-background class, 255 kept)."""
    lab = labels.long()
    isbg = torch.isin(lab, torch.as_tensor(list(background), dtype=torch.long))
    out = torch.where(lab != ignore_index, (~isbg).long(), torch.full_like(lab, ignore_index))
    return out


def single_bg_label_map(info, train_labels: torch.Tensor) -> torch.Tensor:
    """Output index -> dataset class of a single-background model: ``[bg*, fg_1, ..., fg_K]``, where
    ``bg*`` is the background class with the most pixels in ``train_labels`` (see module doc)."""
    lab = train_labels.long().flatten()
    lab = lab[lab != info.ignore_index]
    counts = torch.bincount(lab, minlength=info.num_classes)
    bg = list(info.background)
    best = bg[int(torch.argmax(counts[bg]))] if bg else 0
    return torch.as_tensor([best] + list(info.foreground), dtype=torch.long)


# ------------------------------------------------------------------------------------------ models
ARCH_KEYS = ("backbone", "widths", "depths", "output_stride", "head", "head_width", "head_dilation", "dropout",
             "motion_widths", "motion_depths", "fuse_stage", "late_fusion", "fusion_kernel")


def model_config(cfg: dict | None = None, **overrides) -> dict:
    """Architecture settings of the video models: the :data:`ARCH_KEYS` of ``cfg`` (e.g. a
    ``video_seg`` preset or a checkpoint's stored one) and ``overrides`` on top of the defaults,
    which live in ONE place, ``config.PRESETS["video_seg"]``. Unknown override keys raise."""
    unknown = set(overrides) - set(ARCH_KEYS)
    if unknown:
        raise InvalidInputError(f"unknown model setting(s) {sorted(unknown)}; known: {sorted(ARCH_KEYS)}")
    base = PRESETS["video_seg"]["default"]
    merged = {**base, **(cfg or {}), **overrides}
    return {k: copy.deepcopy(merged[k]) for k in ARCH_KEYS}


def build_video_model(kind: str, info, **model_cfg) -> torch.nn.Module:
    """The network for ``kind`` (see module docstring); ``model_cfg``: architecture keys, see :func:`model_config`."""
    kind = base_kind(kind)
    cfg = model_config(**model_cfg)
    bb_kw = {"widths": cfg["widths"], "depths": cfg["depths"]} if cfg["backbone"] == "small_vgg" else {}
    bb_kw["output_stride"] = cfg["output_stride"]
    n_out = len(info.foreground) + 1 if kind == "single_bg" else info.num_classes
    seg = SegNet(build_backbone(cfg["backbone"], **bb_kw), n_out, head=cfg["head"], width=cfg["head_width"],
                 dilation=cfg["head_dilation"], dropout=cfg["dropout"])
    if kind != "two_stream":
        return seg
    motion = build_backbone("small_vgg", widths=cfg["motion_widths"], depths=cfg["motion_depths"], in_channels=3,
                            input_norm="unit")
    return TwoStreamNet(seg, motion, fuse_stage=cfg["fuse_stage"], late_fusion=cfg["late_fusion"],
                        fusion_kernel=cfg["fusion_kernel"])


def video_loss_step(kind: str, fg_classes: Sequence[int] = (), pooling: str = "mean", absent_pooling: str = "max",
                    augment: bool = True, class_weights: torch.Tensor | None = None):
    """``loss_step(model, batch, device)`` for :func:`wsss_lib.engine.train.fit` (see module docstring).

    The batch carries ``regions`` uint8 (appearance / two_stream and its controls), ``fg_mask``
    (single_bg), ``flow`` (two_stream and its controls); ``pooling``/``absent_pooling`` go to the
    region loss; ``class_weights`` ``(C,)`` weigh the cross-entropy of ``"full"`` (None = plain).
    """
    kind = base_kind(kind)
    fg = torch.as_tensor(list(fg_classes), dtype=torch.long)
    cw = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)

    def step(model, batch, device):
        if augment:
            batch = hflip_video_batch(batch)
        logits = model_logits(model, batch, device)
        if kind == "full":
            return cross_entropy(logits, batch["label"].to(device), weight=None if cw is None else cw.to(device))
        tags = batch["tags"].to(device).float()
        if kind == "single_bg":
            return fgbg_prior_loss(logits, tags[:, fg.to(device)], batch["fg_mask"].to(device).float(), pooling,
                                   absent_pooling)
        regions = batch["regions"].to(device)
        regions = regions.float().div_(255.0) if regions.dtype == torch.uint8 else regions.float()
        return region_loss(logits, regions, tags, pooling, absent_pooling)

    return step


def train_video_model(kind: str, model: torch.nn.Module, train_ds, info, *, regions: torch.Tensor | None = None,
                      fg_masks: torch.Tensor | None = None, steps: int = 300, batch_size: int = 16, lr: float = 2e-3,
                      optimizer: str = "adamw", weight_decay: float = 1e-4, pooling: str = "mean",
                      absent_pooling: str = "max", augment: bool = True, class_weights: torch.Tensor | None = None,
                      **fit_kw) -> dict:
    """Train one video model with :func:`wsss_lib.engine.train.fit`; returns its history.

    ``regions`` uint8 ``(N, C, H, W)`` (:func:`compute_regions`) for appearance / two_stream (and its
    controls, whose ``train_ds`` must carry their :func:`flow_control`); ``fg_masks`` ``(N, H, W)``
    in [0, 1] (:func:`compute_fgbg_masks`) for single_bg; ``class_weights`` ``(C,)`` for full
    (:func:`~wsss_lib.ops.losses.median_frequency_weights`; None = plain cross-entropy).
    ``fit_kw``: device, seed, checkpoint_path, resume, amp, config, progress, ...
    """
    base = base_kind(kind)
    extra = {}
    if base in ("appearance", "two_stream"):
        if regions is None or regions.shape[0] != len(train_ds):
            raise InvalidInputError(f"kind={kind!r} needs regions (N={len(train_ds)}, C, H, W) from compute_regions")
        extra["regions"] = regions
    if base == "single_bg":
        if fg_masks is None or fg_masks.shape[0] != len(train_ds):
            raise InvalidInputError(f"kind='single_bg' needs fg_masks (N={len(train_ds)}, H, W) from compute_fgbg_masks")
        extra["fg_mask"] = fg_masks
    if base == "two_stream" and "flow" not in train_ds.extra:
        raise InvalidInputError(f"kind={kind!r} needs flow: load the data with a flow cache (load_video_data)")
    check_flow_control(train_ds, kind)
    ds = train_ds.with_extra(**extra) if extra else train_ds
    fit_kw.setdefault("desc", f"video[{kind}]")
    step = video_loss_step(kind, info.foreground, pooling, absent_pooling, augment,
                           class_weights if base == "full" else None)
    return fit(model, ds, step, steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer,
               weight_decay=weight_decay, **fit_kw)


# ------------------------------------------------------------------------------------------ evaluation
def predict_video(model: torch.nn.Module, ds, device=None, batch_size: int = 32, amp: bool = True,
                  label_map: torch.Tensor | None = None, return_probs: bool = False):
    """Label maps int64 ``(N, H, W)`` of every frame (in dataset classes when ``label_map``
    ``(n_out,)`` maps the model's outputs to them); with ``return_probs`` also the softmax
    ``(N, n_out, H, W)`` float16."""
    H, W = ds.images.shape[-2:]

    def forward(lo, hi, dev):
        return model_logits(model, ds.get_batch(np.arange(lo, hi)), dev)

    def post(lg, lo, hi):
        lg = F.interpolate(lg.float(), size=(H, W), mode="bilinear", align_corners=False)
        p = lg.argmax(1).cpu()
        if label_map is not None:
            p = label_map.cpu()[p]
        return (p, torch.softmax(lg, 1).half().cpu()) if return_probs else p

    return predict_batches(model, len(ds), forward, post, batch_size=batch_size, device=device, amp=amp,
                           desc="video")


def video_scores(cm: ConfusionMatrix, info) -> dict:
    """``{"miou", "bg_miou", "fg_miou", "moving_miou", "pixel_acc", "iou": {class: IoU}}`` (NaN-free means)."""
    s = cm.summary(info.classes)
    out = {"miou": s["miou"], "pixel_acc": s["pixel_acc"], "bg_miou": cm.miou(info.background),
           "fg_miou": cm.miou(info.foreground), "iou": s["iou"]}
    out["moving_miou"] = cm.miou(info.moving) if info.moving else float("nan")
    return out


def evaluate_predictions(pred: torch.Tensor, labels: torch.Tensor, info) -> dict:
    """:func:`video_scores` of label maps ``pred`` vs ``labels`` (both ``(N, H, W)``)."""
    cm = ConfusionMatrix(info.num_classes, info.ignore_index)
    cm.update(labels.long(), pred.long())
    return video_scores(cm, info)


def evaluate_video(model: torch.nn.Module, ds, info, device=None, batch_size: int = 32,
                   label_map: torch.Tensor | None = None, oracle_bg: bool = False, amp: bool = True) -> dict:
    """Scores of ``model`` on every frame with GT in ``ds`` (:func:`video_scores`).

    ``label_map``: for a single-background model (:func:`single_bg_label_map`). ``oracle_bg``
    adds ``"oracle_bg"``: the scores when the model's background pixels on true-background pixels
    get their true class (the ceiling of any way of naming a single background label).
    Under ``torchrun`` each rank predicts only its contiguous shard of the frames
    (:func:`~wsss_lib.engine.distributed.eval_shard`) and the confusion matrices are summed over the
    ranks: every rank returns the single-process scores.
    """
    if oracle_bg and label_map is None:
        raise InvalidInputError("oracle_bg needs the label_map of a single-background model")
    part = eval_shard(ds)
    pred = predict_video(model, part.dataset, device, batch_size, amp, label_map)
    labels = part.dataset.labels.long()
    mats = {"cm": ConfusionMatrix(info.num_classes, info.ignore_index)}
    mats["cm"].update(labels, pred.long())
    if oracle_bg:
        mats["oracle"] = ConfusionMatrix(info.num_classes, info.ignore_index)
        mats["oracle"].update(labels, oracle_bg_prediction(pred, labels, info, label_map).long())
    mats = part.combine(mats)
    res = video_scores(mats["cm"], info)
    if oracle_bg:
        res["oracle_bg"] = video_scores(mats["oracle"], info)
    return res


def evaluate_video_full_size(model: torch.nn.Module, ds, samples: Sequence, info, device=None, batch_size: int = 8,
                             label_map: torch.Tensor | None = None, oracle_bg: bool = False, amp: bool = True) -> dict:
    """:func:`evaluate_video`'s scores at each frame's ORIGINAL label resolution, for data loaded
    resized (:func:`load_video_data` with ``size``; real datasets): the model runs on the resized
    frames of ``ds`` (and their flow), its score maps ``(C, h, w)`` are upsampled bilinearly to the
    stored label map ``(H_i, W_i)`` of ``samples[i]`` (read from disk,
    :func:`~wsss_lib.data.registry.load_label`), and the confusion matrix is summed frame by frame.
    ``samples`` must be ``ds``'s, in order. ``label_map``/``oracle_bg``: as :func:`evaluate_video`
    (sharded over ``torchrun`` ranks the same way)."""
    if len(samples) != len(ds):
        raise InvalidInputError(f"evaluate_video_full_size needs the {len(ds)} samples of the data, got {len(samples)}")
    if oracle_bg and label_map is None:
        raise InvalidInputError("oracle_bg needs the label_map of a single-background model")
    part = eval_shard(ds)
    sub, samples = part.dataset, list(samples)[part.start:part.stop]
    mats = {"cm": ConfusionMatrix(info.num_classes, info.ignore_index)}
    if oracle_bg:
        mats["oracle"] = ConfusionMatrix(info.num_classes, info.ignore_index)

    def forward(lo, hi, dev):
        return model_logits(model, sub.get_batch(np.arange(lo, hi)), dev)

    def post(lg, lo, hi):
        for k in range(hi - lo):
            lab = load_label(info, samples[lo + k])
            if lab is None:
                raise InvalidInputError(f"frame {samples[lo + k].id} has no label map to score against")
            lab = torch.from_numpy(lab)
            up = F.interpolate(lg[k:k + 1].float(), size=tuple(lab.shape), mode="bilinear", align_corners=False)
            pred = up.argmax(1)[0].cpu()
            if label_map is not None:
                pred = label_map.cpu()[pred]
            mats["cm"].update(lab[None], pred[None])
            if oracle_bg:
                mats["oracle"].update(lab[None], oracle_bg_prediction(pred[None], lab[None], info, label_map))
        return torch.zeros(hi - lo)

    predict_batches(model, len(sub), forward, post, batch_size=batch_size, device=device, amp=amp, desc="video")
    mats = part.combine(mats)
    res = video_scores(mats["cm"], info)
    if oracle_bg:
        res["oracle_bg"] = video_scores(mats["oracle"], info)
    return res


def oracle_bg_prediction(pred: torch.Tensor, labels: torch.Tensor, info, label_map: torch.Tensor) -> torch.Tensor:
    """A single-background model's label maps ``pred`` (dataset classes, via ``label_map``) with every
    pixel predicted as its background label (``label_map[0]``) that is truly background given its
    true background class: the ceiling of any way of naming a single background label."""
    if label_map is None:
        raise InvalidInputError("oracle_bg needs the label_map of a single-background model")
    lab = labels.long()
    bgset = torch.zeros(max(info.num_classes, 256), dtype=torch.bool)
    bgset[list(info.background)] = True
    fix = (pred == label_map[0]) & bgset[lab.clamp(0, 255)] & (lab != info.ignore_index)
    return torch.where(fix, lab, pred)


def pseudo_label_scores(regions: torch.Tensor, labels: torch.Tensor, info) -> dict:
    """How good the training supervision is: the regions' argmax vs GT (unassigned pixels are
    left out) -> :func:`video_scores` + ``"coverage"`` (fraction of pixels assigned)."""
    lab = regions_to_label(regions.float(), info.ignore_index)
    target = torch.where(lab == info.ignore_index, torch.full_like(labels.long(), info.ignore_index), labels.long())
    res = evaluate_predictions(lab.clamp(max=info.num_classes - 1), target, info)
    res["coverage"] = float((lab != info.ignore_index).float().mean())
    return res


def motion_statistics(ds, info, max_pixels: int = 400_000, seed: int = 0) -> dict:
    """What the motion stream sees: mean encoded flow magnitude (channel 2 of the flow image, in
    [0, 1]) per class, and the AUROC of that magnitude as a detector of moving-class pixels
    (0.5 = no information). Pixels with ignore labels are left out; at most ``max_pixels`` are
    sampled for the AUROC."""
    if "flow" not in ds.extra:
        raise InvalidInputError("motion_statistics needs a dataset loaded with flow (load_video_data)")
    mag = ds.extra["flow"][:, 2].float().div(255.0)
    lab = ds.labels.long()
    valid = lab != info.ignore_index
    per_class = {}
    for c, name in enumerate(info.classes):
        m = (lab == c) & valid
        per_class[name] = float(mag[m].mean()) if m.any() else None
    moving = torch.isin(lab, torch.as_tensor(list(info.moving) or [-1]))
    v, y = mag[valid], moving[valid]
    if v.numel() > max_pixels:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(v.numel(), generator=g)[:max_pixels]
        v, y = v[idx], y[idx]
    return {"mean_magnitude": per_class, "moving_auc": binary_auc(v, y),
            "moving_mean": float(mag[moving & valid].mean()) if (moving & valid).any() else None,
            "static_mean": float(mag[~moving & valid].mean()) if (~moving & valid).any() else None}
