"""Paper 1's segmentation training: the loss steps of the fg/bg prior, tags-only, fully supervised
and check-mask nets, and :func:`train_segmentation` (a SegNet trained with :func:`~wsss_lib.engine.train.fit`).

``mode="prior"`` [paper 1, ours reconstruction]: :func:`~wsss_lib.ops.losses.fgbg_prior_loss` with
the CRF-refined fg/bg masks (``accepted`` per image for check-mask); ``"tags"``: tags-only baseline;
``"full"``: pixel labels, the upper bound.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..core.errors import InvalidInputError
from ..core.io import IGNORE_INDEX
from ..engine.train import LossStep, fit, hflip_batch, is_streamed, preload
from ..ops.losses import cross_entropy, fgbg_prior_loss, loss_weight, tags_only_loss


SEG_MODES = ("prior", "tags", "full")


def segmentation_loss_step(mode: str, fg_classes: Sequence[int], pooling: str = "mean", tag_pooling: str = "max",
                           absent_pooling: str = "max", augment: bool = True, rejected: str = "tags",
                           present_term: float = 0.0) -> LossStep:
    """Loss step of :func:`train_segmentation`. The batch carries ``fg_mask`` (prior mode) and
    optionally ``accepted`` (check-mask; ``rejected="tags"``: rejected images get the tag term,
    ``"ignore"``: they are left out of the loss). ``present_term`` (weight >= 0, prior mode only):
    the image-level tag term over present classes of :func:`~wsss_lib.ops.losses.fgbg_prior_loss`
    (pooled with ``tag_pooling``; added to accepted images only, see there); 0 = off."""
    if rejected not in ("tags", "ignore"):
        raise InvalidInputError(f"rejected must be 'tags' or 'ignore', got {rejected!r}")
    present_term = loss_weight(present_term, "present_term")

    if mode not in SEG_MODES:
        raise InvalidInputError(f"mode must be one of {SEG_MODES}, got {mode!r}")
    fg = torch.as_tensor(list(fg_classes), dtype=torch.long)

    def step(model, batch, device):
        if augment:
            batch = hflip_batch(batch, ("image", "label", "fg_mask"))
        x = batch["image"].to(device, non_blocking=True)
        logits = model(x)
        if mode == "full":
            return cross_entropy(logits, batch["label"].to(device))
        tags = batch["tags"][:, fg].to(device).float()
        if mode == "tags":
            return tags_only_loss(logits, tags, tag_pooling, absent_pooling)
        if "fg_mask" not in batch:
            raise InvalidInputError("mode='prior' needs fg masks in the dataset (train_segmentation(masks=...))")
        acc = batch.get("accepted")
        mask = batch["fg_mask"].to(device)
        valid = None
        if not mask.is_floating_point():  # streamed masks: 0/1, 255 = crop padding (no region)
            valid = mask != IGNORE_INDEX
            mask = torch.where(valid, mask, 0)
        mask = mask.float()
        if acc is not None and rejected == "ignore":
            per = fgbg_prior_loss(logits, tags, mask, pooling, absent_pooling, tag_pooling=tag_pooling,
                                  reduction="none", present_term=present_term, valid=valid)
            acc = acc.to(device).float()
            return (per * acc).sum() / acc.sum().clamp(min=1.0)
        return fgbg_prior_loss(logits, tags, mask, pooling, absent_pooling,
                               accepted=None if acc is None else acc.to(device).float(), tag_pooling=tag_pooling,
                               present_term=present_term, valid=valid)

    return step


def head_groups(model: torch.nn.Module, head_lr_mult: float) -> list[dict] | None:
    """Parameter groups giving a SegNet's new head ``head_lr_mult`` x the learning rate (None: one group)."""
    if hasattr(model, "head") and hasattr(model, "backbone") and head_lr_mult != 1.0:
        return [{"params": list(model.backbone.parameters())},
                {"params": list(model.head.parameters()), "lr_mult": head_lr_mult}]
    return None


def train_segmentation(model: torch.nn.Module, dataset, mode: str = "prior", *, masks: torch.Tensor | None = None,
                       accepted: torch.Tensor | None = None, fg_classes: Sequence[int] | None = None,
                       pooling: str = "mean", tag_pooling: str = "max", absent_pooling: str = "max",
                       rejected: str = "tags", present_term: float = 0.0, steps: int = 400, batch_size: int = 16,
                       lr: float = 0.01, optimizer: str = "sgd",
                       head_lr_mult: float = 10.0, augment: bool = True, **fit_kw) -> dict:
    """Train a :class:`~wsss_lib.models.SegNet` (``K + 1`` outputs, 0 = background).

    ``mode``: ``"prior"`` (paper 1: :func:`~wsss_lib.ops.losses.fgbg_prior_loss` with ``masks``
    float/uint8 ``(N, H, W)`` in [0, 1] aligned with the dataset; ``accepted`` ``(N,)`` {0, 1} for
    check-mask), ``"tags"`` (tags-only baseline) or ``"full"`` (pixel labels, the upper bound).
    ``fg_classes``: the tag columns of the foreground classes (default ``dataset.info.foreground``
    or 1..C-1). The new head gets ``head_lr_mult`` x the learning rate (DeepLab's 10x).
    ``present_term`` (weight >= 0; 0 = off, the default): add the [summary] loss's image-level tag
    term over present classes, pooled with ``tag_pooling`` (prior mode only; the other modes
    ignore it: the tags-only loss already holds this term, the full mode has no tag term).

    A streamed dataset (real data, :func:`~wsss_lib.engine.train.is_streamed`) is not preloaded:
    its joint transform crops/flips image, label and (prior mode) its ``fg_mask`` map (a
    :class:`~wsss_lib.data.base.SegmentationDataset` with ``maps={"fg_mask": folder}``; ``masks``
    must then be None; check-mask's ``accepted`` (N,) travels with each sample, see
    :meth:`~wsss_lib.data.base.SegmentationDataset.with_extra`); pass ``workers=`` for DataLoader processes.
    """
    if mode not in SEG_MODES:
        raise InvalidInputError(f"mode must be one of {SEG_MODES}, got {mode!r}")
    if is_streamed(dataset):
        if mode == "prior" and "fg_mask" not in getattr(dataset, "maps", {}):
            raise InvalidInputError("mode='prior' on a streamed dataset needs maps={'fg_mask': <folder of mask PNGs>}")
        if masks is not None:
            raise InvalidInputError("a streamed dataset reads its masks from files (maps=); masks must be None")
        if accepted is not None:
            if mode != "prior":
                raise InvalidInputError("accepted (check-mask) applies to mode='prior' only")
            dataset = dataset.with_extra(accepted=np.asarray(accepted, dtype=np.float32).reshape(-1))
        fg_classes = dataset.info.foreground if fg_classes is None else fg_classes
        flip_in_transform = bool(getattr(dataset.transform, "flip", False))
        groups = head_groups(model, head_lr_mult)
        fit_kw.setdefault("desc", f"seg[{mode}]")
        return fit(model, dataset, segmentation_loss_step(mode, fg_classes, pooling, tag_pooling, absent_pooling,
                                                          augment and not flip_in_transform, rejected, present_term),
                   steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, param_groups=groups, **fit_kw)
    ds = preload(dataset)
    if fg_classes is None:
        info = getattr(ds, "info", None)
        fg_classes = info.foreground if info is not None else list(range(1, ds.tags.shape[1]))
    if mode == "prior":
        if masks is None:
            raise InvalidInputError("mode='prior' needs masks (N, H, W) in [0, 1]")
        masks = torch.as_tensor(np.asarray(masks)) if not torch.is_tensor(masks) else masks
        if masks.shape[0] != len(ds) or masks.shape[-2:] != ds.images.shape[-2:]:
            raise InvalidInputError(f"masks must be (N, H, W) = ({len(ds)}, {tuple(ds.images.shape[-2:])}), got "
                                    f"{tuple(masks.shape)}")
        if masks.dtype == torch.uint8 and int(masks.max()) > 1:
            masks = masks.float() / 255.0  # uint8 0-255 soft masks
        masks = masks.to(torch.float16)
        if masks.numel() and (float(masks.min()) < 0 or float(masks.max()) > 1):
            raise InvalidInputError("masks must lie in [0, 1]")
        extra = {"fg_mask": masks}
        if accepted is not None:
            accepted = torch.as_tensor(np.asarray(accepted)).float().reshape(-1)
            if accepted.shape[0] != len(ds):
                raise InvalidInputError(f"accepted must have {len(ds)} entries, got {accepted.shape[0]}")
            extra["accepted"] = accepted
        ds = ds.with_extra(**extra)
    groups = head_groups(model, head_lr_mult)
    fit_kw.setdefault("desc", f"seg[{mode}]")
    return fit(model, ds, segmentation_loss_step(mode, fg_classes, pooling, tag_pooling, absent_pooling, augment,
                                                 rejected, present_term),
               steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, param_groups=groups, **fit_kw)
