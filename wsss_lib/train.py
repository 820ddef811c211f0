"""A plain, generic, resumable step-based training loop and the paper-1 training/evaluation recipes.

:func:`fit` (torchvision-references style, no framework):

* batch indices of step ``s`` are a pure function of ``(seed, s)`` (a seeded permutation per epoch,
  :func:`batch_indices`) and torch's RNG is re-seeded from ``(seed, s)`` before each step (dropout,
  augmentation), so a run interrupted and resumed from its checkpoint reaches the **same** weights
  as an uninterrupted run (bitwise on CPU);
* SGD (momentum) or Adam, poly learning-rate decay ``(1 - s/steps)^power`` (DeepLab), optional
  per-group LR multipliers (e.g. 10x for a new head);
* AMP on CUDA (:func:`~wsss_lib.runtime.autocast`), ``tqdm.auto`` progress bar;
* atomic checkpoints (:func:`~wsss_lib.checkpoint.save_checkpoint`) holding model, optimizer,
  scheduler, scaler, step, RNG states, config and loss history. With ``resume=True`` a checkpoint
  whose config matches is continued; a different config starts over (with a message).

``loss_step(model, batch, device) -> scalar loss tensor`` is the only task-specific part (paper 2
passes its own for the two-stream network). Recipes: :func:`train_classifier`,
:func:`train_segmentation` (``mode="prior" | "tags" | "full"``), :func:`predict_segmentation`,
:func:`evaluate_segmentation`, :func:`evaluate_classifier`.
"""

from __future__ import annotations

import json
import math
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .errors import CheckpointError, InvalidInputError, WsssError
from .metrics import ConfusionMatrix, average_precision
from .runtime import autocast, grad_scaler, select_device
from . import distributed as _dist

LossStep = Callable[[torch.nn.Module, dict, torch.device], torch.Tensor]


def cpu_bf16_supported() -> bool:
    """True when this CPU runs bfloat16 convolutions natively (oneDNN, e.g. AVX512-BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - older builds
        return False


def mixed_precision(device: torch.device, amp: bool = True, cpu_bf16: bool | None = None):
    """Autocast context: AMP on CUDA (:func:`~wsss_lib.runtime.autocast`); on CPU bfloat16 autocast
    when ``cpu_bf16`` is True, or None ("auto") and the CPU supports bf16 natively [ours: ~1.5x
    faster training here]; else a no-op."""
    device = torch.device(device)
    if device.type == "cpu" and amp:
        use = cpu_bf16_supported() if cpu_bf16 is None else bool(cpu_bf16)
        if use:
            return torch.autocast("cpu", dtype=torch.bfloat16)
    return autocast(device, amp)


# ----------------------------------------------------------------------------- data plumbing

@lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x5EED]).permutation(n)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Dataset indices of training step ``step``: positions ``[step*bs, (step+1)*bs)`` of an endless
    stream of per-epoch permutations seeded by ``(seed, epoch)`` — a pure function of its inputs."""
    if n < 1 or batch_size < 1 or step < 0:
        raise InvalidInputError(f"need n >= 1, batch_size >= 1, step >= 0; got {n}, {batch_size}, {step}")
    out = np.empty(batch_size, dtype=np.int64)
    pos, filled = step * batch_size, 0
    while filled < batch_size:
        epoch, off = divmod(pos + filled, n)
        take = min(batch_size - filled, n - off)
        out[filled:filled + take] = _epoch_permutation(n, seed, epoch)[off:off + take]
        filled += take
    return out


def step_seed(seed: int, step: int) -> int:
    """The torch seed used for step ``step`` (dropout, augmentation)."""
    return (int(seed) * 1_000_003 + int(step) * 7919 + 17) % (2**63 - 1)


def collate_dicts(items: list[dict]) -> dict:
    """Stack tensors / numbers of a list of sample dicts; other values become lists."""
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        if torch.is_tensor(vals[0]):
            out[k] = torch.stack(vals)
        elif isinstance(vals[0], (int, float, bool, np.integer, np.floating)):
            out[k] = torch.as_tensor(vals)
        else:
            out[k] = vals
    return out


class InMemoryDataset(torch.utils.data.Dataset):
    """A dataset held in memory as tensors, with fast vectorised batching.

    ``images`` uint8 ``(N, 3, H, W)`` (returned as float [0, 1]), ``labels`` int ``(N, H, W)``,
    ``tags`` float ``(N, C)``; ``extra`` named tensors with first dimension N (e.g. ``fg_mask``,
    ``accepted``) are returned with each sample/batch. ``info``/``ids`` travel along.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, tags: torch.Tensor, ids: Sequence[str] = (),
                 info=None, extra: dict[str, torch.Tensor] | None = None):
        n = images.shape[0]
        if images.ndim != 4 or images.dtype != torch.uint8 or labels.shape[0] != n or tags.shape[0] != n:
            raise InvalidInputError("InMemoryDataset needs uint8 images (N, 3, H, W) and N labels and tags")
        self.images, self.labels, self.tags = images, labels, tags
        self.ids = list(ids) if ids else [str(i) for i in range(n)]
        self.info = info
        self.extra = dict(extra or {})
        for k, v in self.extra.items():
            if v.shape[0] != n:
                raise InvalidInputError(f"extra field {k!r} has {v.shape[0]} rows, expected {n}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def with_extra(self, **extra: torch.Tensor) -> "InMemoryDataset":
        """A view of the same data with more (or replaced) extra fields."""
        return InMemoryDataset(self.images, self.labels, self.tags, self.ids, self.info, {**self.extra, **extra})

    def subset(self, indices: Sequence[int]) -> "InMemoryDataset":
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return InMemoryDataset(self.images[idx], self.labels[idx], self.tags[idx], [self.ids[i] for i in idx.tolist()],
                               self.info, {k: v[idx] for k, v in self.extra.items()})

    def get_batch(self, indices) -> dict:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        out = {"image": self.images[idx].float().div_(255.0), "label": self.labels[idx].long(),
               "tags": self.tags[idx].float(), "index": idx}
        for k, v in self.extra.items():
            out[k] = v[idx]
        return out

    def __getitem__(self, i: int) -> dict:
        b = self.get_batch([i])
        out = {k: v[0] for k, v in b.items()}
        out["index"] = int(i)
        out["id"] = self.ids[i]
        return out

    def uint8_images(self) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 C-contiguous (for CRFs and plots)."""
        return np.ascontiguousarray(self.images.permute(0, 2, 3, 1).numpy())


def preload(dataset, progress: bool = False, desc: str = "load") -> InMemoryDataset:
    """Read every sample of a :class:`~wsss_lib.data.base.SegmentationDataset` (or any dataset of
    sample dicts with equal-size images) into an :class:`InMemoryDataset`."""
    if isinstance(dataset, InMemoryDataset):
        return dataset
    n = len(dataset)
    it = range(n)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=desc, leave=False)
    imgs, labs, tags, ids = [], [], [], []
    for i in it:
        s = dataset[i]
        imgs.append((s["image"].clamp(0, 1) * 255 + 0.5).to(torch.uint8))
        labs.append(s["label"].to(torch.uint8) if int(s["label"].max()) <= 255 else s["label"])
        tags.append(s["tags"])
        ids.append(s.get("id", str(i)))
    try:
        images = torch.stack(imgs)
    except RuntimeError as exc:
        raise InvalidInputError("preload needs images of one size; pass size=(H, W) to the dataset") from exc
    return InMemoryDataset(images, torch.stack(labs), torch.stack(tags), ids, getattr(dataset, "info", None))


def _fetch(dataset, idx: np.ndarray, collate) -> dict:
    if collate is None and hasattr(dataset, "get_batch"):
        return dataset.get_batch(idx)
    items = [dataset[int(i)] for i in idx]
    return (collate or collate_dicts)(items)


def _pinned(batch: dict) -> dict:
    return {k: (v.pin_memory() if torch.is_tensor(v) else v) for k, v in batch.items()}


def batch_stream(dataset, batch_size: int, seed: int, start: int, steps: int, collate: Callable | None = None,
                 prefetch: int = 2, local: Callable[[np.ndarray], np.ndarray] = lambda idx: idx, pin: bool = False):
    """Yield the batches of steps ``start..steps-1`` (indices from :func:`batch_indices`, so the
    order is the same with or without prefetching, and after a resume).

    ``prefetch`` > 0: that many batches are read ahead in background threads while the model
    trains (image decoding releases the GIL), which hides disk reads; datasets with ``get_batch``
    (in memory) are sliced in place instead. ``local`` maps global indices to this rank's share.
    ``pin``: page-locked batches (CUDA), pinned in the background threads, so that the copies to
    the GPU (``.to(device, non_blocking=True)``) overlap with compute.
    """
    n = len(dataset)
    pin = bool(pin and torch.cuda.is_available())

    def fetch(step: int) -> dict:
        batch = _fetch(dataset, local(batch_indices(n, batch_size, seed, step)), collate)
        return _pinned(batch) if pin and isinstance(batch, dict) else batch

    if prefetch <= 0 or (not pin and collate is None and hasattr(dataset, "get_batch")):
        for step in range(start, steps):
            yield fetch(step)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=int(prefetch), thread_name_prefix="wsss-prefetch") as ex:
        pending = deque(ex.submit(fetch, s) for s in range(start, min(steps, start + int(prefetch))))
        nxt = start + len(pending)
        try:
            while pending:
                batch = pending.popleft().result()  # a read error surfaces here, with its file name
                if nxt < steps:
                    pending.append(ex.submit(fetch, nxt))
                    nxt += 1
                yield batch
        finally:
            for f in pending:
                f.cancel()


def _plain_config(config: dict | None) -> dict:
    return json.loads(json.dumps(config or {}, sort_keys=True, default=str))


# ----------------------------------------------------------------------------- the loop

def _make_optimizer(name: str, groups, lr: float, momentum: float, weight_decay: float):
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise InvalidInputError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {name!r}")


def fit(model: torch.nn.Module, dataset, loss_step: LossStep, *, steps: int, batch_size: int, lr: float,
        optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 5e-4, lr_power: float = 0.9,
        warmup: int = 0, param_groups: list[dict] | None = None, device: str | torch.device = "auto", seed: int = 0,
        checkpoint_path: str | os.PathLike | None = None, checkpoint_every: int = 100, resume: bool = True,
        amp: bool = True, config: dict | None = None, progress: bool = True, collate: Callable | None = None,
        desc: str = "train", stop_after: int | None = None, grad_clip: float | None = None,
        cpu_bf16: bool | None = None, channels_last: bool | None = None, prefetch: int = 2) -> dict:
    """Train ``model`` for ``steps`` optimiser steps; returns the history
    ``{"step": [...], "loss": [...], "lr": [...], "time": [...], "seconds": float, "resumed_from": int,
    "complete": bool}`` (``time``: seconds from the start of the run that made each step).

    Parameters
    ----------
    dataset: indexable (``len``, ``__getitem__`` -> sample dict), or anything with ``get_batch(idx)``.
    loss_step: ``(model, batch, device) -> scalar loss``; called under autocast; the batch is on CPU.
    param_groups: optional torch-style groups, each may carry ``"lr_mult"`` (default: all parameters).
    checkpoint_path / checkpoint_every / resume: where and how often to save; whether to continue a
        matching checkpoint. The final state is always saved there when given.
    config: plain dict stored in (and compared with) the checkpoint.
    stop_after: stop after this many total steps without finishing (simulates an interruption).
    amp / cpu_bf16: mixed precision (see :func:`mixed_precision`; ``cpu_bf16=None`` = auto).
    channels_last: NHWC weights (default: on CPU, where oneDNN convolutions are faster with it).
    prefetch: batches read ahead in background threads for datasets read from disk, and on CUDA
        for every dataset (pinned memory); 0 = off. See :func:`batch_stream`.
    """
    steps, batch_size = int(steps), int(batch_size)
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise InvalidInputError(f"need steps >= 1, batch_size >= 1, lr > 0; got {steps}, {batch_size}, {lr}")
    if len(dataset) < 1:
        raise InvalidInputError("cannot train on an empty dataset")
    device = select_device(device)
    ddp = _dist.FitRun(device, batch_size)  # data-parallel under torchrun; a no-op otherwise
    device = ddp.device
    model.to(device)
    if channels_last if channels_last is not None else device.type == "cpu":
        if all(p.dim() != 5 for p in model.parameters()):  # channels_last is for 4-D (2-D conv) weights
            model.to(memory_format=torch.channels_last)
    cfg = _plain_config(config)
    if param_groups is None:
        param_groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    groups = []
    for g in param_groups:
        g = dict(g)
        mult = float(g.pop("lr_mult", 1.0))
        g["params"] = [p for p in g["params"] if p.requires_grad]
        g["lr"] = lr * mult
        g["initial_lr"] = lr * mult
        if g["params"]:
            groups.append(g)
    opt = _make_optimizer(optimizer, groups, lr, momentum, weight_decay)

    def poly(s: int) -> float:
        w = min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0
        return w * max(0.0, 1.0 - s / steps) ** lr_power

    sched = torch.optim.lr_scheduler.LambdaLR(opt, poly)
    scaler = grad_scaler(device, amp)
    history = {"step": [], "loss": [], "lr": [], "time": []}
    start = 0
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    state = ddp.load_state(ckpt, resume, device)  # distributed: rank 0 reads it and broadcasts
    if state is not None:
        if state.get("config") == cfg and int(state.get("steps", -1)) == steps:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if "scaler" in state and state["scaler"]:
                scaler.load_state_dict(state["scaler"])
            if "rng" in state:
                set_rng_state(state["rng"])
            history = {**history, **{k: list(v) for k, v in state.get("history", history).items()}}
            start = int(state["step"])
            ddp.log(f"[wsss] {desc}: resuming {ckpt} at step {start}/{steps}")
        else:
            ddp.log(f"[wsss] {desc}: {ckpt} was written with another config/steps; training from scratch")

    def save(step: int):
        if ckpt is None or not ddp.is_main:  # rank 0 writes; model is the unwrapped module
            return
        save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "step": step, "steps": steps,
                         "config": cfg, "rng": rng_state(), "history": history, "complete": step >= steps}, ckpt)

    t0 = time.time()
    bar = None
    if progress and start < steps and ddp.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=desc, leave=False)
    model.train()
    net = ddp.wrap(model)  # DistributedDataParallel (+ SyncBatchNorm) when distributed, else model
    last = steps if stop_after is None else max(start, min(steps, int(stop_after)))
    done_steps = start  # steps completed so far
    batches = batch_stream(dataset, batch_size, seed, start, last, collate, prefetch, ddp.local,
                           pin=device.type == "cuda")
    try:
        for step, batch in zip(range(start, last), batches):
            torch.manual_seed(step_seed(seed, step))
            with mixed_precision(device, amp, cpu_bf16), ddp.step():
                loss = loss_step(net, batch, device)
            if not torch.is_tensor(loss) or loss.ndim != 0:
                raise InvalidInputError("loss_step must return a scalar tensor")
            loss_value = ddp.mean(loss.detach())  # mean over ranks (the loss itself single-process)
            if not torch.isfinite(loss_value):
                raise WsssError(f"{desc}: the loss became {loss_value.item()} at step {step}; lower the learning rate "
                                f"(lr={lr}) or check the inputs")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(opt)
            scaler.update()
            cur_lr = opt.param_groups[0]["lr"]
            sched.step()
            history["step"].append(step)
            history["loss"].append(float(loss_value))
            history["lr"].append(float(cur_lr))
            history["time"].append(time.time() - t0)  # seconds since this (possibly resumed) run began
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
            if ckpt is not None and ((step + 1) % max(1, checkpoint_every) == 0 or step + 1 == steps):
                save(step + 1)
            done_steps = step + 1
    finally:
        batches.close()  # stops the prefetch threads
        if bar is not None:
            bar.close()
        ddp.restore()
    ddp.barrier()  # distributed: the checkpoint is on disk before any rank goes on
    model.eval()
    done = done_steps >= steps
    return {**history, "seconds": time.time() - t0, "resumed_from": start, "complete": done}


# ----------------------------------------------------------------------------- recipes

def _hflip_batch(batch: dict, keys: Sequence[str]) -> dict:
    """Flip a random half of the batch horizontally (torch RNG, seeded per step by :func:`fit`)."""
    flip = _dist.batch_rand(batch["image"].shape[0]) < 0.5  # == torch.rand(B) single-process
    if not flip.any():
        return batch
    out = dict(batch)
    for k in keys:
        if k in out and torch.is_tensor(out[k]) and out[k].ndim >= 3:
            v = out[k].clone()
            v[flip] = v[flip].flip(-1)
            out[k] = v
    return out


def classifier_loss_step(classes: Sequence[int] | None = None, augment: bool = True) -> LossStep:
    """BCE-with-logits on ``batch["tags"][:, classes]`` (paper 1: the foreground classes)."""
    cls = None if classes is None else torch.as_tensor(list(classes), dtype=torch.long)

    def step(model, batch, device):
        if augment:
            batch = _hflip_batch(batch, ("image",))
        x = batch["image"].to(device, non_blocking=True)
        t = batch["tags"] if cls is None else batch["tags"][:, cls]
        logits = model(x)["logits"]
        return F.binary_cross_entropy_with_logits(logits.float(), t.to(device).float())

    return step


def train_classifier(classifier: torch.nn.Module, dataset, *, classes: Sequence[int] | None = None, steps: int = 400,
                     batch_size: int = 32, lr: float = 0.05, optimizer: str = "sgd", augment: bool = True,
                     **fit_kw) -> dict:
    """Multi-label tag training of a :class:`~wsss_lib.models.TagClassifier` (see :func:`fit` for
    ``fit_kw``: device, seed, checkpoint_path, config, amp, progress...). ``classes``: tag columns
    to predict (default all)."""
    fit_kw.setdefault("desc", "classifier")
    return fit(classifier, dataset, classifier_loss_step(classes, augment), steps=steps, batch_size=batch_size,
               lr=lr, optimizer=optimizer, **fit_kw)


SEG_MODES = ("prior", "tags", "full")


def segmentation_loss_step(mode: str, fg_classes: Sequence[int], pooling: str = "mean", tag_pooling: str = "max",
                           absent_pooling: str = "max", augment: bool = True, rejected: str = "tags") -> LossStep:
    """Loss step of :func:`train_segmentation`. The batch carries ``fg_mask`` (prior mode) and
    optionally ``accepted`` (check-mask; ``rejected="tags"``: rejected images get the tag term,
    ``"ignore"``: they are left out of the loss)."""
    if rejected not in ("tags", "ignore"):
        raise InvalidInputError(f"rejected must be 'tags' or 'ignore', got {rejected!r}")
    from .losses import cross_entropy, fgbg_prior_loss, tags_only_loss

    if mode not in SEG_MODES:
        raise InvalidInputError(f"mode must be one of {SEG_MODES}, got {mode!r}")
    fg = torch.as_tensor(list(fg_classes), dtype=torch.long)

    def step(model, batch, device):
        if augment:
            batch = _hflip_batch(batch, ("image", "label", "fg_mask"))
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
        mask = batch["fg_mask"].to(device).float()
        if acc is not None and rejected == "ignore":
            per = fgbg_prior_loss(logits, tags, mask, pooling, absent_pooling, reduction="none")
            acc = acc.to(device).float()
            return (per * acc).sum() / acc.sum().clamp(min=1.0)
        return fgbg_prior_loss(logits, tags, mask, pooling, absent_pooling,
                               accepted=None if acc is None else acc.to(device).float(), tag_pooling=tag_pooling)

    return step


def train_segmentation(model: torch.nn.Module, dataset, mode: str = "prior", *, masks: torch.Tensor | None = None,
                       accepted: torch.Tensor | None = None, fg_classes: Sequence[int] | None = None,
                       pooling: str = "mean", tag_pooling: str = "max", absent_pooling: str = "max",
                       rejected: str = "tags", steps: int = 400, batch_size: int = 16, lr: float = 0.01,
                       optimizer: str = "sgd",
                       head_lr_mult: float = 10.0, augment: bool = True, **fit_kw) -> dict:
    """Train a :class:`~wsss_lib.models.SegNet` (``K + 1`` outputs, 0 = background).

    ``mode``: ``"prior"`` (paper 1: :func:`~wsss_lib.losses.fgbg_prior_loss` with ``masks``
    float/uint8 ``(N, H, W)`` in [0, 1] aligned with the dataset; ``accepted`` ``(N,)`` {0, 1} for
    check-mask), ``"tags"`` (tags-only baseline) or ``"full"`` (pixel labels, the upper bound).
    ``fg_classes``: the tag columns of the foreground classes (default ``dataset.info.foreground``
    or 1..C-1). The new head gets ``head_lr_mult`` x the learning rate (DeepLab's 10x).
    """
    if mode not in SEG_MODES:
        raise InvalidInputError(f"mode must be one of {SEG_MODES}, got {mode!r}")
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
    groups = None
    if hasattr(model, "head") and hasattr(model, "backbone") and head_lr_mult != 1.0:
        groups = [{"params": list(model.backbone.parameters())},
                  {"params": list(model.head.parameters()), "lr_mult": head_lr_mult}]
    fit_kw.setdefault("desc", f"seg[{mode}]")
    return fit(model, ds, segmentation_loss_step(mode, fg_classes, pooling, tag_pooling, absent_pooling, augment,
                                                 rejected),
               steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, param_groups=groups, **fit_kw)


@torch.no_grad()
def segmentation_probs(model: torch.nn.Module, images: torch.Tensor, out_size: tuple[int, int] | None = None,
                       batch_size: int = 32, device=None, amp: bool = True) -> torch.Tensor:
    """Softmax probabilities ``(N, C, H, W)`` (CPU float32) of ``images`` float ``(N, 3, H, W)``
    in [0, 1], bilinearly upsampled to ``out_size`` (default the image size)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInputError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out_size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
    was = model.training
    model.eval()
    outs = []
    try:
        for s in range(0, images.shape[0], batch_size):
            x = images[s:s + batch_size].to(device).float()
            with mixed_precision(device, amp):
                lg = model(x)
            lg = F.interpolate(lg.float(), size=out_size, mode="bilinear", align_corners=False)
            outs.append(torch.softmax(lg, 1).cpu())
    finally:
        model.train(was)
    return torch.cat(outs)


def predict_segmentation(model: torch.nn.Module, images: torch.Tensor, out_size: tuple[int, int] | None = None,
                         crf=None, batch_size: int = 32, device=None, amp: bool = True,
                         workers: int | None = None) -> torch.Tensor:
    """Label maps int64 ``(N, H, W)`` for ``images`` float ``(N, 3, H, W)`` in [0, 1]. ``crf``: a
    :class:`~wsss_lib.crf.CRFParams` (or dict) -> dense-CRF post-processing of the upsampled
    softmax (then ``out_size`` must equal the image size)."""
    probs = segmentation_probs(model, images, out_size, batch_size, device, amp)
    if crf is None:
        return probs.argmax(1)
    return _crf_labels(images, probs, crf, workers)


def _crf_labels(images: torch.Tensor, probs: torch.Tensor, crf, workers) -> torch.Tensor:
    from .crf import crf_batch

    if tuple(probs.shape[-2:]) != tuple(images.shape[-2:]):
        raise InvalidInputError("CRF post-processing needs out_size equal to the image size")
    ims = np.ascontiguousarray((images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    pr = probs.numpy()
    q = crf_batch(list(ims), [p / p.sum(0, keepdims=True) for p in pr], crf, workers=workers)
    return torch.from_numpy(np.stack(q).argmax(1))


def evaluate_segmentation(model: torch.nn.Module, dataset, num_classes: int, crf=None, batch_size: int = 32,
                          device=None, amp: bool = True, workers: int | None = None) -> ConfusionMatrix:
    """Confusion matrix of ``model`` on ``dataset`` (255 ignored), optionally with CRF
    post-processing. See :func:`evaluate_segmentation_both` for raw + CRF from one forward pass."""
    res = evaluate_segmentation_both(model, dataset, num_classes, crf, batch_size, device, amp, workers)
    return res["crf"] if crf is not None else res["raw"]


def evaluate_segmentation_both(model: torch.nn.Module, dataset, num_classes: int, crf=None, batch_size: int = 32,
                               device=None, amp: bool = True, workers: int | None = None,
                               return_predictions: bool = False, chunk: int = 128) -> dict:
    """``{"raw": ConfusionMatrix, "crf": ConfusionMatrix | None}`` (+ ``"pred"``/``"pred_crf"``
    label maps with ``return_predictions``) from one forward pass over ``dataset`` (processed in
    chunks of ``chunk`` images, so memory stays bounded)."""
    ds = preload(dataset)
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
            pc = _crf_labels(images, probs, crf, workers)
            cm_crf.update(labels, pc)
            if return_predictions:
                preds_crf.append(pc)
    out = {"raw": raw, "crf": cm_crf}
    if return_predictions:
        out["pred"] = torch.cat(preds)
        out["pred_crf"] = torch.cat(preds_crf) if preds_crf else None
    return out


@torch.no_grad()
def classifier_scores(classifier: torch.nn.Module, dataset, batch_size: int = 64, device=None,
                      amp: bool = True) -> torch.Tensor:
    """Tag logits ``(N, K)`` of every image of ``dataset``."""
    ds = preload(dataset)
    device = torch.device(device) if device is not None else next(classifier.parameters()).device
    was = classifier.training
    classifier.eval()
    outs = []
    try:
        for s in range(0, len(ds), batch_size):
            x = ds.images[s:s + batch_size].to(device).float().div_(255.0)
            with mixed_precision(device, amp):
                outs.append(classifier(x)["logits"].float().cpu())
    finally:
        classifier.train(was)
    return torch.cat(outs)


def evaluate_classifier(classifier: torch.nn.Module, dataset, classes: Sequence[int] | None = None,
                        batch_size: int = 64, device=None, amp: bool = True) -> dict:
    """``{"map": float, "ap": (K,) per-class AP, "acc": per-label accuracy at logit 0,
    "exact": fraction of images with every tag right}`` on ``dataset``."""
    ds = preload(dataset)
    logits = classifier_scores(classifier, ds, batch_size, device, amp)
    t = ds.tags.float() if classes is None else ds.tags[:, list(classes)].float()
    if t.shape != logits.shape:
        raise InvalidInputError(f"classifier predicts {logits.shape[1]} tags but the chosen tag columns are "
                                f"{t.shape[1]}; pass classes=")
    ap = average_precision(logits, t)
    correct = (logits > 0).float() == t
    return {"map": ap["map"], "ap": ap["ap"], "acc": float(correct.float().mean()),
            "exact": float(correct.all(1).float().mean())}
