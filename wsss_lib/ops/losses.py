"""Weakly-supervised segmentation losses.

One generalised **region loss** serves both papers. With ``S^k`` the per-pixel softmax over the
C output classes, upsampled to the region resolution ``(H, W)``:

    L = 1/|P| sum_{k in P} -log( pool_{R_k} S^k )   +   sum_{k in P_sep} -log( pool_{R_k} S^k )
        + 1/|A| sum_{k in A} -log( 1 - pool_image S^k )

``pool_image`` (the absent term) pools the score map at its own resolution ``(h, w)`` [ours];
``"mean"`` pooling of the present term is computed exactly at that resolution too, through the
transpose of the upsampling (:func:`upsample_adjoint`), so the loss costs less than a
cross-entropy step. ``P`` = present classes (their region ``R_k`` is a soft weight map in [0, 1]), ``A`` = absent
classes, ``P_sep`` = present classes listed in ``separate`` (added with weight 1 each instead of
being averaged with the others; paper 1's background term). ``pool`` is a weighted spatial pooling:
``"mean"`` (sum w S / sum w), ``"max"`` (max over pixels with w > 0), ``"lse"`` (soft max,
``(1/r) log(sum w exp(r S) / sum w)``), or ``"pixel"`` (the mean of per-pixel log-probabilities,
i.e. weighted cross-entropy: ``-sum w log S / sum w``).

* Paper 1 [ours, see papers README]: :func:`fgbg_prior_loss` — background class 0 rewarded over
  ``1 - mask``, each present foreground class over ``mask``, absent classes penalised through
  their image maximum. With ``accepted`` (check-mask), rejected images fall back to the tag term.
  ``present_term=w > 0`` adds the [summary] loss's image-level tag term over present classes,
  ``w * (-1/|L| sum_{k in L} log pool_image S^k)`` (:func:`present_tag_loss`; the weight and the
  pooling, ``tag_pooling``, are [ours]; ``w = 0``, the default, leaves the loss unchanged).
* Paper 2 [ours]: every tagged class (fg or bg) rewarded over its own heatmap region: call
  :func:`region_loss` with those regions and ``separate=()`` (all classes equal).
* Baselines: :func:`tags_only_loss` (no mask: MIL-style pooling over the whole image) and
  :func:`cross_entropy` (full supervision, 255 ignored; optional class weights, e.g. median-frequency
  balancing from :func:`median_frequency_weights`).

Gradients: through the softmax, a present term pooled over a region only reaches the logits of
pixels inside that region (mean/lse/pixel) or its arg-max pixel (max); the absent term with max
pooling only reaches each absent class's arg-max pixel. ``tests/test_losses.py`` checks this.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..core.errors import InvalidInputError

POOLINGS = ("mean", "max", "lse", "pixel")
IGNORE_INDEX = 255


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, C, h, w)`` to ``size`` (no-op when equal)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def pool_region(values: torch.Tensor, weights: torch.Tensor | None, pooling: str = "mean", r: float = 5.0,
                eps: float = 1e-6) -> torch.Tensor:
    """Weighted spatial pooling of probabilities ``values`` ``(B, C, H, W)`` in [0, 1] over
    ``weights`` ``(B, C, H, W)`` in [0, 1] (broadcast views, e.g. ``expand``, are fine; ``None`` =
    the whole image) -> ``(B, C)``. For ``"pixel"`` this returns the weighted mean of
    ``log(values)`` (a log-probability, not a probability)."""
    if pooling not in POOLINGS:
        raise InvalidInputError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    flat_v = values.flatten(2)
    if weights is None:  # whole image: plain reductions, no weight tensor
        if pooling == "mean":
            return flat_v.mean(-1)
        if pooling == "max":
            return flat_v.amax(-1)
        if pooling == "lse":
            n = torch.log(torch.tensor(float(flat_v.shape[-1]), dtype=flat_v.dtype, device=flat_v.device))
            return ((torch.logsumexp(r * flat_v, dim=-1) - n) / r).clamp(0.0, 1.0)
        return torch.log(flat_v.clamp(min=eps)).mean(-1)
    flat_w = weights.flatten(2)
    wsum = flat_w.sum(-1)
    if pooling == "mean":
        return (flat_v * flat_w).sum(-1) / wsum.clamp(min=eps)
    if pooling == "max":
        return torch.where(flat_w > 0, flat_v, torch.zeros_like(flat_v)).amax(-1)
    if pooling == "lse":
        # log of the w-weighted mean of exp(r v), computed stably; w == 0 -> excluded
        empty = (wsum <= 0)[..., None]
        flat_w = torch.where(empty, torch.ones_like(flat_w), flat_w)  # empty regions: any finite value
        wsum = flat_w.sum(-1)
        logw = torch.log(flat_w.clamp(min=eps)).masked_fill(flat_w <= 0, float("-inf"))
        lse = torch.logsumexp(r * flat_v + logw, dim=-1) - torch.log(wsum.clamp(min=eps))
        return (lse / r).clamp(0.0, 1.0)
    return (torch.log(flat_v.clamp(min=eps)) * flat_w).sum(-1) / wsum.clamp(min=eps)


@functools.lru_cache(maxsize=32)
def _interp_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` matrix of 1-D linear interpolation exactly as ``F.interpolate`` does it
    (``align_corners=False``); bilinear 2-D resizing is ``A_h X A_w^T`` with two of these."""
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, :]  # (n_in, 1, n_in): one basis vector per row
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :].T.contiguous()


def upsample_adjoint(weights: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The transpose of :func:`upsample`: ``weights`` ``(B, C, H, W)`` -> ``(B, C, h, w)`` with
    ``<upsample(S), weights> == <S, upsample_adjoint(weights)>`` for every ``S`` ``(B, C, h, w)``.

    Lets a weighted *mean* over the upsampled map be computed at the score-map resolution, without
    upsampling (or back-propagating through) the ``(B, C, H, W)`` probabilities."""
    h, w = size
    H, W = weights.shape[-2:]
    a_h = _interp_matrix(h, H).to(weights.device, torch.float32)  # (H, h)
    a_w = _interp_matrix(w, W).to(weights.device, torch.float32)  # (W, w)
    return a_h.T @ (weights.float() @ a_w)


def _check(seg_logits, regions=None, present=None):
    if not torch.is_tensor(seg_logits) or seg_logits.ndim != 4 or seg_logits.shape[1] < 2:
        got = tuple(seg_logits.shape) if torch.is_tensor(seg_logits) else type(seg_logits).__name__
        raise InvalidInputError(f"seg_logits must be (B, C, h, w) with C >= 2, got {got}")
    b, c = seg_logits.shape[:2]
    if regions is not None and (regions.ndim != 4 or tuple(regions.shape[:2]) != (b, c)):
        raise InvalidInputError(f"regions must be (B, C, H, W) = ({b}, {c}, H, W), got {tuple(regions.shape)}")
    if present is not None and tuple(present.shape) != (b, c):
        raise InvalidInputError(f"present must be (B, C) = ({b}, {c}), got {tuple(present.shape)}")


def region_loss_terms(seg_logits: torch.Tensor, regions: torch.Tensor, present: torch.Tensor, pooling: str = "mean",
                      absent_pooling: str = "max", separate: tuple[int, ...] = (), lse_r: float = 5.0,
                      eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """The three terms of :func:`region_loss`, each ``(B,)`` float32 (arguments as there)::

        "present"   1/|P \\ P_sep| sum_{k in P \\ P_sep} -log pool_{R_k} S^k   (averaged present classes)
        "separate"  sum_{k in P_sep} -log pool_{R_k} S^k                   (e.g. paper 1's background term)
        "absent"    1/|A| sum_{k in A} -log(1 - pool_image S^k)

    ``region_loss(...) == (present + separate + absent_weight * absent)`` averaged over the batch
    (``reduction="mean"``). Notebooks 04 and 07 print them on one batch.
    """
    _check(seg_logits, regions, present)
    if pooling not in POOLINGS or absent_pooling not in ("mean", "max", "lse"):
        raise InvalidInputError(f"pooling must be one of {POOLINGS} and absent_pooling one of mean/max/lse; "
                                f"got {pooling!r}, {absent_pooling!r}")
    with torch.autocast(seg_logits.device.type, enabled=False):  # the loss is always float32
        probs = torch.softmax(seg_logits.float(), dim=1)  # (B, C, h, w)
        regions = regions.to(device=probs.device, dtype=probs.dtype)
        present = present.to(device=probs.device, dtype=probs.dtype)
        b, c = present.shape
        wsum = regions.flatten(2).sum(-1)
        pres = present * (wsum > 0).to(probs.dtype)
        sep = torch.zeros(c, dtype=probs.dtype, device=probs.device)
        if separate:
            sep[list(separate)] = 1.0
        if pooling == "mean":
            # exact and cheap: <upsample(S), R> = <S, upsample^T(R)>, all at score-map resolution
            low = upsample_adjoint(regions, probs.shape[-2:]) if regions.shape[-2:] != probs.shape[-2:] else regions
            pooled = (probs * low).flatten(2).sum(-1) / wsum.clamp(min=eps)
        else:  # max / lse / pixel are not linear: pool the upsampled probabilities
            pooled = pool_region(upsample(probs, regions.shape[-2:]), regions, pooling, lse_r, eps)
        nll = -pooled if pooling == "pixel" else -torch.log(pooled.clamp(min=eps))
        avg_w = pres * (1 - sep)
        present_avg = (nll * avg_w).sum(1) / avg_w.sum(1).clamp(min=1.0)
        present_sep = (nll * pres * sep).sum(1)
        absent = 1.0 - present
        # absent classes: pooled over the whole score map [ours]; for "max" this is the maximum of
        # the continuous bilinear surface (an upsampled image's own max can only be slightly lower)
        pooled_abs = pool_region(probs, None, absent_pooling, lse_r, eps)
        abs_nll = -torch.log((1.0 - pooled_abs).clamp(min=eps))
        absent_term = (abs_nll * absent).sum(1) / absent.sum(1).clamp(min=1.0)
    return {"present": present_avg, "separate": present_sep, "absent": absent_term}


def region_loss(seg_logits: torch.Tensor, regions: torch.Tensor, present: torch.Tensor, pooling: str = "mean",
                absent_pooling: str = "max", separate: tuple[int, ...] = (), lse_r: float = 5.0,
                absent_weight: float = 1.0, eps: float = 1e-5, reduction: str = "mean") -> torch.Tensor:
    """Generalised region loss (see module docstring; its terms: :func:`region_loss_terms`).

    ``seg_logits`` ``(B, C, h, w)`` raw scores; ``regions`` float ``(B, C, H, W)`` in [0, 1]
    (region weights of each class; only used for present classes); ``present`` ``(B, C)`` in
    {0, 1}. A present class with an empty region contributes nothing. ``reduction``: "mean"
    (scalar over the batch), "sum" or "none" (``(B,)``).
    """
    t = region_loss_terms(seg_logits, regions, present, pooling, absent_pooling, separate, lse_r, eps)
    loss = (t["present"] + t["separate"]) + absent_weight * t["absent"]
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


def loss_weight(value, name: str) -> float:
    """``value`` as a finite float >= 0 (a loss term's weight), else :class:`InvalidInputError` naming ``name``."""
    try:
        w = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(w) or w < 0:
        raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return w


def fgbg_regions(fg_tags: torch.Tensor, fg_mask: torch.Tensor,
                 valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper 1 regions: ``fg_tags`` (B, K) {0,1}, ``fg_mask`` (B, H, W) in [0, 1] ->
    (regions ``(B, K+1, H, W)``: class 0 = ``1 - mask``, class k = ``mask``; present ``(B, K+1)``
    with background always present). ``valid`` (B, H, W) bool: pixels outside it (crop padding)
    belong to no region."""
    if fg_mask.ndim != 3 or fg_tags.ndim != 2 or fg_mask.shape[0] != fg_tags.shape[0]:
        raise InvalidInputError(f"fg_tags must be (B, K) and fg_mask (B, H, W) with the same B; got "
                                f"{tuple(fg_tags.shape)} and {tuple(fg_mask.shape)}")
    m = fg_mask.float().clamp(0, 1)
    k = fg_tags.shape[1]
    regions = torch.cat([(1 - m)[:, None], m[:, None].expand(-1, k, -1, -1)], dim=1)
    if valid is not None:
        if tuple(valid.shape) != tuple(fg_mask.shape):
            raise InvalidInputError(f"valid must be (B, H, W) = {tuple(fg_mask.shape)}, got {tuple(valid.shape)}")
        regions = regions * valid.to(regions.device, regions.dtype)[:, None]
    present = torch.cat([torch.ones_like(fg_tags[:, :1]), fg_tags], dim=1).float()
    return regions, present


def tags_only_loss(seg_logits: torch.Tensor, fg_tags: torch.Tensor, pooling: str = "max",
                   absent_pooling: str = "max", lse_r: float = 5.0, reduction: str = "mean") -> torch.Tensor:
    """Tags-only baseline (no mask): present classes (background always included, added
    separately as in paper 1's formula) rewarded by their pooled score over the whole image
    (MIL: ``"max"``, the default; or ``"lse"``, ``"mean"``), absent classes penalised.
    ``seg_logits`` ``(B, K+1, h, w)``,
    ``fg_tags`` ``(B, K)``."""
    _check(seg_logits)
    b, c, h, w = seg_logits.shape
    if tuple(fg_tags.shape) != (b, c - 1):
        raise InvalidInputError(f"fg_tags must be (B, K) = ({b}, {c - 1}), got {tuple(fg_tags.shape)}")
    present = torch.cat([torch.ones_like(fg_tags[:, :1]), fg_tags], dim=1).float()
    regions = torch.ones((b, c, h, w), device=seg_logits.device)
    return region_loss(seg_logits, regions, present, pooling, absent_pooling, separate=(0,), lse_r=lse_r,
                       reduction=reduction)


def present_tag_loss(seg_logits: torch.Tensor, fg_tags: torch.Tensor, pooling: str = "max", lse_r: float = 5.0,
                     eps: float = 1e-5, reduction: str = "mean") -> torch.Tensor:
    """Image-level tag term over the present foreground classes (paper 1's loss [summary])::

        -1/|L| sum_{k in L} log pool_image S^k

    ``seg_logits`` ``(B, K+1, h, w)`` raw scores (class 0 = background, not part of ``L``);
    ``fg_tags`` ``(B, K)`` in {0, 1} (``L`` = the columns equal to 1). ``S^k`` is the per-pixel
    softmax, pooled over the whole score map at its own resolution ``(h, w)`` [ours, as the absent
    term] with :func:`pool_region` (``pooling``: ``"max"`` (MIL), ``"lse"``, ``"mean"``, or
    ``"pixel"``, the mean per-pixel log-probability). Images without a present foreground class
    contribute 0. Returns a value >= 0: ``(B,)`` for ``reduction="none"``, else a scalar
    (``"mean"`` over the batch, or ``"sum"``); always float32.

    This is exactly the foreground part of :func:`tags_only_loss`'s present term.
    """
    _check(seg_logits)
    b, c = seg_logits.shape[:2]
    if not torch.is_tensor(fg_tags) or tuple(fg_tags.shape) != (b, c - 1):
        got = tuple(fg_tags.shape) if torch.is_tensor(fg_tags) else type(fg_tags).__name__
        raise InvalidInputError(f"fg_tags must be (B, K) = ({b}, {c - 1}), got {got}")
    if pooling not in POOLINGS:
        raise InvalidInputError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if reduction not in ("mean", "sum", "none"):
        raise InvalidInputError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    with torch.autocast(seg_logits.device.type, enabled=False):  # the loss is always float32
        probs = torch.softmax(seg_logits.float(), dim=1)[:, 1:]  # (B, K, h, w): foreground classes
        pres = fg_tags.to(device=probs.device, dtype=probs.dtype)
        pooled = pool_region(probs, None, pooling, lse_r, eps)  # (B, K)
        nll = -pooled if pooling == "pixel" else -torch.log(pooled.clamp(min=eps))
        loss = (nll * pres).sum(1) / pres.sum(1).clamp(min=1.0)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def fgbg_prior_loss(seg_logits: torch.Tensor, fg_tags: torch.Tensor, fg_mask: torch.Tensor, pooling: str = "mean",
                    absent_pooling: str = "max", lse_r: float = 5.0, accepted: torch.Tensor | None = None,
                    tag_pooling: str = "max", reduction: str = "mean", present_term: float = 0.0,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """Paper 1's loss with the built-in fg/bg prior [ours reconstruction, see papers README]::

        L = -1/|L| sum_{k in L} log pool_{fg} S^k  -  log pool_{bg} S^0  -  1/|L̄| sum_{k in L̄} log(1 - max S^k)
            [ + present_term * (-1/|L| sum_{k in L} log pool_image S^k) ]

    ``seg_logits`` ``(B, K+1, h, w)`` (class 0 = background), ``fg_tags`` ``(B, K)`` {0,1},
    ``fg_mask`` ``(B, H, W)`` in [0, 1] (1 = foreground; soft masks act as weights).
    ``accepted`` ``(B,)`` {0,1} (check-mask): rejected images use :func:`tags_only_loss` with
    ``tag_pooling`` instead of the mask term.

    ``present_term`` (weight >= 0; 0 = off, the default, computes nothing extra): the papers
    README's [summary] image-level tag term over the present foreground classes,
    :func:`present_tag_loss` with ``pool_image`` = ``tag_pooling`` over the whole score map
    (weight and pooling [ours]); images without a present foreground class get 0 from it. It is
    added to the *accepted* images only: a rejected image's :func:`tags_only_loss` already holds
    this very term (same classes, same pooling) with weight 1, so it is not added a second time
    there. ``reduction``: "mean", "sum" or "none" (``(B,)``). ``valid`` ``(B, H, W)`` bool: only
    these pixels count in the fg / bg regions (crop padding is left out; :func:`fgbg_regions`).
    """
    _check(seg_logits)
    if fg_tags.shape[1] != seg_logits.shape[1] - 1:
        raise InvalidInputError(f"fg_tags must have K = {seg_logits.shape[1] - 1} columns (seg_logits has K+1 "
                                f"classes), got {tuple(fg_tags.shape)}")
    weight = loss_weight(present_term, "present_term")
    regions, present = fgbg_regions(fg_tags, fg_mask, valid)
    loss = region_loss(seg_logits, regions.to(seg_logits.device), present.to(seg_logits.device), pooling,
                       absent_pooling, separate=(0,), lse_r=lse_r, reduction="none")
    if weight > 0:
        loss = loss + weight * present_tag_loss(seg_logits, fg_tags, tag_pooling, lse_r, reduction="none")
    if accepted is not None:
        acc = accepted.to(loss.dtype).reshape(-1)
        if acc.numel() != loss.numel():
            raise InvalidInputError(f"accepted must be (B,) = ({loss.numel()},), got {tuple(accepted.shape)}")
        tag = tags_only_loss(seg_logits, fg_tags, tag_pooling, absent_pooling, lse_r, reduction="none")
        loss = acc * loss + (1 - acc) * tag
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def cross_entropy(seg_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Fully supervised upper bound: pixel cross-entropy of upsampled ``seg_logits``
    ``(B, C, h, w)`` against ``labels`` int64 ``(B, H, W)`` (``ignore_index`` skipped).

    ``weight`` ``(C,)``: per-class weights (e.g. :func:`median_frequency_weights`); the mean is then
    ``sum_i w_{y_i} CE_i / sum_i w_{y_i}`` over the labelled pixels (``torch.nn.functional.cross_entropy``).
    """
    _check(seg_logits)
    if labels.ndim != 3 or labels.shape[0] != seg_logits.shape[0]:
        raise InvalidInputError(f"labels must be (B, H, W), got {tuple(labels.shape)}")
    logits = upsample(seg_logits.float(), labels.shape[-2:])
    w = None
    if weight is not None:
        w = torch.as_tensor(weight, dtype=torch.float32, device=logits.device)
        if w.shape != (logits.shape[1],) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise InvalidInputError(f"weight must be ({logits.shape[1]},) finite and >= 0, got {tuple(w.shape)}")
    return F.cross_entropy(logits, labels.long(), weight=w, ignore_index=ignore_index)


def median_frequency_weights(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX,
                             chunk: int = 256) -> torch.Tensor:
    """Median-frequency-balancing class weights ``(C,)`` float32 from training labels ``(N, H, W)``.

    Eigen & Fergus (ICCV 2015) / SegNet: ``freq_c`` = pixels of class c divided by the pixels of the
    images in which c occurs; ``w_c = median_c'(freq_c') / freq_c`` (median over the classes that
    occur). Pixels labelled ``ignore_index`` count nowhere; a class that never occurs gets weight 0
    (no pixel ever carries it).
    """
    num_classes = int(num_classes)
    if labels.ndim != 3:
        raise InvalidInputError(f"labels must be (N, H, W), got {tuple(labels.shape)}")
    pix = torch.zeros(num_classes, dtype=torch.float64)
    area = torch.zeros(num_classes, dtype=torch.float64)
    for s in range(0, labels.shape[0], chunk):
        lab = labels[s:s + chunk].long().flatten(1)
        n = lab.shape[0]
        valid = lab != ignore_index
        if bool(((lab[valid] < 0) | (lab[valid] >= num_classes)).any()):
            raise InvalidInputError(f"labels outside [0, {num_classes}) (other than {ignore_index})")
        img = torch.arange(n)[:, None].expand_as(lab)
        counts = torch.bincount((img * num_classes + lab)[valid], minlength=n * num_classes)
        counts = counts.view(n, num_classes).double()
        pix += counts.sum(0)
        area += ((counts > 0).double() * valid.sum(1, keepdim=True).double()).sum(0)
    present = pix > 0
    out = torch.zeros(num_classes, dtype=torch.float64)
    if bool(present.any()):
        freq = pix[present] / area[present]
        out[present] = torch.quantile(freq, 0.5) / freq  # the usual median (mean of the middle two)
    return out.float()
