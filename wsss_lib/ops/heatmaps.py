"""Classifier heatmaps for every class (background ones too) and the regions they give the loss.

Paper 2 localises foreground *and* background classes (road, sky, building...) with
class-dependent heatmaps of a multi-label image classifier ([paper]/[summary]). Our
reconstruction ([ours], each choice a parameter):

1. :func:`class_heatmaps` — apply the tag classifier fully convolutionally and read one map per
   class: ``layer="score"`` (default) takes its class score maps (a CAM: the 1x1 classifier on the
   last stage); a stage name (``"conv3"``, ``"conv4"``...) gives a Grad-CAM map at that stage
   (channels weighted by the spatially averaged gradient of the class logit).
2. :func:`normalise_maps` — per image and per class to [0, 1]: ``"minmax"`` (default),
   ``"max"`` (ReLU then divide by the max), ``"sigmoid"`` (absolute, not per image),
   ``"softmax"`` (across classes) or ``"none"`` (clipped).
3. :func:`heatmap_regions` — for each *tagged* class the pixels where its normalised heatmap is
   the largest among the tagged classes (``mode="argmax"``, default) and at least
   ``threshold``; ``mode="soft"`` keeps the heatmap value as a weight instead; optionally refined
   by a dense CRF (:func:`wsss_lib.ops.crf.dense_crf`) over the tagged classes. The result,
   ``regions (B, C, H, W)`` in [0, 1], is what :func:`wsss_lib.ops.losses.region_loss` rewards.
4. :func:`heatmap_auc` — how well a heatmap localises its class inside an image (per-image ROC AUC
   against the pixel labels): the check that heatmaps show *location*, not co-occurrence.

All functions are batched and run on CPU or GPU.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import InvalidInputError
from ..core.io import to_uint8_image
from ..core.metrics import binary_auc
from ..core.runtime import predict_batches
from . import crf as crf_mod
from .masks import normalize_maps

NORMALISATIONS = ("minmax", "max", "sigmoid", "softmax", "none")
REGION_MODES = ("argmax", "soft")


def _check_maps(maps: torch.Tensor, name: str = "maps") -> None:
    if not torch.is_tensor(maps) or maps.ndim != 4:
        raise InvalidInputError(f"{name} must be a (B, K, H, W) tensor, got "
                                f"{tuple(maps.shape) if torch.is_tensor(maps) else type(maps).__name__}")
    if not maps.is_floating_point():
        raise InvalidInputError(f"{name} must be floating point, got {maps.dtype}")
    if not torch.isfinite(maps).all():
        raise InvalidInputError(f"{name} contain NaN or Inf values (a diverged classifier? check its training loss)")


def normalise_maps(maps: torch.Tensor, method: str = "minmax", eps: float = 1e-6) -> torch.Tensor:
    """Per-image, per-class normalisation of class maps to [0, 1].

    ``maps``: float ``(B, K, h, w)`` raw scores. Returns float ``(B, K, h, w)`` in [0, 1]:

    * ``"minmax"``: ``(s - min) / (max - min)`` over each image's map (a constant map -> 0);
    * ``"max"``: ``relu(s) / max(relu(s))`` (an all-negative map -> 0);
    * ``"sigmoid"``: ``sigmoid(s)`` (not per image: keeps the classifier's absolute confidence);
    * ``"softmax"``: softmax across classes at each pixel;
    * ``"none"``: ``s`` clipped to [0, 1].
    """
    _check_maps(maps)
    if method not in NORMALISATIONS:
        raise InvalidInputError(f"unknown normalisation {method!r}; use one of {NORMALISATIONS}")
    m = maps.float()
    if method in ("minmax", "max"):
        return normalize_maps(m, method, eps)  # the one min-max / max rescaling (ops.masks)
    if method == "sigmoid":
        return torch.sigmoid(m)
    if method == "softmax":
        return torch.softmax(m, dim=1)
    return m.clamp(0, 1)


def _forward_stages(classifier, x: torch.Tensor, stages: Sequence[str]):
    """Run the classifier asking for stage activations (API of :class:`TagClassifier`)."""
    try:
        return classifier(x, return_stages=tuple(stages))
    except TypeError:
        return classifier(x)


def raw_class_maps(classifier: torch.nn.Module, images: torch.Tensor, layer: str = "score") -> torch.Tensor:
    """Un-normalised class maps ``(B, K, h, w)`` of ``classifier`` on ``images (B, 3, H, W)`` in [0, 1].

    ``layer="score"``: the classifier's own score maps (output stride of its backbone).
    Any stage name of its backbone (``"conv3"``...): Grad-CAM at that stage,
    ``relu(sum_c mean_ij(d logit_k / d A_c) * A_c)``, one backward pass per class.
    """
    if layer == "score":
        with torch.no_grad():
            out = classifier(images)
        return out["score_maps"].float()
    with torch.enable_grad():
        x = images.detach().requires_grad_(False)
        out = _forward_stages(classifier, x, (layer,))
        stages = out.get("stages") or {}
        if layer not in stages:
            raise InvalidInputError(f"layer {layer!r} not available; use 'score' or one of the backbone stages "
                                    f"{sorted(stages) or '(conv1..conv5)'}")
        act = stages[layer]
        logits = out["logits"]
        maps = []
        for k in range(logits.shape[1]):
            (g,) = torch.autograd.grad(logits[:, k].sum(), act, retain_graph=k + 1 < logits.shape[1])
            w = g.mean(dim=(2, 3), keepdim=True)
            maps.append(F.relu((w * act).sum(dim=1)).detach())
    return torch.stack(maps, dim=1).float()


def class_heatmaps(classifier: torch.nn.Module, images: torch.Tensor, layer: str = "score",
                   normalisation: str = "minmax", size: tuple[int, int] | None = None,
                   batch_size: int = 32) -> torch.Tensor:
    """Normalised per-class heatmaps of a multi-label tag classifier.

    Parameters
    ----------
    classifier: a :class:`~wsss_lib.models.classifier.TagClassifier` (any module returning
        ``{"logits": (B, K), "score_maps": (B, K, h, w), "stages": {...}}``); put in eval mode here.
    images: float ``(B, 3, H, W)`` in [0, 1] on the classifier's device.
    layer, normalisation: see :func:`raw_class_maps` and :func:`normalise_maps`.
    size: output size, default the input's ``(H, W)`` (maps are normalised at feature resolution,
        then bilinearly upsampled, so they stay in [0, 1]).
    batch_size: images per forward pass (memory bound).

    Returns
    -------
    float ``(B, K, H, W)`` in [0, 1] on ``images.device``.
    """
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInputError(f"images must be (B, 3, H, W) in [0, 1], got "
                                f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    if normalisation not in NORMALISATIONS:
        raise InvalidInputError(f"unknown normalisation {normalisation!r}; use one of {NORMALISATIONS}")
    size = tuple(size) if size is not None else tuple(images.shape[-2:])

    def forward(lo, hi, device):  # Grad-CAM needs gradients; no autocast (amp=False), as before
        return raw_class_maps(classifier, images[lo:hi].float().contiguous(), layer)

    def post(raw, lo, hi):
        maps = normalise_maps(raw, normalisation)
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False).clamp_(0, 1)

    return predict_batches(classifier, images.shape[0], forward, post, batch_size=batch_size, amp=False, grad=True,
                           desc="heatmaps")


def ubiquitous_classes(tags, min_freq: float = 0.95) -> list[int]:
    """Classes tagged in at least ``min_freq`` of the images of ``tags`` ``(N, C)``.

    An image classifier cannot learn *where* such a class is (it is never absent, so its score
    needs no spatial evidence); :func:`heatmap_regions` can define their heatmaps by exclusion.
    """
    t = torch.as_tensor(tags).float()
    if t.ndim != 2 or t.shape[0] == 0:
        raise InvalidInputError(f"tags must be a non-empty (N, C) array, got {tuple(t.shape)}")
    return [int(c) for c in torch.nonzero(t.mean(0) >= float(min_freq)).flatten()]


def heatmap_auc(heatmaps: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> np.ndarray:
    """How well each class's heatmap *localises* it inside each image: per image and class, the
    area under the ROC curve of the heatmap as a detector of that class's pixels
    (:func:`~wsss_lib.core.metrics.binary_auc`; 0.5 = no information, < 0.5 = anti-localised).

    ``heatmaps`` float ``(N, C, H, W)`` (any range; one channel per dataset class), ``labels`` int
    ``(N, H, W)`` (pixels equal to ``ignore_index`` are left out). Returns float64 ``(N, C)``: NaN
    where the class has no pixel in the image, or covers all of it.
    """
    _check_maps(heatmaps, "heatmaps")
    lab = torch.as_tensor(labels).long()
    if lab.shape != heatmaps.shape[:1] + heatmaps.shape[2:]:
        raise InvalidInputError(f"labels must be (N, H, W) = {tuple(heatmaps.shape[:1] + heatmaps.shape[2:])}, "
                                f"got {tuple(lab.shape)}")
    n, c = heatmaps.shape[:2]
    out = np.full((n, c), np.nan)
    hm = heatmaps.detach().float().cpu()
    lab = lab.cpu()
    for i in range(n):
        valid = lab[i] != ignore_index
        li = lab[i][valid]
        for k in torch.unique(li).tolist():
            if 0 <= k < c:
                out[i, k] = binary_auc(hm[i, k][valid], li == k)
    return out


def heatmap_regions(heatmaps: torch.Tensor, tags: torch.Tensor, threshold: float = 0.2, mode: str = "argmax",
                    images: torch.Tensor | None = None, crf=None, complement: Sequence[int] = ()) -> torch.Tensor:
    """Regions (pixel sets or weights) of the tagged classes from normalised heatmaps.

    Parameters
    ----------
    heatmaps: float ``(B, C, H, W)`` in [0, 1] (:func:`class_heatmaps`).
    tags: ``(B, C)`` multi-hot, 1 = class present in the image (background classes included).
    threshold: a pixel whose best tagged heatmap is below it is given to no class.
    mode: ``"argmax"`` -> ``regions[b, k] = 1`` where k is the tagged class with the largest
        heatmap; ``"soft"`` -> the same pixels weighted by that heatmap value.
    images: float ``(B, 3, H, W)`` in [0, 1] (or uint8 ``(B, H, W, 3)``); needed only with ``crf``.
    crf: ``None``, ``True`` (default :class:`wsss_lib.ops.crf.CRFParams`) or a ``CRFParams``: the
        tagged classes' heatmaps (normalised to sum 1 per pixel) are refined by a dense CRF and
        the argmax of its output replaces the raw argmax (the threshold still applies to the raw
        maps).
    complement: classes whose heatmap is replaced by ``1 - max`` of the other tagged classes'
        heatmaps (default none) [ours]: for classes present in (almost) every training image
        (:func:`ubiquitous_classes`, e.g. road), which a tag classifier cannot localise.

    Returns
    -------
    float ``(B, C, H, W)`` in [0, 1]; zero for untagged classes; at most one non-zero class per pixel.
    """
    _check_maps(heatmaps, "heatmaps")
    if mode not in REGION_MODES:
        raise InvalidInputError(f"unknown region mode {mode!r}; use one of {REGION_MODES}")
    B, C = heatmaps.shape[:2]
    tags = torch.as_tensor(tags, device=heatmaps.device)
    if tags.shape != (B, C):
        raise InvalidInputError(f"tags must be (B, C) = {(B, C)}, got {tuple(tags.shape)}")
    present = tags > 0.5
    h = heatmaps.float().clamp(0, 1)
    comp = [int(c) for c in complement if 0 <= int(c) < C]
    if comp:
        others = present.clone()
        others[:, comp] = False
        rest = torch.where(others[:, :, None, None], h, torch.zeros_like(h)).amax(dim=1)  # (B, H, W)
        h = h.clone()
        h[:, comp] = (1.0 - rest)[:, None].expand(-1, len(comp), -1, -1)
    masked = torch.where(present[:, :, None, None], h, torch.full_like(h, -1.0))
    best, arg = masked.max(dim=1)  # (B, H, W)
    if crf is not None and crf is not False:
        arg = _crf_argmax(h, present, images, crf).to(arg.device)
    keep = (best >= float(threshold)) & present.any(dim=1)[:, None, None]
    onehot = F.one_hot(arg, C).permute(0, 3, 1, 2).float() * keep[:, None].float()
    onehot = onehot * present[:, :, None, None].float()
    if mode == "soft":
        onehot = onehot * h
    return onehot


def _crf_argmax(h: torch.Tensor, present: torch.Tensor, images, crf) -> torch.Tensor:
    if images is None:
        raise InvalidInputError("heatmap_regions(crf=...) needs the images")
    params = crf_mod.CRFParams() if crf is True else crf
    B, C, H, W = h.shape
    out = torch.zeros((B, H, W), dtype=torch.long)
    for b in range(B):
        idx = torch.nonzero(present[b]).flatten()
        if idx.numel() == 0:
            continue
        img = to_uint8_image(images[b])
        if img.shape[:2] != (H, W):
            raise InvalidInputError(f"image {b} is {img.shape[:2]}, heatmaps are {(H, W)}")
        p = h[b, idx].cpu().double() + 1e-3
        p = (p / p.sum(0, keepdim=True)).numpy().astype(np.float32)
        q = crf_mod.dense_crf(img, p, params)
        q = torch.as_tensor(np.asarray(q))
        lab = q.argmax(0) if q.ndim == 3 else q.long()
        out[b] = idx.cpu()[lab.long()]
    return out


def regions_to_label(regions: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Regions ``(B, C, H, W)`` -> label map ``(B, H, W)`` int64: argmax class, ``ignore_index`` where empty."""
    _check_maps(regions, "regions")
    val, arg = regions.max(dim=1)
    return torch.where(val > 0, arg, torch.full_like(arg, ignore_index))


def label_to_regions(label: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Label map ``(B, H, W)`` -> one-hot regions ``(B, C, H, W)`` float (ignore -> all zero)."""
    lab = torch.as_tensor(label).long()
    if lab.ndim != 3:
        raise InvalidInputError(f"label must be (B, H, W), got {tuple(lab.shape)}")
    valid = lab != ignore_index
    oh = F.one_hot(torch.where(valid, lab, torch.zeros_like(lab)).clamp(0, num_classes - 1), num_classes)
    return oh.permute(0, 3, 1, 2).float() * valid[:, None].float()
