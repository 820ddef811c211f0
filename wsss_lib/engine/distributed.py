"""Data-parallel training and evaluation with PyTorch's own engine (``torch.distributed`` + DDP).

Launch any entry point with ``torchrun`` and it runs data-parallel, unchanged::

    torchrun --nproc_per_node=8 -m wsss_lib ...                           # one machine, 8 GPUs
    torchrun --nnodes 2 --node-rank 0 --nproc_per_node 8 --rdzv-id job1 \\
        --rdzv-backend c10d --rdzv-endpoint host:29500 -m wsss_lib ...    # two machines (run on each)

``torchrun`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT``;
:func:`init_from_env` reads them (NCCL for CUDA tensors + Gloo for CPU tensors on GPU machines,
Gloo alone on CPU) and pins each process to the GPU ``LOCAL_RANK``. Without these variables (or
with ``WORLD_SIZE=1``) every helper here is a no-op and the code runs single-process exactly as
before.

What :func:`wsss_lib.engine.train.fit` does with it (:class:`FitRun`):

* the **global** batch ``B`` of step ``s`` (indices :func:`~wsss_lib.engine.train.batch_indices` of
  ``(seed, s)``) is split into ``B / world`` consecutive samples per rank, so the seed and the
  global batch define the run whatever the number of processes (``B`` must be divisible);
* :class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients (the mean of the
  per-rank mean losses is the global mean loss); BatchNorm layers are swapped for synchronised
  ones while training (``torch.nn.SyncBatchNorm`` on GPU; on CPU, where PyTorch's SyncBatchNorm
  refuses to run, :class:`CPUSyncBatchNorm`, the same computation on ``all_reduce``) and swapped
  back afterwards, so the model keeps plain BatchNorm and its ``state_dict`` keys never change;
* rank 0 alone logs, shows progress bars and writes checkpoints (of the unwrapped module, so they
  load in single-process runs and notebooks, and vice versa); resuming reads the checkpoint on
  rank 0 and broadcasts it;
* the logged loss is the mean over ranks;
* the loss step receives the :class:`DDP` wrapper: it must call ``model(...)`` (attributes such
  as ``model.uses_flow`` are forwarded to the wrapped module).

:func:`~wsss_lib.engine.predict.evaluate_segmentation` evaluates a contiguous shard per rank
(:func:`eval_shard`) and sums the confusion matrices with ``all_reduce`` (exact integer counts;
never an average of mIoUs). Dataset-scale jobs (masks, heatmaps, flow) shard with
:mod:`wsss_lib.engine.shard`.

Random augmentation written with :func:`batch_rand` (e.g. the horizontal flips of
:mod:`wsss_lib.engine.train`) draws the numbers of the whole global batch and keeps this rank's slice,
so it too is independent of the world size. Dropout masks are drawn per rank: a model with active
dropout trains equivalently, not bitwise identically, on different numbers of processes.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..core.checkpoint import load_checkpoint
from ..core.errors import CheckpointError, InvalidInputError, WsssError
from ..core.metrics import ConfusionMatrix
from ..core.runtime import select_device

__all__ = [
    "DistInfo", "env_world", "is_distributed", "get_rank", "get_world_size", "is_main_process", "init_from_env",
    "cleanup", "barrier", "local_device", "local_batch_size", "rank_slice", "shard_bounds", "all_reduce_sum",
    "all_reduce_mean", "reduce_confusion_matrix", "broadcast_object", "all_gather_object", "CPUSyncBatchNorm",
    "convert_sync_batchnorm", "restore_batchnorm", "batch_rand", "DDP", "FitRun", "EvalShard", "eval_shard",
]


# ----------------------------------------------------------------------------- environment

@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` in ``[0, world_size)``, ``local_rank`` on its node,
    the process-group ``backend`` (None when single-process) and its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidInputError(f"environment variable {name}={raw!r} is not an integer") from exc


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment variables (``(0, 1, 0)``
    when they are unset). Raises :class:`InvalidInputError` for inconsistent values."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank if world > 1 else 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise InvalidInputError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, "
                                f"LOCAL_RANK={local} (need 0 <= RANK < WORLD_SIZE)")
    return rank, world, local


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's global rank (the process group's, else ``RANK``, else 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return env_world()[0]


def get_world_size() -> int:
    """Number of processes (the process group's, else ``WORLD_SIZE``, else 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return env_world()[1]


def is_main_process() -> bool:
    """True on rank 0 (and in single-process runs): the process that logs and writes checkpoints."""
    return get_rank() == 0


_INITIALISED_HERE = False


def local_device(device: str | torch.device | None = "auto") -> torch.device:
    """The device of this process: :func:`~wsss_lib.core.runtime.select_device`, with an index-less
    ``cuda`` mapped to ``cuda:LOCAL_RANK`` when several processes run."""
    dev = select_device(device)
    if dev.type == "cuda" and dev.index is None:
        rank, world, local = env_world()
        if world > 1 or (dist.is_available() and dist.is_initialized()):
            dev = torch.device("cuda", local % max(1, torch.cuda.device_count()))
    return dev


def init_from_env(device: str | torch.device | None = "auto", backend: str | None = None,
                  timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment (idempotent).

    ``WORLD_SIZE`` unset or 1 and no group yet: nothing happens (single-process
    :class:`DistInfo`). Otherwise ``torch.distributed.init_process_group`` with ``env://``:
    backend ``"cpu:gloo,cuda:nccl"`` when the device is CUDA (NCCL for the gradients, Gloo for
    CPU-side metrics), ``"gloo"`` otherwise; the CUDA device is set from ``LOCAL_RANK``. The
    group is destroyed at interpreter exit (or by :func:`cleanup`).
    """
    global _INITIALISED_HERE
    if not dist.is_available():
        if env_world()[1] > 1:
            raise WsssError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
        return DistInfo(device=local_device(device))
    rank, world, local = env_world()
    dev = local_device(device)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, dist.get_backend(), dev)
    if world <= 1:
        return DistInfo(0, 1, 0, None, dev)
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise InvalidInputError(f"WORLD_SIZE={world} but {', '.join(missing)} is not set; launch with torchrun "
                                "(it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if backend is None:
        backend = "cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo"
    kw = {"device_id": dev} if dev.type == "cuda" else {}
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=float(timeout_s)), **kw)
    _INITIALISED_HERE = True
    atexit.register(cleanup)
    return DistInfo(rank, world, local, backend, dev)


def cleanup() -> None:
    """Destroy the process group if :func:`init_from_env` created it."""
    global _INITIALISED_HERE
    if _INITIALISED_HERE and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _INITIALISED_HERE = False


def barrier() -> None:
    """Wait for every rank. Joins the torchrun group first if ``WORLD_SIZE > 1``; a no-op in
    single-process runs."""
    if env_world()[1] > 1 and dist.is_available() and not dist.is_initialized():
        init_from_env()
    if is_distributed():
        dist.barrier()


# ----------------------------------------------------------------------------- batches and shards

def local_batch_size(global_batch: int, world: int) -> int:
    """Per-rank batch of a global batch ``global_batch`` split over ``world`` processes."""
    global_batch, world = int(global_batch), int(world)
    if world < 1:
        raise InvalidInputError(f"world size must be >= 1, got {world}")
    if global_batch < 1 or global_batch % world:
        raise InvalidInputError(f"batch_size={global_batch} is the GLOBAL batch and must be a positive multiple of the "
                                f"number of processes ({world}): each rank takes batch_size/{world} samples. Use e.g. "
                                f"batch_size={max(world, (global_batch // world) * world or world)}")
    return global_batch // world


def rank_slice(indices: Sequence[int] | np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s consecutive ``len/world`` entries of a global batch's ``indices``."""
    idx = np.asarray(indices)
    b = local_batch_size(len(idx), world)
    if not 0 <= rank < world:
        raise InvalidInputError(f"rank must lie in [0, {world}), got {rank}")
    return idx[rank * b:(rank + 1) * b]


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous, balanced share of ``n`` items (sizes differ
    by at most one; the shards of all ranks partition ``range(n)``)."""
    n, rank, world = int(n), int(rank), int(world)
    if world < 1 or not 0 <= rank < world or n < 0:
        raise InvalidInputError(f"need n >= 0, world >= 1 and 0 <= rank < world; got n={n}, rank={rank}, world={world}")
    return rank * n // world, (rank + 1) * n // world


# ----------------------------------------------------------------------------- collectives

def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (in place, also returned); identity when single-process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a float tensor (a new float32 tensor when distributed; the input itself
    when single-process)."""
    if not is_distributed():
        return tensor
    t = tensor.detach().float().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def reduce_confusion_matrix(cm):
    """Sum a :class:`~wsss_lib.core.metrics.ConfusionMatrix`'s counts over ranks, in place (exact:
    integer counts). mIoU must be computed from the summed matrix, never averaged over ranks."""
    if is_distributed():
        mat = cm.mat.to(torch.int64).contiguous()
        dist.all_reduce(mat, op=dist.ReduceOp.SUM)
        cm.mat = mat
    return cm


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; move tensors to CPU first)."""
    if not is_distributed():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` single-process)."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` whose backward sums the incoming gradients over ranks as well."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad):
        g = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        return g


# ----------------------------------------------------------------------------- synchronised batch norm

class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the global batch across ranks.

    PyTorch's :class:`torch.nn.SyncBatchNorm` runs on GPUs only; this is the same computation for
    CPU (Gloo) processes: per-channel sums and squared deviations are summed with ``all_reduce``
    (two passes, differentiable), the batch is normalised with the global biased variance and the
    running variance is updated with the unbiased one, as ``F.batch_norm`` does. In eval mode,
    or single-process, it is a plain BatchNorm. Input ``(B, C, *)``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise InvalidInputError(f"batch norm expects (B, C, ...) input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        c = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        shape = [1, c] + [1] * (input.dim() - 2)
        x = input.float()
        local = torch.cat([x.sum(dims), x.new_full((1,), float(input.numel() // c))])
        total = _SumOverRanks.apply(local)
        count = total[c].detach()
        mean = total[:c] / count
        d = x - mean.view(shape)
        var = _SumOverRanks.apply(d.pow(2).sum(dims)) / count
        y = d * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                unbiased = var.detach() * (count / (count - 1)) if count > 1 else var.detach()
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return y.to(input.dtype)


def _bn_children(module: nn.Module):
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
                child, (nn.SyncBatchNorm, CPUSyncBatchNorm)):
            yield module, name, child
        else:
            yield from _bn_children(child)


def convert_sync_batchnorm(model: nn.Module, device: torch.device | str | None = None) -> list:
    """Swap every BatchNorm layer of ``model`` (in place) for a synchronised one sharing its
    parameters and buffers (``torch.nn.SyncBatchNorm`` on CUDA, :class:`CPUSyncBatchNorm`
    otherwise). Returns the handle :func:`restore_batchnorm` needs to swap them back."""
    if isinstance(model, nn.modules.batchnorm._BatchNorm):
        raise InvalidInputError("convert_sync_batchnorm needs a model containing BatchNorm layers, not a bare layer")
    device = torch.device(device) if device is not None else next(
        (p.device for p in model.parameters()), torch.device("cpu"))
    cls = nn.SyncBatchNorm if device.type == "cuda" else CPUSyncBatchNorm
    swaps = []
    for parent, name, bn in list(_bn_children(model)):
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        if bn.affine:
            new.weight, new.bias = bn.weight, bn.bias
        if bn.track_running_stats:
            new.running_mean, new.running_var = bn.running_mean, bn.running_var
            new.num_batches_tracked = bn.num_batches_tracked
        new.train(bn.training)
        setattr(parent, name, new)
        swaps.append((parent, name, bn, new))
    return swaps


def restore_batchnorm(swaps: list) -> None:
    """Undo :func:`convert_sync_batchnorm` (the shared parameters/buffers hold the trained values)."""
    for parent, name, bn, new in reversed(swaps):
        bn.train(new.training)
        setattr(parent, name, bn)
    swaps.clear()


# ----------------------------------------------------------------------------- per-sample randomness

_BATCH_SHARD: tuple[int, int, int] | None = None  # (offset, local size, global size) of this rank's batch


def batch_rand(n: int) -> torch.Tensor:
    """``torch.rand(n)`` for a batch of ``n`` samples, world-size independent: inside
    :class:`FitRun`'s step context on several ranks, the numbers of the whole global batch are
    drawn and this rank's slice is returned. Single-process it *is* ``torch.rand(n)``."""
    shard = _BATCH_SHARD
    if shard is not None and shard[1] == n and shard[2] != n:
        off, local, glob = shard
        return torch.rand(glob)[off:off + local]
    return torch.rand(n)


# ----------------------------------------------------------------------------- what train.fit uses

class DDP(nn.parallel.DistributedDataParallel):
    """``DistributedDataParallel`` whose unknown attributes are read from the wrapped module, so
    loss steps can keep asking ``getattr(model, "uses_flow", False)``, ``model.num_classes``...
    Loss steps must still *call* ``model(...)`` (calling ``model.backbone(...)`` directly would
    bypass DDP's gradient synchronisation)."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


class FitRun:
    """Data-parallel plumbing of one :func:`~wsss_lib.engine.train.fit` call (a no-op single-process).

    ``FitRun(device, batch_size)`` joins the torchrun group if there is one and checks that the
    global batch splits evenly; then ``wrap(model)`` (DDP + SyncBatchNorm),
    ``local(indices)`` (this rank's part of the global batch), ``step()`` (context for
    :func:`batch_rand`), ``mean(loss)``, ``load_state(...)`` (rank 0 reads, broadcast),
    ``is_main``, ``log(...)``, ``barrier()``, ``restore()``.
    """

    def __init__(self, device: str | torch.device | None, batch_size: int, sync_bn: bool = True):
        rank, world, _ = env_world()
        if world > 1 or is_distributed():
            self.info = init_from_env(device)
        else:
            self.info = DistInfo(device=torch.device(device) if device is not None else torch.device("cpu"))
        self.active = self.info.world_size > 1
        self.device = self.info.device
        self.batch_size = int(batch_size)
        self.local_batch = local_batch_size(batch_size, self.info.world_size) if self.active else int(batch_size)
        self.sync_bn = sync_bn
        self._swaps: list = []

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def log(self, *args, **kw) -> None:
        """``print`` on rank 0 only."""
        if self.is_main:
            print(*args, **kw)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to call in the loss step: ``model`` itself single-process, else
        ``DistributedDataParallel(model)`` (with synchronised BatchNorm when it has any)."""
        if not self.active or not any(p.requires_grad for p in model.parameters()):
            return model
        if self.sync_bn:
            self._swaps = convert_sync_batchnorm(model, self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        # static_graph: the same parameters are used every step; unused ones (e.g. a head that a
        # fusion variant ignores) are detected on the first step instead of failing.
        return DDP(model, device_ids=ids, output_device=ids[0] if ids else None, static_graph=True)

    def local(self, indices: np.ndarray) -> np.ndarray:
        """This rank's consecutive share of a global batch's ``indices``."""
        if not self.active:
            return indices
        return rank_slice(indices, self.info.rank, self.info.world_size)

    @contextlib.contextmanager
    def step(self):
        """Context of one training step (makes :func:`batch_rand` slice the global draw)."""
        global _BATCH_SHARD
        if not self.active:
            yield
            return
        old = _BATCH_SHARD
        _BATCH_SHARD = (self.info.rank * self.local_batch, self.local_batch, self.batch_size)
        try:
            yield
        finally:
            _BATCH_SHARD = old

    def mean(self, loss: torch.Tensor) -> torch.Tensor:
        """Mean of the (detached) loss over ranks; the tensor itself single-process."""
        return all_reduce_mean(loss) if self.active else loss

    def load_state(self, path, resume: bool, map_location) -> dict | None:
        """The checkpoint at ``path`` to resume from (None if absent or ``resume`` is False):
        read by rank 0 and broadcast (so nodes need not share a file system)."""
        if not self.active:
            return load_checkpoint(path, map_location=map_location) if path is not None and resume and \
                path.is_file() else None
        state, error = None, None
        if self.is_main and path is not None and resume and path.is_file():
            try:
                state = load_checkpoint(path, map_location="cpu")
            except CheckpointError as exc:  # every rank raises it, none waits forever
                error = str(exc)
        state, error = broadcast_object((state, error))
        if error is not None:
            raise CheckpointError(error)
        return state

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def restore(self) -> None:
        """Swap the synchronised BatchNorm layers back (no collective; safe in ``finally``)."""
        restore_batchnorm(self._swaps)


# ----------------------------------------------------------------------------- evaluation shards

class EvalShard:
    """This rank's contiguous part of an evaluation dataset and how to combine the results.

    ``part = eval_shard(dataset)``; compute on ``part.dataset``; ``part.combine(result)`` sums
    every :class:`~wsss_lib.core.metrics.ConfusionMatrix` in the result dict over ranks
    (``all_reduce``) and concatenates the tensors named in ``cat`` in dataset order.
    """

    def __init__(self, dataset, rank: int, world: int):
        self.full = dataset
        self.rank, self.world = rank, world
        self.start, self.stop = shard_bounds(len(dataset), rank, world)
        if world > 1:
            if len(dataset) < world:
                raise InvalidInputError(f"cannot evaluate {len(dataset)} images on {world} processes; "
                                        "use at least one image per process")
            self.dataset = dataset.subset(range(self.start, self.stop))
        else:
            self.dataset = dataset

    def combine(self, result: dict, cat: Sequence[str] = ("pred", "pred_crf")) -> dict:
        if self.world <= 1:
            return result

        out = dict(result)
        for k, v in result.items():
            if isinstance(v, ConfusionMatrix):
                out[k] = reduce_confusion_matrix(v)
        for k in cat:
            if k in out and torch.is_tensor(out[k]):
                parts = all_gather_object(out[k].cpu())
                out[k] = torch.cat(parts, 0)
        return out


def eval_shard(dataset) -> EvalShard:
    """:class:`EvalShard` of ``dataset`` (needs ``subset``, e.g. an
    :class:`~wsss_lib.engine.train.InMemoryDataset`) for this process; the whole dataset single-process."""
    if env_world()[1] > 1:
        init_from_env()
    if is_distributed():
        return EvalShard(dataset, dist.get_rank(), dist.get_world_size())
    return EvalShard(dataset, 0, 1)
