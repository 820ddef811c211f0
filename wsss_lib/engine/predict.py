"""Inference and evaluation: label maps, probabilities, CRF post-processing, scores.

Every loop here is :func:`~wsss_lib.core.runtime.predict_batches` (eval mode, no grad, the one
precision context). Evaluation is sharded when several processes run (``torchrun``): each rank
scores a disjoint contiguous shard of the images (:func:`~wsss_lib.engine.distributed.eval_shard`)
and the confusion matrices are summed with ``all_reduce``, so the mIoU is exact.

* :func:`segmentation_probs` / :func:`predict_segmentation` — softmax / label maps of a SegNet.
* :func:`crf_labels` — dense-CRF post-processing of softmax maps.
* :func:`evaluate_segmentation` / :func:`evaluate_segmentation_both` — confusion matrices, raw and
  with CRF, from one forward pass.
* :func:`classifier_scores` / :func:`evaluate_classifier` — tag logits, mAP.

Datasets of variable-size images (real data, :func:`is_streamed`) are never preloaded: they are
read one full-size image at a time by a :class:`torch.utils.data.DataLoader` (``io_workers``
processes), each image scored at its own size, and the confusion matrices summed, which equals
scoring every image alone and adding the matrices. The CRF runs on chunks of such images.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.errors import InvalidInputError
from ..core.io import to_uint8_image
from ..core.metrics import ConfusionMatrix, average_precision
from ..core.runtime import predict_batches, select_device
from ..ops.crf import crf_batch
from .distributed import eval_shard
from .train import is_streamed, preload


def _first(items: list):
    return items[0]


def iterate_samples(dataset, io_workers: int = 0, progress: bool = False, desc: str = "images"):
    """Yield the sample dicts of ``dataset`` one at a time, in order (full size: image float
    ``(3, H, W)``, label ``(H, W)``...), decoded by ``io_workers`` DataLoader processes (0: here)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=int(io_workers),
                                         collate_fn=_first)
    yield from (tqdm(loader, desc=desc, leave=False) if progress else loader)


def segmentation_probs(model: torch.nn.Module, images: torch.Tensor, out_size: tuple[int, int] | None = None,
                       batch_size: int = 32, device=None, amp: bool = True) -> torch.Tensor:
    """Softmax probabilities ``(N, C, H, W)`` (CPU float32) of ``images`` float ``(N, 3, H, W)``
    in [0, 1], bilinearly upsampled to ``out_size`` (default the image size)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInputError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    out_size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])

    def post(lg, lo, hi):
        lg = F.interpolate(lg.float(), size=out_size, mode="bilinear", align_corners=False)
        return torch.softmax(lg, 1).cpu()

    return predict_batches(model, images.shape[0], lambda lo, hi, dev: model(images[lo:hi].to(dev).float()), post,
                           batch_size=batch_size, device=device, amp=amp, desc="segmentation")


def predict_segmentation(model: torch.nn.Module, images: torch.Tensor, out_size: tuple[int, int] | None = None,
                         crf=None, batch_size: int = 32, device=None, amp: bool = True,
                         workers: int | None = None) -> torch.Tensor:
    """Label maps int64 ``(N, H, W)`` for ``images`` float ``(N, 3, H, W)`` in [0, 1]. ``crf``: a
    :class:`~wsss_lib.ops.crf.CRFParams` (or dict) -> dense-CRF post-processing of the upsampled
    softmax (then ``out_size`` must equal the image size)."""
    probs = segmentation_probs(model, images, out_size, batch_size, device, amp)
    if crf is None:
        return probs.argmax(1)
    return crf_labels(images, probs, crf, workers, device)


def crf_labels(images: torch.Tensor, probs: torch.Tensor, crf, workers, device=None) -> torch.Tensor:
    """Label maps ``(N, H, W)`` after a dense CRF (``crf``: CRFParams/dict) on softmax ``probs``
    ``(N, C, H, W)`` of ``images`` float ``(N, 3, H, W)`` in [0, 1] (same H, W). ``device``: where
    the model ran (None: auto); on CUDA the CRF runs batched there."""
    if tuple(probs.shape[-2:]) != tuple(images.shape[-2:]):
        raise InvalidInputError("CRF post-processing needs out_size equal to the image size")
    return torch.stack(crf_label_list(list(to_uint8_image(images)), list(probs), crf, workers, device))


def crf_label_list(images: Sequence[np.ndarray], probs: Sequence[torch.Tensor], crf, workers,
                   device=None) -> list[torch.Tensor]:
    """:func:`crf_labels` for images of different sizes: N uint8 ``(H_i, W_i, 3)`` and softmax
    ``(C, H_i, W_i)`` -> N label maps int64 ``(H_i, W_i)``."""
    pr = [p.numpy() if torch.is_tensor(p) else np.asarray(p) for p in probs]
    q = crf_batch(list(images), [p / p.sum(0, keepdims=True) for p in pr], crf, workers=workers,
                  device=select_device(device))
    return [torch.from_numpy(x.argmax(0)) for x in q]


def evaluate_segmentation(model: torch.nn.Module, dataset, num_classes: int, crf=None, batch_size: int = 32,
                          device=None, amp: bool = True, workers: int | None = None) -> ConfusionMatrix:
    """Confusion matrix of ``model`` on ``dataset`` (255 ignored), optionally with CRF
    post-processing. See :func:`evaluate_segmentation_both` for raw + CRF from one forward pass."""
    res = evaluate_segmentation_both(model, dataset, num_classes, crf, batch_size, device, amp, workers)
    return res["crf"] if crf is not None else res["raw"]


def evaluate_segmentation_both(model: torch.nn.Module, dataset, num_classes: int, crf=None, batch_size: int = 32,
                               device=None, amp: bool = True, workers: int | None = None,
                               return_predictions: bool = False, chunk: int = 128, io_workers: int = 0,
                               crf_chunk: int = 8) -> dict:
    """``{"raw": ConfusionMatrix, "crf": ConfusionMatrix | None}`` (+ ``"pred"``/``"pred_crf"``
    label maps with ``return_predictions``) from one forward pass over ``dataset`` (processed in
    chunks of ``chunk`` images, so memory stays bounded).

    Under ``torchrun`` each rank scores only its contiguous shard of the images
    (:func:`~wsss_lib.engine.distributed.eval_shard`); the confusion matrices are summed over the
    ranks (exact integer counts) and the predictions gathered in dataset order, so every rank
    returns the single-process result. ``"shard"``: ``(start, stop)`` of the images this rank
    scored; ``"pixels_scored"``: the labelled pixels it counted itself (before the sum).

    A streamed dataset (:func:`is_streamed`: variable-size real images) is scored one full-size
    image at a time (read by ``io_workers`` DataLoader processes, the CRF on chunks of ``crf_chunk``
    images); its ``"pred"``/``"pred_crf"`` are then lists of ``(H_i, W_i)`` maps.
    """
    if is_streamed(dataset):
        return _evaluate_streamed(model, dataset, num_classes, crf, device, amp, workers, return_predictions,
                                  io_workers, crf_chunk)
    part = eval_shard(preload(dataset))
    ds = part.dataset
    raw = ConfusionMatrix(num_classes)
    cm_crf = ConfusionMatrix(num_classes) if crf is not None else None
    preds, preds_crf = [], []
    for s in range(0, len(ds), chunk):
        images = ds.images[s:s + chunk].float().div(255.0)
        labels = ds.labels[s:s + chunk].long()
        probs = segmentation_probs(model, images, None, batch_size, device, amp)
        pred = probs.argmax(1)
        raw.update(labels, pred)
        if return_predictions:
            preds.append(pred)
        if crf is not None:
            pc = crf_labels(images, probs, crf, workers, device)
            cm_crf.update(labels, pc)
            if return_predictions:
                preds_crf.append(pc)
    out = {"raw": raw, "crf": cm_crf, "shard": (part.start, part.stop), "pixels_scored": int(raw.mat.sum())}
    if return_predictions:
        out["pred"] = torch.cat(preds)
        out["pred_crf"] = torch.cat(preds_crf) if preds_crf else None
    return part.combine(out)


def _evaluate_streamed(model, dataset, num_classes, crf, device, amp, workers, return_predictions, io_workers,
                       crf_chunk) -> dict:
    part = eval_shard(dataset)
    raw = ConfusionMatrix(num_classes)
    cm_crf = ConfusionMatrix(num_classes) if crf is not None else None
    preds, preds_crf, pending = [], [], []

    def flush():
        if pending:
            ims, prs, labs = zip(*pending)
            for lab, pc in zip(labs, crf_label_list(ims, prs, crf, workers, device)):
                cm_crf.update(lab, pc)
                if return_predictions:
                    preds_crf.append(pc)
            pending.clear()

    for s in iterate_samples(part.dataset, io_workers):
        image = s["image"][None]
        probs = segmentation_probs(model, image, None, 1, device, amp)[0]  # (C, H, W) at the image's size
        pred = probs.argmax(0)
        raw.update(s["label"], pred)
        if return_predictions:
            preds.append(pred)
        if crf is not None:
            pending.append((to_uint8_image(image)[0], probs, s["label"]))
            if len(pending) >= max(1, int(crf_chunk)):
                flush()
    if crf is not None:
        flush()
    out = {"raw": raw, "crf": cm_crf, "shard": (part.start, part.stop), "pixels_scored": int(raw.mat.sum())}
    if return_predictions:
        out["pred"], out["pred_crf"] = preds, (preds_crf if crf is not None else None)
    return part.combine(out, cat=())


def _streamed_logits(classifier, dataset, device, amp, io_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, K), tags (N, C))`` of a streamed dataset, one full-size image at a time."""
    logits, tags = [], []
    for s in iterate_samples(dataset, io_workers):
        x = s["image"][None]
        logits.append(predict_batches(classifier, 1, lambda lo, hi, dev: classifier(x.to(dev))["logits"].float().cpu(),
                                      device=device, amp=amp))
        tags.append(s["tags"][None])
    return torch.cat(logits), torch.cat(tags)


def classifier_scores(classifier: torch.nn.Module, dataset, batch_size: int = 64, device=None,
                      amp: bool = True) -> torch.Tensor:
    """Tag logits ``(N, K)`` of every image of ``dataset`` (a streamed dataset, :func:`is_streamed`:
    one full-size image at a time)."""
    if is_streamed(dataset):
        return _streamed_logits(classifier, dataset, device, amp)[0]
    ds = preload(dataset)

    def forward(lo, hi, dev):
        return classifier(ds.images[lo:hi].to(dev).float().div_(255.0))["logits"].float().cpu()

    return predict_batches(classifier, len(ds), forward, batch_size=batch_size, device=device, amp=amp,
                           desc="classifier")


def evaluate_classifier(classifier: torch.nn.Module, dataset, classes: Sequence[int] | None = None,
                        batch_size: int = 64, device=None, amp: bool = True) -> dict:
    """``{"map": float, "ap": (K,) per-class AP, "acc": per-label accuracy at logit 0,
    "exact": fraction of images with every tag right}`` on ``dataset``."""
    if is_streamed(dataset):
        logits, tags = _streamed_logits(classifier, dataset, device, amp)
    else:
        ds = preload(dataset)
        logits, tags = classifier_scores(classifier, ds, batch_size, device, amp), ds.tags
    t = tags.float() if classes is None else tags[:, list(classes)].float()
    if t.shape != logits.shape:
        raise InvalidInputError(f"classifier predicts {logits.shape[1]} tags but the chosen tag columns are "
                                f"{t.shape[1]}; pass classes=")
    ap = average_precision(logits, t)
    correct = (logits > 0).float() == t
    return {"map": ap["map"], "ap": ap["ap"], "acc": float(correct.float().mean()),
            "exact": float(correct.all(1).float().mean())}
