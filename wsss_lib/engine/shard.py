"""Dataset-scale jobs split over processes: sharded, resumable, write-once, atomic per file.

Mask extraction + CRF, class heatmaps and optical-flow caching touch every image of a dataset
once and write one (or a few) files per image. :func:`run_sharded` is the one loop they share:

* **sharded** — the items are split into contiguous, balanced shards (:func:`shard`); rank ``r``
  of ``world`` processes handles shard ``r`` only. Rank/world come from torchrun
  (``RANK``/``WORLD_SIZE``) or are passed explicitly (e.g. a SLURM array task id), so the same
  job runs as ``python ...``, ``torchrun --nproc_per_node=8 ...`` or N independent jobs;
* **write-once, atomic** — each output is written to a hidden temporary file in the target folder
  and renamed over the target (``os.replace``) only after the item's function succeeded; a rank
  that crashes or is killed leaves no half-written output (at most a hidden ``.*.tmp*`` file,
  removed when the item is redone);
* **resumable** — an item whose outputs all exist is skipped, so re-running a job (after a crash,
  with more or fewer processes) only does the missing work. The shard assignment is computed on
  the full item list *before* looking at the disk, so concurrent ranks never disagree;
* under torchrun all ranks wait for each other at the end (so every output exists afterwards).

Ready-made jobs: :func:`extract_masks_job` (paper 1: fused fg maps -> dense CRF -> mask PNGs),
:func:`heatmaps_job` (paper 2: per-class heatmaps -> ``.npz``), :func:`compute_dataset_flow`
(optical flow of every frame -> :class:`FlowCache`). The atomic writers themselves live in
:mod:`wsss_lib.core.io`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import CorruptFileError, InvalidInputError, UnsafePathError
from ..core.io import (atomic_output, atomic_write_bytes, fsync_path, read_image, remove_stale_temps, temp_path,
                        to_uint8_image, write_output)
from ..core.runtime import select_device
from ..ops.flow import FlowParams, compute_flow, flow_partners, resolve_method
from ..ops.heatmaps import class_heatmaps
from ..ops.masks import extract_masks, refine_masks
from .distributed import barrier as _barrier
from .train import is_streamed
from .distributed import get_rank, get_world_size, shard_bounds

__all__ = ["shard", "shard_indices", "resolve_rank_world", "run_sharded", "safe_relpath", "dataset_ids",
           "extract_masks_job", "heatmaps_job", "FlowCache", "compute_dataset_flow"]


def shard(items: Sequence, rank: int, world: int) -> list:
    """Rank ``rank``'s contiguous, balanced share of ``items`` (shard sizes differ by at most one;
    the shards of ranks ``0 .. world-1`` concatenate back to ``items``)."""
    start, stop = shard_bounds(len(items), rank, world)
    return list(items[start:stop])


def shard_indices(n: int, rank: int, world: int) -> range:
    """Indices ``range(start, stop)`` of rank ``rank``'s share of ``n`` items."""
    return range(*shard_bounds(n, rank, world))


def resolve_rank_world(rank: int | None = None, world: int | None = None) -> tuple[int, int, bool]:
    """``(rank, world, from_launcher)``: explicit values win (both or neither), else the process
    group's / torchrun's (``from_launcher`` True), else ``(0, 1)``."""
    if (rank is None) != (world is None):
        raise InvalidInputError("pass both rank and world, or neither (then torchrun's RANK/WORLD_SIZE are used)")
    if rank is None:
        return get_rank(), get_world_size(), True
    rank, world = int(rank), int(world)
    if world < 1 or not 0 <= rank < world:
        raise InvalidInputError(f"need world >= 1 and 0 <= rank < world, got rank={rank}, world={world}")
    return rank, world, False


# ----------------------------------------------------------------------------- the sharded loop

def _item_paths(out_paths, items, i) -> list[Path]:
    p = out_paths(items[i]) if callable(out_paths) else out_paths[i]
    if isinstance(p, (str, os.PathLike)):
        return [Path(p)]
    paths = [Path(x) for x in p]
    if not paths:
        raise InvalidInputError(f"item {i} has no output path")
    return paths


def run_sharded(items: Sequence, fn: Callable, out_paths: Callable | Sequence, rank: int | None = None,
                world: int | None = None, progress: bool = True, *, batch_size: int | None = None,
                overwrite: bool = False, barrier: bool | None = None, desc: str = "items") -> dict:
    """Compute and write the outputs of this process's shard of ``items``.

    Parameters
    ----------
    items: the work list (ids, indices, samples...); every rank must pass the same list.
    fn: ``fn(item) -> output`` — one output per path of the item (a single value for one path, a
        sequence for several); see :func:`write_output` for the accepted values. With
        ``batch_size=k``: ``fn(list_of_up_to_k_items) -> list of per-item outputs`` (batched GPU
        forward passes).
    out_paths: ``out_paths(item) -> path | [paths]`` or a sequence aligned with ``items``. Paths
        must be distinct across items (each output is written once).
    rank, world: this process's shard (both or neither; default torchrun's, else ``(0, 1)``).
    progress: a ``tqdm`` bar (rank 0 only under torchrun).
    overwrite: recompute items whose outputs exist (default: skip them — resume).
    barrier: wait for all ranks at the end (default: yes when rank/world came from torchrun).

    Returns ``{"rank", "world", "total", "assigned", "computed", "skipped"}`` (counts of this rank).
    An exception in ``fn`` propagates (with a note naming the item) after this item's temporary
    files are removed; items already finished stay finished.
    """
    rank, world, from_launcher = resolve_rank_world(rank, world)
    items = list(items) if not isinstance(items, (list, tuple)) else items
    if not callable(out_paths) and len(out_paths) != len(items):
        raise InvalidInputError(f"run_sharded got {len(items)} items but {len(out_paths)} output paths")
    if batch_size is not None and int(batch_size) < 1:
        raise InvalidInputError(f"batch_size must be >= 1 or None, got {batch_size}")
    all_paths = [_item_paths(out_paths, items, i) for i in range(len(items))]
    flat = [p for ps in all_paths for p in ps]
    if len(set(flat)) != len(flat):
        seen, dup = set(), None
        for p in flat:
            if p in seen:
                dup = p
                break
            seen.add(p)
        raise InvalidInputError(f"two items write the same output {dup}; outputs must be distinct (write-once)")
    mine = shard_indices(len(items), rank, world)
    todo = [i for i in mine if overwrite or not all(p.is_file() for p in all_paths[i])]
    skipped = len(mine) - len(todo)
    remove_stale_temps([p for i in todo for p in all_paths[i]])
    bar = None
    if progress and todo and (rank == 0 or not from_launcher):
        bar = tqdm(total=len(todo), desc=f"{desc} [{rank}/{world}]" if world > 1 else desc, leave=False)
    step = 1 if batch_size is None else int(batch_size)
    computed = 0
    try:
        for s in range(0, len(todo), step):
            chunk = todo[s:s + step]
            try:
                if batch_size is None:
                    results = [fn(items[chunk[0]])]
                else:
                    results = list(fn([items[i] for i in chunk]))
                    if len(results) != len(chunk):
                        raise InvalidInputError(f"fn returned {len(results)} outputs for a batch of {len(chunk)} items")
            except Exception as exc:
                exc.add_note(f"run_sharded: while processing item(s) {chunk[:4]}{'...' if len(chunk) > 4 else ''}")
                raise
            for i, res in zip(chunk, results):
                _commit(i, all_paths[i], res)
                computed += 1
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    if barrier if barrier is not None else (from_launcher and world > 1):
        _barrier()
    return {"rank": rank, "world": world, "total": len(items), "assigned": len(mine), "computed": computed,
            "skipped": skipped}


def _commit(i: int, paths: list[Path], result) -> None:
    """Write an item's outputs to temp files, then rename them all; on failure remove the temps."""
    outs = [result] if len(paths) == 1 else list(result)
    if len(outs) != len(paths):
        raise InvalidInputError(f"item {i}: fn returned {len(outs)} outputs for {len(paths)} paths")
    temps: list[tuple[Path, Path]] = []
    try:
        for p, v in zip(paths, outs):
            p.parent.mkdir(parents=True, exist_ok=True)
            t = temp_path(p)
            temps.append((t, p))
            write_output(t, v)
            if not t.is_file():
                raise InvalidInputError(f"item {i}: nothing was written for {p}")
            fsync_path(t)
        for t, p in temps:
            os.replace(t, p)
    except BaseException as exc:
        for t, _ in temps:
            with contextlib.suppress(OSError):
                t.unlink()
        if isinstance(exc, Exception):
            exc.add_note(f"run_sharded: while writing the outputs of item {i}")
        raise


# ----------------------------------------------------------------------------- ready-made jobs

def safe_relpath(sample_id: str) -> str:
    """``sample_id`` as a relative output path (sub-folders allowed, e.g. Cityscapes'
    ``city/name``); refuses empty ids, absolute paths and ``..``."""
    sid = str(sample_id).replace("\\", "/")
    parts = sid.split("/")
    if not sid or sid.startswith("/") or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise UnsafePathError(f"sample id {sample_id!r} cannot be used as an output file name")
    return sid


def dataset_ids(dataset) -> list[str]:
    """Sample ids of a dataset without loading images (``ids``, ``samples[i].id`` or ``[i]["id"]``)."""
    if hasattr(dataset, "ids"):
        return [str(x) for x in dataset.ids]
    if hasattr(dataset, "samples"):
        return [str(s.id) for s in dataset.samples]
    return [str(dataset[i].get("id", i)) for i in range(len(dataset))]


def _images(dataset, idx: Sequence[int]) -> torch.Tensor:
    """Float ``(B, 3, H, W)`` in [0, 1] of the samples ``idx``."""
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(list(idx))["image"]
    return torch.stack([dataset[int(i)]["image"] for i in idx])


def extract_masks_job(classifier: torch.nn.Module, dataset, out_dir: str | os.PathLike, *, threshold: float = 0.5,
                      crf=None, batch_size: int = 32, device=None, crf_workers: int = 1, save_probs: bool = False,
                      rank: int | None = None, world: int | None = None, progress: bool = True,
                      overwrite: bool = False, **mask_kw) -> dict:
    """Paper-1 fg/bg masks for a whole dataset, sharded: :func:`~wsss_lib.ops.masks.extract_masks`
    (fused maps; ``mask_kw``: layers, weights, aggregate, normalize, align, normalize_each), then
    the dense CRF (:func:`~wsss_lib.ops.masks.refine_masks` with ``crf`` = a
    :class:`~wsss_lib.ops.crf.CRFParams`/dict; ``crf=None`` thresholds the fused map instead).

    A streamed dataset (full-size images of different sizes, :func:`~wsss_lib.engine.train.is_streamed`)
    runs one forward per image and the CRF on each batch of ``batch_size`` images (``crf_workers``).

    Writes ``<out_dir>/<id>.png`` (0 = background, 1 = foreground, the format of
    :func:`wsss_lib.core.io.write_masks`) and, with ``save_probs``, ``<out_dir>/<id>.npz`` (``fg``
    float16 ``(H, W)`` in [0, 1]). Returns :func:`run_sharded`'s summary.
    """
    out_dir = Path(out_dir)
    ids = dataset_ids(dataset)
    items = list(range(len(ids)))

    def paths(i):
        rel = safe_relpath(ids[i])
        return [out_dir / f"{rel}.png", out_dir / f"{rel}.npz"] if save_probs else out_dir / f"{rel}.png"

    def fn(batch):
        if is_streamed(dataset):  # full-size images of different sizes: one forward each, the CRF on the batch
            images = [dataset[int(i)]["image"][None] for i in batch]
            fused = [extract_masks(classifier, x, None, batch_size=1, device=device, **mask_kw)["fused"][0]
                     for x in images]
            u8 = [to_uint8_image(x)[0] for x in images]
        else:
            images = _images(dataset, batch)
            fused = extract_masks(classifier, images, None, batch_size=batch_size, device=device, **mask_kw)["fused"]
            u8 = list(to_uint8_image(images))
        if crf is not None:
            probs = refine_masks(u8, list(fused), threshold, crf, workers=crf_workers, device=select_device(device))
            probs = [torch.from_numpy(np.asarray(q)) for q in probs]
            fg = [q >= 0.5 for q in probs]
        else:
            probs, fg = fused, [f >= threshold for f in fused]
        if save_probs:
            return [[fg[k].numpy(), {"fg": probs[k].half().numpy()}] for k in range(len(batch))]
        return [fg[k].numpy() for k in range(len(batch))]

    return run_sharded(items, fn, paths, rank, world, progress, batch_size=batch_size, overwrite=overwrite,
                       desc="masks")


def heatmaps_job(classifier: torch.nn.Module, dataset, out_dir: str | os.PathLike, *, layer: str = "score",
                 normalisation: str = "minmax", batch_size: int = 16, device=None, rank: int | None = None,
                 world: int | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Paper-2 per-class heatmaps (:func:`~wsss_lib.ops.heatmaps.class_heatmaps`) for a whole dataset,
    sharded: ``<out_dir>/<id>.npz`` with ``heatmaps`` float16 ``(K, H, W)`` in [0, 1]. Returns
    :func:`run_sharded`'s summary."""
    out_dir = Path(out_dir)
    ids = dataset_ids(dataset)
    dev = torch.device(device) if device is not None else next(classifier.parameters()).device

    def fn(batch):
        maps = class_heatmaps(classifier, _images(dataset, batch).to(dev), layer, normalisation,
                              batch_size=batch_size)
        return [{"heatmaps": maps[k].half().cpu().numpy()} for k in range(len(batch))]

    return run_sharded(list(range(len(ids))), fn, lambda i: out_dir / f"{safe_relpath(ids[i])}.npz", rank, world,
                       progress, batch_size=batch_size, overwrite=overwrite, desc="heatmaps")


# ----------------------------------------------------------------------------- optical-flow cache

def _safe_name(sample_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(sample_id)).strip("._")
    if not name:
        name = "sample"
    return name + "_" + hashlib.sha1(str(sample_id).encode()).hexdigest()[:6]


@dataclass
class FlowCache:
    """Where a dataset's flow fields live: ``<root>/<dataset name>/<method>-<hash>[-<data version>]/<id>.npz``.

    ``data_version``: a fingerprint of the frames' generation (e.g.
    :func:`~wsss_lib.data.registry.dataset_fingerprint`: a regenerated toy dataset keeps its sample
    ids, so without it a new generator version would silently read the old frames' flow)."""

    root: Path
    dataset: str
    params: FlowParams = field(default_factory=FlowParams)
    data_version: str = ""

    def __post_init__(self):
        # "auto" is resolved now so the folder name says which method produced the files
        self.params = FlowParams(**{**asdict(self.params), "method": resolve_method(self.params.method)})

    @property
    def folder(self) -> Path:
        name = self.params.key() + (f"-{self.data_version}" if self.data_version else "")
        return Path(self.root) / re.sub(r"[^A-Za-z0-9._-]+", "_", self.dataset) / name

    def path(self, sample_id: str) -> Path:
        return self.folder / f"{_safe_name(sample_id)}.npz"

    def load(self, sample_id: str) -> np.ndarray:
        """Cached flow of one sample, float32 ``(H, W, 2)``."""
        p = self.path(sample_id)
        try:
            with np.load(p) as z:
                return z["flow"].astype(np.float32)
        except FileNotFoundError as exc:
            raise CorruptFileError(f"no cached flow for sample {sample_id!r} at {p}; run `wsss flow` first") from exc
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptFileError(f"cached flow {p} is unreadable ({exc}); delete it and run `wsss flow` again") from exc

    def encode(self, flow: np.ndarray) -> dict:
        """What a cache file holds: ``{"flow": float16 (H, W, 2)}`` (:func:`write_output` writes it)."""
        return {"flow": np.asarray(flow, dtype=np.float16)}

    def save(self, sample_id: str, flow: np.ndarray) -> Path:
        with atomic_output(self.path(sample_id)) as tmp:
            write_output(tmp, self.encode(flow))
        return self.path(sample_id)


def compute_dataset_flow(samples: Sequence, cache: FlowCache, progress: bool = True, overwrite: bool = False,
                         device: str | torch.device = "cpu", rank: int | None = None,
                         world: int | None = None) -> dict:
    """Compute and cache the flow of every sample (see :func:`~wsss_lib.ops.flow.flow_partners` for
    the pairing, Cityscapes' ``leftImg8bit_sequence`` neighbours included): a :func:`run_sharded` job,
    one ``.npz`` per frame (``FlowCache.path``). Frames without a partner get zero flow (``"zero_flow"``
    counts them).

    Only missing files are computed unless ``overwrite``. ``rank``/``world``: compute only this
    process's shard (default torchrun's RANK/WORLD_SIZE, i.e. all of it single-process; under
    torchrun the ranks wait for each other at the end; counts are this rank's). Returns
    ``{"folder", "method", "computed", "cached", "mean_magnitude", "zero_flow"}`` (magnitude over
    the computed frames, NaN if none; ``zero_flow``: frames of ``samples`` without a partner frame).
    """
    params = cache.params
    partners = flow_partners(samples)
    zero = sum(1 for j, _ in partners if isinstance(j, int) and j < 0)
    cache.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cache.folder / "params.json", json.dumps(asdict(params), indent=2, sort_keys=True).encode())
    mags: list[float] = []
    images: dict[int, np.ndarray] = {}

    def img(i):
        if i not in images:
            if len(images) > 64:
                images.clear()
            images[i] = read_image(samples[i].image)
        return images[i]

    def fn(i):
        j, sign = partners[i]
        a = img(i)
        if isinstance(j, int) and j < 0:
            flow = np.zeros(a.shape[:2] + (2,), np.float32)
        else:
            b = img(j) if isinstance(j, int) else read_image(j)
            if b.shape != a.shape:
                other = samples[j].image if isinstance(j, int) else j
                raise CorruptFileError(f"frames {samples[i].image} and {other} of one clip differ in size")
            flow = sign * compute_flow(a, b, params, device=device)
        mags.append(float(np.linalg.norm(flow, axis=-1).mean()))
        return cache.encode(flow)

    res = run_sharded(list(range(len(samples))), fn, lambda i: cache.path(samples[i].id), rank, world, progress,
                      overwrite=overwrite, desc=f"flow ({params.method})")
    return {"folder": str(cache.folder), "method": params.method, "computed": res["computed"],
            "cached": res["skipped"], "mean_magnitude": float(np.mean(mags)) if mags else float("nan"),
            "zero_flow": zero}
