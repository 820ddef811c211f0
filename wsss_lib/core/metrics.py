"""Segmentation and tagging metrics.

* :class:`ConfusionMatrix` accumulates a ``(C, C)`` matrix (rows = ground truth, columns =
  prediction), ignoring ``ignore_index`` (255); gives per-class IoU, mIoU, pixel accuracy.
  Matrices from several processes or batches add up (``+=`` / ``all_reduce`` of the matrix), so
  a distributed mIoU is exact, never an average of per-rank mIoUs.
* :func:`per_image_confusion` / :func:`iou_from_confusion` / :func:`miou_from_confusion`: the same
  counts kept per image (for bootstrap intervals over images, :mod:`wsss_lib.core.stats`).
* :func:`mask_scores` binary IoU / precision / recall of a fg/bg mask.
* :func:`average_precision` per-class AP and mAP for multi-label tag prediction.
* :func:`binary_auc` the area under the ROC curve of scores for a binary target.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .errors import InvalidInputError

IGNORE_INDEX = 255


class ConfusionMatrix:
    """Confusion matrix over ``num_classes`` classes with an ignore label.

    ``update(target, pred)`` takes integer tensors/arrays of the same shape (any shape, e.g.
    ``(B, H, W)``); values outside ``[0, num_classes)`` in ``target`` other than ``ignore_index``
    raise :class:`InvalidInputError` (they usually mean a wrong class mapping).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if num_classes < 1:
            raise InvalidInputError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def update(self, target, pred) -> "ConfusionMatrix":
        t = torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target).reshape(-1).long().cpu()
        p = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred).reshape(-1).long().cpu()
        if t.shape != p.shape:
            raise InvalidInputError(f"target and pred differ in size: {tuple(t.shape)} vs {tuple(p.shape)}")
        keep = t != self.ignore_index
        t, p = t[keep], p[keep]
        n = self.num_classes
        if t.numel() and (t.min() < 0 or t.max() >= n):
            bad = torch.unique(t[(t < 0) | (t >= n)])[:8].tolist()
            raise InvalidInputError(f"label values {bad} outside [0, {n}) and not the ignore value {self.ignore_index}")
        if p.numel() and (p.min() < 0 or p.max() >= n):
            raise InvalidInputError(f"prediction values outside [0, {n})")
        self.mat += torch.bincount(t * n + p, minlength=n * n).reshape(n, n)
        return self

    def __iadd__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        self.mat += other.mat
        return self

    def reset(self) -> None:
        self.mat.zero_()

    def iou(self) -> np.ndarray:
        """Per-class IoU ``(C,)``; NaN for classes absent from both target and prediction."""
        return iou_from_confusion(self.mat.numpy())

    def miou(self, classes: list[int] | None = None) -> float:
        """Mean IoU over ``classes`` (default all), ignoring NaN entries."""
        iou = self.iou()
        if classes is not None:
            iou = iou[list(classes)]
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        m = self.mat.double()
        tot = m.sum()
        return float(m.diag().sum() / tot) if tot > 0 else float("nan")

    def summary(self, class_names: list[str] | None = None) -> dict:
        """Plain-dict summary: miou, pixel_acc, per-class IoU keyed by name."""
        iou = self.iou()
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {
            "miou": self.miou(),
            "pixel_acc": self.pixel_accuracy(),
            "iou": {names[i]: (None if np.isnan(v) else float(v)) for i, v in enumerate(iou)},
        }


def iou_from_confusion(mat) -> np.ndarray:
    """Per-class IoU of confusion matrices ``(..., C, C)`` (rows = ground truth) -> ``(..., C)``
    float64 in [0, 1]; NaN where a class is absent from both target and prediction."""
    m = np.asarray(mat, dtype=np.float64)
    if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
        raise InvalidInputError(f"confusion matrices must be (..., C, C), got {m.shape}")
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    denom = m.sum(-2) + m.sum(-1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1e-300), np.nan)


def miou_from_confusion(mat, classes=None) -> np.ndarray:
    """Mean IoU ``(...)`` of confusion matrices ``(..., C, C)`` over ``classes`` (default all),
    ignoring classes absent from both target and prediction (NaN when all are)."""
    iou = iou_from_confusion(mat)
    if classes is not None:
        iou = iou[..., list(classes)]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN, on purpose
        return np.nanmean(iou, axis=-1)


def per_image_confusion(target, pred, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """One confusion matrix per image: ``target``, ``pred`` int ``(N, H, W)`` -> int64
    ``(N, C, C)`` (rows = ground truth; ``ignore_index`` pixels skipped). Summed over images it is
    the dataset's :class:`ConfusionMatrix`; kept apart it lets a bootstrap resample images."""
    t = torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target).long().cpu()
    p = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred).long().cpu()
    if t.shape != p.shape or t.ndim != 3:
        raise InvalidInputError(f"target and pred must both be (N, H, W); got {tuple(t.shape)} and {tuple(p.shape)}")
    n, c = t.shape[0], int(num_classes)
    keep = t != ignore_index
    if ((t[keep] < 0) | (t[keep] >= c)).any() or ((p < 0) | (p >= c)).any():
        raise InvalidInputError(f"label or prediction values outside [0, {c}) (ignore value {ignore_index})")
    img = torch.arange(n).view(n, 1, 1).expand_as(t)
    code = (img * c * c + t * c + p)[keep]
    return torch.bincount(code, minlength=n * c * c).reshape(n, c, c).numpy()


def mask_scores(pred, target, ignore_index: int = IGNORE_INDEX) -> dict[str, float]:
    """IoU / precision / recall of binary masks (1 = foreground).

    ``pred``: bool/int ``(..., H, W)``; ``target``: int ``(..., H, W)`` where non-zero (and not
    ``ignore_index``) is foreground. Pixels where target == ignore_index are skipped. Scores are
    computed over all pixels pooled (dataset-level), the usual convention for mask IoU.
    """
    p = np.asarray(pred.cpu() if torch.is_tensor(pred) else pred).astype(bool)
    t = np.asarray(target.cpu() if torch.is_tensor(target) else target)
    if p.shape != t.shape:
        raise InvalidInputError(f"pred and target differ in shape: {p.shape} vs {t.shape}")
    keep = t != ignore_index
    p, g = p[keep], (t[keep] != 0)
    tp = float(np.logical_and(p, g).sum())
    fp = float(np.logical_and(p, ~g).sum())
    fn = float(np.logical_and(~p, g).sum())
    return {
        "iou": tp / (tp + fp + fn) if tp + fp + fn > 0 else 1.0,
        "precision": tp / (tp + fp) if tp + fp > 0 else 1.0,
        "recall": tp / (tp + fn) if tp + fn > 0 else 1.0,
    }


def average_precision(scores, targets) -> dict:
    """Per-class average precision and mAP for multi-label prediction.

    ``scores``: float ``(N, K)``; ``targets``: {0, 1} ``(N, K)``. Classes with no positive are
    left out of the mean (AP is NaN for them).
    """
    s = np.asarray(scores.detach().cpu() if torch.is_tensor(scores) else scores, dtype=np.float64)
    y = np.asarray(targets.detach().cpu() if torch.is_tensor(targets) else targets) > 0.5
    if s.shape != y.shape or s.ndim != 2:
        raise InvalidInputError(f"scores and targets must both be (N, K); got {s.shape} and {y.shape}")
    aps = np.full(s.shape[1], np.nan)
    for k in range(s.shape[1]):
        pos = y[:, k].sum()
        if pos == 0:
            continue
        order = np.argsort(-s[:, k], kind="stable")
        hits = y[order, k]
        prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps[k] = float((prec * hits).sum() / pos)
    return {"ap": aps, "map": float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")}


def binary_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` (1-D tensors; ties averaged)."""
    s = scores.flatten().double()
    y = positive.flatten().bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # lazy: scipy is heavy and needed by this function only

    ranks = torch.from_numpy(rankdata(s.numpy()))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
