"""A plain, generic, resumable step-based training loop, its data plumbing and the tag-classifier recipe.

:func:`fit` (torchvision-references style, no framework):

* batch indices of step ``s`` are a pure function of ``(seed, s)`` (a seeded permutation per epoch,
  :func:`batch_indices`) and torch's RNG is re-seeded from ``(seed, s)`` before each step (dropout,
  augmentation), so a run interrupted and resumed from its checkpoint reaches the **same** weights
  as an uninterrupted run (bitwise on CPU);
* SGD (momentum) or Adam, poly learning-rate decay ``(1 - s/steps)^power`` (DeepLab), optional
  per-group LR multipliers (e.g. 10x for a new head);
* mixed precision (:func:`~wsss_lib.core.runtime.mixed_precision`), ``tqdm.auto`` progress bar;
* atomic checkpoints (:func:`~wsss_lib.core.checkpoint.save_checkpoint`) holding model, optimizer,
  scheduler, scaler, step, RNG states, config and loss history. With ``resume=True`` a checkpoint
  whose config matches is continued; a different config starts over (with a message).

``loss_step(model, batch, device) -> scalar loss tensor`` is the only task-specific part (paper 1's
segmentation losses: :mod:`wsss_lib.papers.segmentation`; paper 2's: :mod:`wsss_lib.papers.video`).
The one generic recipe here is :func:`train_classifier` (multi-label tags, both papers);
inference and evaluation are in :mod:`wsss_lib.engine.predict`.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from concurrent.futures import ThreadPoolExecutor
from collections import deque

from ..core.checkpoint import rng_state, save_checkpoint, set_rng_state
from ..core.errors import InvalidInputError, WsssError
from ..core.io import plain_config, to_uint8
from ..core.runtime import grad_scaler, mixed_precision, select_device
from . import distributed as _dist

LossStep = Callable[[torch.nn.Module, dict, torch.device], torch.Tensor]


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


def item_seed(seed: int, step: int, position: int) -> int:
    """The augmentation seed of the ``position``-th sample of the global batch of step ``step``."""
    return (int(seed) * 1_000_003 + int(step) * 7919 + int(position) * 104_729 + 31) % (2**63 - 1)


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


def is_streamed(dataset) -> bool:
    """True for a dataset read sample by sample at the stored size (a
    :class:`~wsss_lib.data.base.SegmentationDataset` with ``size=None``, e.g. real data whose
    images differ in size); in-memory datasets and fixed-size datasets are preloaded instead."""
    return not hasattr(dataset, "get_batch") and hasattr(dataset, "samples") and getattr(dataset, "size", 0) is None


def preload(dataset, progress: bool = False, desc: str = "load") -> InMemoryDataset:
    """Read every sample of a :class:`~wsss_lib.data.base.SegmentationDataset` (or any dataset of
    sample dicts with equal-size images) into an :class:`InMemoryDataset`."""
    if isinstance(dataset, InMemoryDataset):
        return dataset
    n = len(dataset)
    it = range(n)
    if progress:
        it = tqdm(it, desc=desc, leave=False)
    imgs, labs, tags, ids = [], [], [], []
    for i in it:
        s = dataset[i]
        imgs.append(to_uint8(s["image"]))
        labs.append(s["label"].to(torch.uint8) if int(s["label"].max()) <= 255 else s["label"])
        tags.append(s["tags"])
        ids.append(s.get("id", str(i)))
    try:
        images = torch.stack(imgs)
    except RuntimeError as exc:
        raise InvalidInputError("preload needs images of one size; pass size=(H, W) to the dataset") from exc
    return InMemoryDataset(images, torch.stack(labs), torch.stack(tags), ids, getattr(dataset, "info", None))


def seeded_items(dataset) -> bool:
    """Whether ``dataset`` takes ``(index, seed)`` items (a streamed dataset with a joint transform,
    :class:`~wsss_lib.data.transforms.JointTransform`): its augmentation is then seeded per sample."""
    return bool(getattr(getattr(dataset, "transform", None), "joint", False))


def step_items(dataset, n: int, batch_size: int, seed: int, step: int,
               local: Callable[[np.ndarray], np.ndarray] = lambda idx: idx) -> list:
    """This rank's dataset items of training step ``step``: indices (:func:`batch_indices`), or
    ``(index, item_seed)`` pairs for :func:`seeded_items` datasets (the seed depends on the sample's
    position in the *global* batch, so augmentation does not depend on the number of processes)."""
    idx = local(batch_indices(n, batch_size, seed, step))
    if not seeded_items(dataset):
        return [int(i) for i in idx]
    pos = local(np.arange(batch_size))
    return [(int(i), item_seed(seed, step, int(p))) for i, p in zip(idx, pos)]


def _fetch(dataset, idx, collate) -> dict:
    if collate is None and hasattr(dataset, "get_batch"):
        return dataset.get_batch(idx)
    items = [dataset[i if isinstance(i, tuple) else int(i)] for i in idx]
    return (collate or collate_dicts)(items)


class _StepBatches(torch.utils.data.Sampler):
    """Batch sampler of a :class:`torch.utils.data.DataLoader`: the items of steps ``start..stop-1``
    (:func:`step_items`), so workers read exactly what the in-process path reads."""

    def __init__(self, dataset, batch_size: int, seed: int, start: int, stop: int, local):
        self.dataset, self.n, self.bs, self.seed = dataset, len(dataset), batch_size, seed
        self.start, self.stop, self.local = start, stop, local

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield step_items(self.dataset, self.n, self.bs, self.seed, step, self.local)


def _pinned(batch: dict) -> dict:
    return {k: (v.pin_memory() if torch.is_tensor(v) else v) for k, v in batch.items()}


def batch_stream(dataset, batch_size: int, seed: int, start: int, steps: int, collate: Callable | None = None,
                 prefetch: int = 2, local: Callable[[np.ndarray], np.ndarray] = lambda idx: idx, pin: bool = False,
                 workers: int = 0):
    """Yield the batches of steps ``start..steps-1`` (indices from :func:`batch_indices`, so the
    order is the same with or without prefetching, and after a resume).

    ``prefetch`` > 0: that many batches are read ahead in background threads while the model
    trains (image decoding releases the GIL), which hides disk reads; datasets with ``get_batch``
    (in memory) are sliced in place instead. ``local`` maps global indices to this rank's share.
    ``pin``: page-locked batches (CUDA), pinned in the background threads, so that the copies to
    the GPU (``.to(device, non_blocking=True)``) overlap with compute.
    ``workers`` > 0 (datasets read from disk): a :class:`torch.utils.data.DataLoader` with that
    many worker processes decodes and augments the batches (same items, same order, same
    augmentation seeds as in process: :func:`step_items`); ``prefetch`` batches per worker.
    """
    n = len(dataset)
    pin = bool(pin and torch.cuda.is_available())
    if int(workers) > 0 and not hasattr(dataset, "get_batch") and start < steps:
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=_StepBatches(dataset, batch_size, seed, start, steps, local),
            num_workers=int(workers), collate_fn=collate or collate_dicts, pin_memory=pin,
            prefetch_factor=max(1, int(prefetch)))
        yield from loader
        return

    def fetch(step: int) -> dict:
        batch = _fetch(dataset, step_items(dataset, n, batch_size, seed, step, local), collate)
        return _pinned(batch) if pin and isinstance(batch, dict) else batch

    if prefetch <= 0 or (not pin and collate is None and hasattr(dataset, "get_batch")):
        for step in range(start, steps):
            yield fetch(step)
        return

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
        cpu_bf16: bool | None = None, channels_last: bool | None = None, prefetch: int = 2,
        workers: int = 0) -> dict:
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
    amp / cpu_bf16: mixed precision (see :func:`~wsss_lib.core.runtime.mixed_precision`; ``cpu_bf16=None`` = auto).
    channels_last: NHWC weights (default: on CPU, where oneDNN convolutions are faster with it).
    prefetch: batches read ahead in background threads for datasets read from disk, and on CUDA
        for every dataset (pinned memory); 0 = off. See :func:`batch_stream`.
    workers: DataLoader worker processes for datasets read from disk (0: background threads).
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
    cfg = plain_config(config)
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
        bar = tqdm(total=steps, initial=start, desc=desc, leave=False)
    model.train()
    net = ddp.wrap(model)  # DistributedDataParallel (+ SyncBatchNorm) when distributed, else model
    last = steps if stop_after is None else max(start, min(steps, int(stop_after)))
    done_steps = start  # steps completed so far
    batches = batch_stream(dataset, batch_size, seed, start, last, collate, prefetch, ddp.local,
                           pin=device.type == "cuda", workers=workers)
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

def hflip_batch(batch: dict, keys: Sequence[str], mirror: Sequence[str] = ()) -> dict:
    """Flip a random half of the batch horizontally (the one flip augmentation; torch RNG, seeded per
    step by :func:`fit`, drawn for the global batch so it does not depend on the number of
    processes). ``keys``: the ``(B, ..., W)`` fields to flip; ``mirror``: flipped fields whose
    channel 0 is an x displacement encoded in [0, 1] (uint8: [0, 255]), mirrored ``v -> 1 - v``."""
    flip = _dist.batch_rand(batch["image"].shape[0]) < 0.5  # == torch.rand(B) single-process
    if not flip.any():
        return batch
    out = dict(batch)
    for k in keys:
        if k in out and torch.is_tensor(out[k]) and out[k].ndim >= 3:
            v = out[k].clone()
            v[flip] = v[flip].flip(-1)
            if k in mirror:
                top = 255 if v.dtype == torch.uint8 else 1.0
                v[flip, 0] = top - v[flip, 0]
            out[k] = v
    return out


def classifier_loss_step(classes: Sequence[int] | None = None, augment: bool = True) -> LossStep:
    """BCE-with-logits on ``batch["tags"][:, classes]`` (paper 1: the foreground classes)."""
    cls = None if classes is None else torch.as_tensor(list(classes), dtype=torch.long)

    def step(model, batch, device):
        if augment:
            batch = hflip_batch(batch, ("image",))
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
    to predict (default all). A streamed dataset (:func:`is_streamed`) is read by ``workers=``
    DataLoader processes through its joint transform (crops: equal-size batches)."""
    fit_kw.setdefault("desc", "classifier")
    if is_streamed(dataset) and getattr(dataset.transform, "flip", False):
        augment = False  # the joint transform flips already
    return fit(classifier, dataset, classifier_loss_step(classes, augment), steps=steps, batch_size=batch_size,
               lr=lr, optimizer=optimizer, **fit_kw)
