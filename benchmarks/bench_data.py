"""Benchmark 4: data pipeline — waiting for data in a training step, toy-data generation, optical flow.

1. Time spent fetching a batch as a share of a training step (fetch + SegNet step), for the
   in-memory dataset the notebooks use (``train.preload``) and, for contrast, for reading every
   batch from disk through ``SegmentationDataset`` (JPEG + PNG decoding). Target: < 10 %.
2. Toy data generation: ToyObjects images/s (in memory, and written to disk as JPEG/PNG with the
   generator's worker processes) and ToyStreets frames/s.
3. Optical flow (``flow.compute_flow``) per frame pair: Farnebäck and DIS at 96x128 (ToyStreets)
   and, in the full run, 512x1024 (Cityscapes-like); the flow cache's hit path
   (``compute_dataset_flow`` a second time, ``FlowCache.load``) per frame.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import Row, amp_context, compare, finish, guarded, repeats, start, timeit, training_layout


def data_wait(rows, args, reps):
    from wsss_lib.data.base import SegmentationDataset
    from wsss_lib.data.registry import load_dataset
    from wsss_lib.ops.losses import cross_entropy
    from wsss_lib.models import SegNet, build_backbone
    from wsss_lib.engine.train import _fetch, batch_indices, batch_stream, preload

    info, samples = load_dataset("toy_objects", split="val")
    disk = SegmentationDataset(info, samples)
    mem = preload(disk)
    b = 16
    torch.manual_seed(args.seed)
    model = training_layout(SegNet(build_backbone("small_vgg"), 7, width=256, dilation=4)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    state = {"step": 0}

    def fetch(ds):
        state["step"] += 1
        return _fetch(ds, batch_indices(len(ds), b, args.seed, state["step"]), None)

    batch = fetch(mem)

    def step():  # as train.fit runs it
        with amp_context("cpu"):
            loss = cross_entropy(model(batch["image"]), batch["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = compare({"step": step, "mem": lambda: fetch(mem), "disk": lambda: fetch(disk)}, repeat=reps)
    s = t["step"]["median"]
    for key, name in (("mem", "in-memory (preload)"), ("disk", "from disk (JPEG+PNG), read in the loop")):
        f = t[key]["median"]
        rows.append(Row(f"batch {b} fetch, {name}", f * 1000, "ms"))
        rows.append(Row(f"data wait share, {name}", 100 * f / (f + s), "%", "< 10" if key == "mem" else "",
                        note=f"step {s:.2f} s (SegNet, 96px)"))
    # what train.fit does for a disk dataset: batches read ahead in threads (batch_stream), so the
    # loop only waits for what the prefetch could not hide
    n_steps = 6 if args.quick else 20
    waited, t0 = 0.0, time.perf_counter()
    stream = batch_stream(disk, b, args.seed, 0, n_steps, prefetch=2)
    for _ in range(n_steps):
        w0 = time.perf_counter()
        batch = next(stream)
        waited += time.perf_counter() - w0
        step()
    total = time.perf_counter() - t0
    rows.append(Row("data wait share, from disk, prefetched as train.fit does", 100 * waited / total, "%", "< 10",
                    note=f"{n_steps} steps, waited {1000 * waited / n_steps:.1f} ms/step of {total / n_steps:.2f} s"))


def toy_generation(rows, args):
    from wsss_lib.data.toy_objects import ensure_toy_objects, generate_image
    from wsss_lib.data.toy_streets import generate_clip

    n = 16 if args.quick else 48
    t = timeit(lambda: [generate_image(args.seed, "bench", i) for i in range(n)], repeat=1, warmup=0)
    rows.append(Row("ToyObjects generation, in memory", n / t["median"], "img/s", note="96x96, 1 process"))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ensure_toy_objects(Path(tmp) / "objects", n_train=n, n_val=0, n_test=0, seed=args.seed)
        dt = time.perf_counter() - t0
    rows.append(Row("ToyObjects generation, to disk", n / dt, "img/s", note="JPEG+PNG, generator workers"))
    k = 2 if args.quick else 4
    t = timeit(lambda: [generate_clip(args.seed, "bench", i) for i in range(k)], repeat=1, warmup=0)
    rows.append(Row("ToyStreets generation, in memory", 8 * k / t["median"], "frames/s", note="96x128, 8-frame clips"))


def optical_flow(rows, args, reps):
    import cv2

    from wsss_lib.data.toy_streets import generate_clip
    from wsss_lib.engine.shard import FlowCache, compute_dataset_flow
    from wsss_lib.ops.flow import FlowParams, compute_flow

    clip = generate_clip(args.seed, "bench", 0)["images"]
    a, b = clip[0], clip[1]
    sizes = [("96x128", a, b)]
    if not args.quick:
        sizes.append(("512x1024", cv2.resize(a, (1024, 512)), cv2.resize(b, (1024, 512))))
    for label, x, y in sizes:
        for method in ("farneback", "dis"):
            t = timeit(lambda: compute_flow(x, y, method=method), repeat=reps)
            rows.append(Row(f"flow {method} {label}", t["median"] * 1000, "ms/pair"))
    # cache: compute once, then the hit path
    from wsss_lib.data.registry import load_dataset

    _, samples = load_dataset("toy_streets", split="val")
    samples = samples[: (16 if args.quick else 40)]
    with tempfile.TemporaryDirectory() as tmp:
        cache = FlowCache(Path(tmp), "toy_streets", FlowParams())
        t0 = time.perf_counter()
        compute_dataset_flow(samples, cache, progress=False)
        first = (time.perf_counter() - t0) / len(samples)
        t = timeit(lambda: compute_dataset_flow(samples, cache, progress=False), repeat=reps)
        t_load = timeit(lambda: [cache.load(s.id) for s in samples], repeat=reps)
    rows.append(Row("flow cache miss (read frames + flow + save)", first * 1000, "ms/frame", note=f"{len(samples)} frames"))
    rows.append(Row("flow cache hit (compute_dataset_flow again)", t["median"] / len(samples) * 1000, "ms/frame"))
    rows.append(Row("flow cache load (FlowCache.load)", t_load["median"] / len(samples) * 1000, "ms/frame"))


def main(argv=None) -> int:
    args = start(__doc__, argv)
    reps = repeats(args)
    rows: list[Row] = []
    guarded("data wait", rows, lambda: data_wait(rows, args, reps))
    guarded("toy generation", rows, lambda: toy_generation(rows, args))
    guarded("optical flow", rows, lambda: optical_flow(rows, args, reps))
    return finish("Data pipeline (CPU)", rows, args)


if __name__ == "__main__":
    raise SystemExit(main())
