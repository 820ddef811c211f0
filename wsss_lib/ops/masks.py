"""Foreground/background masks from a tag classifier's own activations (paper 1's built-in prior).

Paper 1 [summary]: take the activations after **conv4** and **conv5**, **average each over its
channels**, **sum** the two maps, **rescale to [0, 1]**, smooth with a **dense CRF**, upsample to
the image. Every one of these choices is a parameter of :func:`fuse_activations` so a notebook can
compare them; the defaults marked [ours] are our reconstruction:

* ``layers=("conv4", "conv5")`` [summary] is this module's default; the pipeline preset
  (``config.PRESETS["masks"]``) uses ``("conv3", "conv4", "conv5")`` [ours], the best fusion on VAL
  for our small from-scratch network (notebook 02); ``aggregate="mean"`` over channels [summary]
  (``"max"``, ``"l2"`` [ours] alternatives); ``weights=None`` = plain sum [summary];
* ``align="largest"`` [ours]: maps of different strides are bilinearly resized to the largest map
  before summing (``"smallest"`` is the alternative; with our stride-8 conv4/conv5 they coincide);
* ``normalize="minmax"`` per image [ours reading of "rescaled to [0, 1]"] (``"max"``: divide by the
  max; ``"none"``); ``normalize_each=False`` [ours option: rescale each layer before summing];
* the CRF unary is ``-log p`` / ``-log (1 - p)`` from the fused map [ours]; because the fused map is
  not calibrated, :func:`calibrate` first maps the VAL-chosen threshold ``t`` to 0.5 (piecewise
  linear) [ours].

Baselines on the same network: :func:`cam_maps` (CAM [Zhou et al.]: class score maps of the present
classes, max over classes, normalised) and :func:`floor_mask` (the whole image is foreground).
Training-free baseline [ours]: :func:`lowlevel_objectness` (smoothed edge / texture energy of the
image itself, no network) asks whether the built-in prior is more than low-level cues.
:func:`extract_masks` gets stage activations and score maps from ONE forward pass.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import InvalidInputError
from ..core.metrics import mask_scores
from ..core.runtime import predict_batches
from .crf import crf_batch

AGGREGATES = ("mean", "max", "l2")
OBJECTNESS_KINDS = ("gradient", "variance")
NORMALIZES = ("minmax", "max", "none")
ALIGNS = ("largest", "smallest")


def normalize_maps(maps: torch.Tensor, mode: str = "minmax", eps: float = 1e-8) -> torch.Tensor:
    """The one per-map rescaling, over the last two dims of ``(..., H, W)``: "minmax" -> [0, 1]
    (constant maps -> 0), "max" -> ReLU then divide by the max, "none" -> unchanged. ``eps`` guards
    the division (paper 2's heatmaps use 1e-6, :func:`wsss_lib.ops.heatmaps.normalise_maps`)."""
    if mode == "none":
        return maps
    if mode == "minmax":
        lo = maps.amin(dim=(-2, -1), keepdim=True)
        hi = maps.amax(dim=(-2, -1), keepdim=True)
        return ((maps - lo) / (hi - lo).clamp(min=eps)).clamp(0, 1)
    if mode == "max":
        pos = maps.clamp(min=0)
        hi = pos.amax(dim=(-2, -1), keepdim=True)
        return (pos / hi.clamp(min=eps)).clamp(0, 1)
    raise InvalidInputError(f"normalize must be one of {NORMALIZES}, got {mode!r}")


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, h, w)`` maps to ``(B, *size)`` (unchanged when already that size)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def align_maps(maps: Sequence[torch.Tensor], align: str = "largest") -> list[torch.Tensor]:
    """The alignment step of :func:`fuse_activations`: ``(B, h_i, w_i)`` maps of different strides
    resized (bilinear) to the size of the largest map (``align="largest"``) or the smallest
    (``"smallest"``) -> a list of ``(B, h, w)`` maps of one size."""
    if align not in ALIGNS:
        raise InvalidInputError(f"align must be one of {ALIGNS}, got {align!r}")
    maps = list(maps)
    if not maps:
        return []
    areas = [m.shape[-2] * m.shape[-1] for m in maps]
    pick = int(np.argmax(areas)) if align == "largest" else int(np.argmin(areas))
    size = tuple(maps[pick].shape[-2:])
    return [resize_maps(m, size) for m in maps]


def aggregate_channels(act: torch.Tensor, aggregate: str = "mean") -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, h, w)``: channel mean [summary], max or L2 norm [ours]."""
    if act.ndim != 4:
        raise InvalidInputError(f"stage activations must be (B, C, h, w), got {tuple(act.shape)}")
    act = act.float()
    if aggregate == "mean":
        return act.mean(1)
    if aggregate == "max":
        return act.amax(1)
    if aggregate == "l2":
        return act.pow(2).mean(1).sqrt()
    raise InvalidInputError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")


def fuse_activations(stages: dict[str, torch.Tensor], layers: Sequence[str] = ("conv4", "conv5"),
                     weights: Sequence[float] | None = None, aggregate: str = "mean", normalize: str = "minmax",
                     out_size: tuple[int, int] | None = None, align: str = "largest",
                     normalize_each: bool = False) -> torch.Tensor:
    """Fuse stage activations into a fg/bg map ``(B, H, W)`` in [0, 1] (1 = foreground).

    ``stages``: ``{name: (B, C, h, w)}`` (e.g. ``TagClassifier(..., return_stages=layers)["stages"]``).
    Each layer is aggregated over channels (:func:`aggregate_channels`), resized to a common size
    (:func:`align_maps`), optionally rescaled on its own (``normalize_each``), weighted
    (``weights``, default all 1) and summed; the sum is upsampled to ``out_size``
    (:func:`resize_maps`) and rescaled per image (:func:`normalize_maps`). Notebook 02 runs these
    steps one by one.
    """
    layers = list(layers)
    if not layers:
        raise InvalidInputError("fuse_activations needs at least one layer")
    missing = [n for n in layers if n not in stages]
    if missing:
        raise InvalidInputError(f"activations of {missing} were not captured; got {sorted(stages)}")
    if weights is None:
        weights = [1.0] * len(layers)
    weights = [float(w) for w in weights]
    if len(weights) != len(layers):
        raise InvalidInputError(f"{len(weights)} weights for {len(layers)} layers")
    if align not in ALIGNS:
        raise InvalidInputError(f"align must be one of {ALIGNS}, got {align!r}")
    maps = [aggregate_channels(stages[n], aggregate) for n in layers]
    b = maps[0].shape[0]
    if any(m.shape[0] != b for m in maps):
        raise InvalidInputError("all stage activations must have the same batch size")
    for name in layers:
        if not torch.isfinite(stages[name]).all():
            raise InvalidInputError(f"activations of {name} contain NaN or Inf (a diverged network? check its training loss)")
    maps = align_maps(maps, align)
    size = tuple(maps[0].shape[-2:])
    fused = torch.zeros((b,) + size, dtype=torch.float32, device=maps[0].device)
    for w, m in zip(weights, maps):
        if normalize_each:
            m = normalize_maps(m, "minmax")
        fused = fused + w * m
    if out_size is not None:
        fused = resize_maps(fused, out_size)
    return normalize_maps(fused, normalize)


def cam_maps(score_maps: torch.Tensor, tags: torch.Tensor, out_size: tuple[int, int] | None = None,
             normalize: str = "max") -> torch.Tensor:
    """CAM baseline: ``score_maps`` ``(B, K, h, w)`` (the classifier's class maps), ``tags`` ``(B, K)``
    {0, 1} -> ``(B, H, W)`` in [0, 1]: each present class's map normalised on its own
    (``"max"``: ReLU then divide by the max, the usual CAM recipe; or ``"minmax"``), then the max
    over present classes, all at score-map resolution; the result is then upsampled to ``out_size``.
    Images without tags get the map of their top-scoring class."""
    if score_maps.ndim != 4 or tags.ndim != 2 or tuple(tags.shape) != tuple(score_maps.shape[:2]):
        raise InvalidInputError(f"score_maps must be (B, K, h, w) and tags (B, K); got {tuple(score_maps.shape)}, "
                                f"{tuple(tags.shape)}")
    sm = score_maps.float()
    b, k, h, w = sm.shape
    norm = normalize_maps(sm.reshape(b * k, h, w), normalize).reshape(b, k, h, w)
    present = tags.to(sm.device) > 0.5
    none = ~present.any(1)
    if none.any():
        top = sm.flatten(2).mean(-1).argmax(1)
        present = present.clone()
        present[none, top[none]] = True
    norm = norm.masked_fill(~present[:, :, None, None], 0.0)
    cam = norm.amax(1)  # normalised and maxed at score-map resolution; one map per image is upsampled
    return resize_maps(cam, out_size) if out_size is not None else cam


def floor_mask(shape: tuple[int, ...]) -> torch.Tensor:
    """The "whole image is foreground" floor: ones of ``shape`` ``(B, H, W)`` (a bool tensor)."""
    return torch.ones(tuple(shape), dtype=torch.bool)


def _gaussian_kernel1d(sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Normalised 1-D Gaussian taps ``(2 r + 1,)``, ``r = ceil(truncate * sigma)``."""
    r = max(1, int(math.ceil(truncate * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, 1, H, W)`` with replicated borders (any image size)."""
    k = _gaussian_kernel1d(sigma).to(x.device, x.dtype)
    r = (k.numel() - 1) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def _sobel_magnitude(grey: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude ``(B, 1, H, W)`` of ``(B, 1, H, W)`` with 3x3 Sobel kernels normalised by
    1/8 (a unit step of intensity -> 0.5 at the edge), replicated borders."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=grey.device) / 8.0
    kernels = torch.stack([kx, kx.T])[:, None].to(grey.dtype)  # (2, 1, 3, 3): d/dx, d/dy
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(1, keepdim=True).sqrt()


def lowlevel_objectness(images: torch.Tensor, sigma: float = 4.0, kind: str = "gradient") -> torch.Tensor:
    """Training-free low-level "objectness" map [ours]: local edge / texture energy of the image.

    *Is the built-in prior more than low-level cues?* A network-free baseline for the fused fg/bg
    map of :func:`fuse_activations` (threshold it, CRF-refine it, score it the same way).

    ``images`` float ``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, H, W)`` float32 in [0, 1] (1 = most
    textured; each map min-max normalised on its own, a constant map -> 0). The grey image is
    ``0.299 R + 0.587 G + 0.114 B`` (ITU-R 601). ``kind``:

    * ``"gradient"`` [ours, default]: Sobel gradient magnitude, then Gaussian-smoothed with
      standard deviation ``sigma`` px (so edges spread into the regions they bound);
    * ``"variance"`` [ours]: local variance of the grey image in a Gaussian window of standard
      deviation ``sigma`` px, ``G*(I^2) - (G*I)^2``.

    The Gaussian is truncated at ``3 sigma``, borders are replicated. ``sigma`` > 0 (default 4.0
    [ours]; scale it with the image size).
    """
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise InvalidInputError(f"images must be (B, 3, H, W), got {got}")
    if not images.is_floating_point():
        raise InvalidInputError(f"images must be float RGB in [0, 1], got dtype {images.dtype}")
    if kind not in OBJECTNESS_KINDS:
        raise InvalidInputError(f"kind must be one of {OBJECTNESS_KINDS}, got {kind!r}")
    try:
        sigma = float(sigma)
    except (TypeError, ValueError):
        raise InvalidInputError(f"sigma must be a number > 0, got {sigma!r}") from None
    if not math.isfinite(sigma) or sigma <= 0:
        raise InvalidInputError(f"sigma must be a finite number > 0, got {sigma}")
    x = images.float()
    if x.numel() and (not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1):
        raise InvalidInputError("images must be finite RGB values in [0, 1]")
    rgb = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    grey = (x * rgb).sum(1, keepdim=True)  # (B, 1, H, W)
    if kind == "gradient":
        energy = _gaussian_blur(_sobel_magnitude(grey), sigma)
    else:
        mean = _gaussian_blur(grey, sigma)
        energy = (_gaussian_blur(grey * grey, sigma) - mean * mean).clamp(min=0)
    return normalize_maps(energy[:, 0], "minmax")


def calibrate(maps: torch.Tensor | np.ndarray, threshold: float = 0.5):
    """Map scores in [0, 1] to fg probabilities so that ``threshold`` -> 0.5 (piecewise linear,
    monotone; identity when ``threshold == 0.5``) [ours] — the CRF unary then agrees with the
    thresholded map."""
    t = float(threshold)
    if not 0 < t < 1:
        raise InvalidInputError(f"threshold must lie in (0, 1), got {t}")
    lib = torch if torch.is_tensor(maps) else np
    lo = 0.5 * maps / t
    hi = 0.5 + 0.5 * (maps - t) / (1 - t)
    return lib.where(maps < t, lo, hi)


def threshold_masks(maps, threshold: float = 0.5):
    """``maps >= threshold`` (bool, same type as input)."""
    return maps >= threshold


def threshold_counts(maps, labels, thresholds: Sequence[float], ignore_index: int = 255) -> np.ndarray:
    """Pooled counts for :func:`choose_threshold`: ``(T, 2)`` int64 ``[intersection, union]`` of
    ``maps >= t`` with the ground-truth foreground for each threshold ``t``. Counts of several
    batches (e.g. full-size images of different sizes, one at a time) add up."""
    m = torch.as_tensor(np.asarray(maps)).float()
    t = torch.as_tensor(np.asarray(labels))
    keep = t != ignore_index
    g = ((t != 0) & keep)[keep]
    m = m[keep]
    out = np.zeros((len(thresholds), 2), np.int64)
    for k, th in enumerate(thresholds):
        p = m >= th
        out[k] = ((p & g).sum().item(), (p | g).sum().item())
    return out


def choose_threshold(maps, labels, thresholds: Sequence[float] = tuple(np.linspace(0.05, 0.95, 19)),
                     ignore_index: int = 255, counts: np.ndarray | None = None) -> tuple[float, dict[float, float]]:
    """Pick the threshold with the best pooled mask IoU (use VAL maps, never test).

    ``maps`` float ``(N, H, W)`` in [0, 1]; ``labels`` int ``(N, H, W)`` (non-zero = fg, 255 ignored).
    Or ``counts``: summed :func:`threshold_counts` (then ``maps``/``labels`` are not read).
    Returns ``(best threshold, {threshold: iou})``.
    """
    c = counts if counts is not None else threshold_counts(maps, labels, thresholds, ignore_index)
    scores = {float(th): (float(i / u) if u else 1.0) for th, (i, u) in zip(thresholds, c)}
    best = max(scores, key=scores.get)
    return best, scores


def extract_masks(classifier: torch.nn.Module, images: torch.Tensor, tags: torch.Tensor | None = None,
                  layers: Sequence[str] = ("conv4", "conv5"), weights: Sequence[float] | None = None,
                  aggregate: str = "mean", normalize: str = "minmax", align: str = "largest",
                  normalize_each: bool = False, out_size: tuple[int, int] | None = None,
                  batch_size: int = 64, device: torch.device | str | None = None, amp: bool = True,
                  progress: bool = False, cam_normalize: str = "max") -> dict[str, torch.Tensor]:
    """Fused fg/bg maps and CAM maps from one forward pass per batch (``cam_normalize``: see
    :func:`cam_maps`; "minmax" is Zhou et al.'s, unaffected by the head's bias).

    ``images`` float ``(N, 3, H, W)`` in [0, 1]; ``tags`` ``(N, K)`` {0, 1} (for CAM; ``None`` ->
    the classifier's own predictions). Returns CPU tensors ``{"fused": (N, H, W) [0, 1],
    "cam": (N, H, W) [0, 1], "logits": (N, K)}`` (``H, W = out_size`` or the image size).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInputError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    out_size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])

    def forward(lo, hi, device):
        return classifier(images[lo:hi].to(device, non_blocking=True).float(), return_stages=tuple(layers)), device

    def post(res, lo, hi):
        out, device = res
        lg = out["logits"].float()
        t = tags[lo:hi].to(device) if tags is not None else (lg > 0).float()
        return {"fused": fuse_activations(out["stages"], layers, weights, aggregate, normalize, out_size, align,
                                          normalize_each).cpu(),
                "cam": cam_maps(out["score_maps"], t, out_size, cam_normalize).cpu(), "logits": lg.cpu()}

    return predict_batches(classifier, images.shape[0], forward, post, batch_size=batch_size, device=device,
                           amp=amp, progress=progress, desc="masks")


def refine_masks(images: Sequence[np.ndarray], maps, threshold: float = 0.5, params=None,
                 workers: int | None = None, progress: bool = False, device=None) -> np.ndarray:
    """Dense-CRF smoothing of fg maps: ``images`` N uint8 ``(H, W, 3)``, ``maps`` float ``(N, H, W)``
    in [0, 1] -> refined fg probabilities float32 ``(N, H, W)`` (lists of ``(H_i, W_i)`` maps of images
    of different sizes -> a list of ``(H_i, W_i)``). The maps are first calibrated so
    ``threshold`` -> 0.5 (:func:`calibrate`); threshold the result at 0.5. ``device``: a CUDA device
    runs the CRF batched there (:func:`~wsss_lib.ops.crf.crf_batch`)."""
    if isinstance(maps, (list, tuple)):  # images of different sizes: a list in, a list out
        probs = [np.ascontiguousarray(calibrate(np.asarray(x.cpu() if torch.is_tensor(x) else x, np.float32),
                                                threshold), dtype=np.float32) for x in maps]
        return crf_batch(list(images), probs, params, workers=workers, progress=progress, desc="CRF masks",
                         device=device)
    m = np.asarray(maps.cpu() if torch.is_tensor(maps) else maps, dtype=np.float32)
    probs = [np.ascontiguousarray(calibrate(x, threshold), dtype=np.float32) for x in m]
    out = crf_batch(list(images), probs, params, workers=workers, progress=progress, desc="CRF masks", device=device)
    return np.stack(out) if out else np.zeros_like(m)


def evaluate_masks(pred, labels, ignore_index: int = 255) -> dict[str, float]:
    """Pooled (dataset-level) mask IoU / precision / recall: ``pred`` bool ``(N, H, W)``, ``labels``
    int ``(N, H, W)`` (non-zero = fg; 255 ignored). Wraps :func:`~wsss_lib.core.metrics.mask_scores`."""
    p = pred.cpu().numpy() if torch.is_tensor(pred) else np.asarray(pred)
    t = labels.cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    return mask_scores(p.astype(bool), t, ignore_index=ignore_index)


def per_image_iou(pred, labels, ignore_index: int = 255) -> np.ndarray:
    """Mask IoU of each image ``(N,)`` (empty union -> 1)."""
    p = np.asarray(pred.cpu() if torch.is_tensor(pred) else pred).astype(bool)
    t = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels)
    keep = t != ignore_index
    g = (t != 0) & keep
    p = p & keep
    inter = (p & g).reshape(len(p), -1).sum(1)
    union = (p | g).reshape(len(p), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def extract_variants(classifier: torch.nn.Module, images: torch.Tensor, variants: dict[str, dict],
                     batch_size: int = 64, device: torch.device | str | None = None, amp: bool = True,
                     out_size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Several fusion variants from ONE forward pass per batch.

    ``variants``: ``{name: fuse_activations keyword dict}`` (``layers``, ``weights``, ``aggregate``,
    ``normalize``, ``align``, ``normalize_each``). Returns ``{name: (N, H, W) in [0, 1]}`` (CPU).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInputError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    needed = sorted({layer for kw in variants.values() for layer in kw.get("layers", ("conv4", "conv5"))})
    out_size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])

    def forward(lo, hi, device):
        return classifier(images[lo:hi].to(device).float(), return_stages=tuple(needed))["stages"]

    def post(st, lo, hi):
        return {name: fuse_activations(st, out_size=out_size, **kw).cpu() for name, kw in variants.items()}

    return predict_batches(classifier, images.shape[0], forward, post, batch_size=batch_size, device=device, amp=amp,
                           desc="mask variants")
