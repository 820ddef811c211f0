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
:func:`heatmaps_job` (paper 2: per-class heatmaps -> ``.npz``); flow caching shards inside
:func:`wsss_lib.flow.compute_dataset_flow`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .distributed import barrier as _barrier
from .distributed import get_rank, get_world_size, shard_bounds
from .errors import InvalidInputError, UnsafePathError

__all__ = ["shard", "shard_indices", "resolve_rank_world", "atomic_output", "write_output", "remove_stale_temps",
           "run_sharded", "safe_relpath", "dataset_ids", "extract_masks_job", "heatmaps_job"]


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


# ----------------------------------------------------------------------------- atomic files

def _temp_for(path: Path) -> Path:
    # hidden, unique, and with the target's suffix (PIL/numpy pick the format from it)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_output(p) as tmp: write(tmp)`` — ``tmp`` (same folder, same suffix) is
    fsynced and renamed to ``p`` when the block succeeds, deleted when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_for(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise InvalidInputError(f"nothing was written for {path}")
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.\d+-[0-9a-f]{8}\.tmp(\.[^.]*)?$")


def remove_stale_temps(paths: Sequence[str | os.PathLike]) -> int:
    """Delete the temporary files that killed writers of ``paths`` left behind (one directory
    listing per folder); returns how many were removed."""
    by_dir: dict[Path, set[str]] = {}
    for p in paths:
        p = Path(p)
        by_dir.setdefault(p.parent, set()).add(p.name)
    n = 0
    for folder, names in by_dir.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            m = _TEMP_RE.match(entry.name)
            if m and m.group("name") in names:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    n += 1
    return n


def _as_numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)


def write_output(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` to ``path`` (not atomically; :func:`run_sharded` passes a temp path).

    ``value``: a callable ``f(path)`` that writes the file itself; ``bytes``; ``str`` (text); or,
    by suffix: ``.png`` an int/bool label map ``(H, W)`` (palette PNG,
    :func:`~wsss_lib.imageio.write_label`) or a uint8 image ``(H, W, 3)``; ``.npy`` an array;
    ``.npz`` an array (key ``data``) or a dict of arrays (compressed); ``.pt`` tensors / plain
    values (``torch.save``); ``.json`` plain values.
    """
    path = Path(path)
    if callable(value):
        value(path)
        return path
    if isinstance(value, (bytes, bytearray, memoryview)):
        path.write_bytes(bytes(value))
        return path
    if isinstance(value, str):
        path.write_text(value)
        return path
    suffix = path.suffix.lower()
    if suffix == ".png":
        from .imageio import write_image, write_label

        arr = _as_numpy(value)
        if arr.ndim == 2:
            if arr.dtype == bool:
                arr = arr.astype(np.uint8)
            elif np.issubdtype(arr.dtype, np.floating):
                raise InvalidInputError(f"{path.name}: a .png output needs an integer label map or a bool mask "
                                        "(threshold probabilities first) or a uint8 (H, W, 3) image")
            write_label(path, arr)
        else:
            write_image(path, arr)
    elif suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, _as_numpy(value))
        path.write_bytes(buf.getvalue())
    elif suffix == ".npz":
        buf = io.BytesIO()
        if isinstance(value, dict):
            np.savez_compressed(buf, **{k: _as_numpy(v) for k, v in value.items()})
        else:
            np.savez_compressed(buf, data=_as_numpy(value))
        path.write_bytes(buf.getvalue())
    elif suffix == ".pt":
        buf = io.BytesIO()
        torch.save(value, buf)
        path.write_bytes(buf.getvalue())
    elif suffix == ".json":
        path.write_text(json.dumps(value, indent=2, sort_keys=True))
    else:
        raise InvalidInputError(f"don't know how to write {type(value).__name__} to {path.name}; return bytes or "
                                "a callable f(path), or use .png/.npy/.npz/.pt/.json")
    return path


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
        from tqdm.auto import tqdm

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
            t = _temp_for(p)
            temps.append((t, p))
            write_output(t, v)
            if not t.is_file():
                raise InvalidInputError(f"item {i}: nothing was written for {p}")
            _fsync(t)
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
    """Paper-1 fg/bg masks for a whole dataset, sharded: :func:`~wsss_lib.masks.extract_masks`
    (fused maps; ``mask_kw``: layers, weights, aggregate, normalize, align, normalize_each), then
    the dense CRF (:func:`~wsss_lib.masks.refine_masks` with ``crf`` = a
    :class:`~wsss_lib.crf.CRFParams`/dict; ``crf=None`` thresholds the fused map instead).

    Writes ``<out_dir>/<id>.png`` (0 = background, 1 = foreground, the format of
    :func:`wsss_lib.crf.write_masks`) and, with ``save_probs``, ``<out_dir>/<id>.npz`` (``fg``
    float16 ``(H, W)`` in [0, 1]). Returns :func:`run_sharded`'s summary.
    """
    from .masks import extract_masks, refine_masks

    out_dir = Path(out_dir)
    ids = dataset_ids(dataset)
    items = list(range(len(ids)))

    def paths(i):
        rel = safe_relpath(ids[i])
        return [out_dir / f"{rel}.png", out_dir / f"{rel}.npz"] if save_probs else out_dir / f"{rel}.png"

    def fn(batch):
        images = _images(dataset, batch)
        fused = extract_masks(classifier, images, None, batch_size=batch_size, device=device, **mask_kw)["fused"]
        if crf is not None:
            u8 = np.ascontiguousarray((images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy())
            probs = torch.from_numpy(refine_masks(list(u8), fused, threshold, crf, workers=crf_workers))
            fg = probs >= 0.5
        else:
            probs, fg = fused, fused >= threshold
        if save_probs:
            return [[fg[k].numpy(), {"fg": probs[k].half().numpy()}] for k in range(len(batch))]
        return [fg[k].numpy() for k in range(len(batch))]

    return run_sharded(items, fn, paths, rank, world, progress, batch_size=batch_size, overwrite=overwrite,
                       desc="masks")


def heatmaps_job(classifier: torch.nn.Module, dataset, out_dir: str | os.PathLike, *, layer: str = "score",
                 normalisation: str = "minmax", batch_size: int = 16, device=None, rank: int | None = None,
                 world: int | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Paper-2 per-class heatmaps (:func:`~wsss_lib.heatmaps.class_heatmaps`) for a whole dataset,
    sharded: ``<out_dir>/<id>.npz`` with ``heatmaps`` float16 ``(K, H, W)`` in [0, 1]. Returns
    :func:`run_sharded`'s summary."""
    from .heatmaps import class_heatmaps

    out_dir = Path(out_dir)
    ids = dataset_ids(dataset)
    dev = torch.device(device) if device is not None else next(classifier.parameters()).device

    def fn(batch):
        maps = class_heatmaps(classifier, _images(dataset, batch).to(dev), layer, normalisation,
                              batch_size=batch_size)
        return [{"heatmaps": maps[k].half().cpu().numpy()} for k in range(len(batch))]

    return run_sharded(list(range(len(ids))), fn, lambda i: out_dir / f"{safe_relpath(ids[i])}.npz", rank, world,
                       progress, batch_size=batch_size, overwrite=overwrite, desc="heatmaps")
