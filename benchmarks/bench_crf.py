"""Benchmark 2: dense CRF — wrapper overhead, worker processes, torch lattice CRF vs pydensecrf (speed, agreement, memory).

1. ``crf.dense_crf`` (validation + unary + pydensecrf) vs the same pydensecrf calls made directly,
   identical parameters, 321x321, 2 and 21 labels. Target: ratio <= 1.05.
2. Dataset-level ``crf.crf_batch`` with worker processes (all cores) vs one process. Target: >= 1.7x
   on 2 cores.
3. ``crf_torch.dense_crf_torch`` (permutohedral lattice) vs pydensecrf, seconds per 321x321 photo,
   2 and 21 labels, 10 iterations, timed interleaved; on CPU at the same thread count (1). Target:
   <= 2x pydensecrf's time. On CUDA (``--device cuda``, the default when present) also the batched
   throughput (target >= 10x pydensecrf).
4. Agreement (share of pixels with the same label, target >= 0.995; per-label IoU, target >= 0.99):
   scikit-image's sample photographs with coarse noisy unaries (2 and 21 labels), and the fg/bg
   masks of the ToyObjects TEST split (GT-derived noisy probabilities; in the full run also the
   fused-activation maps of a tag classifier trained here).
5. Peak memory of the torch CRF vs image side (128..1024 px) and its log-log exponent (1 = linear).

``--only speed photos ...`` runs some parts; ``--device`` picks the torch CRF's device.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as nd
import torch

from _common import Row, compare, finish, guarded, repeats, start, sync, timeit, toy_batch


def synthetic(rng, h, w, c):
    """A smooth colourful image with edges and smooth random probabilities ``(C, H, W)``."""
    img = nd.gaussian_filter(rng.uniform(0, 255, (h // 16 + 1, w // 16 + 1, 3)), (0.5, 0.5, 0))
    img = np.kron(img, np.ones((16, 16, 1)))[:h, :w] + rng.normal(0, 8, (h, w, 3))
    image = np.clip(img, 0, 255).astype(np.uint8)
    logit = nd.gaussian_filter(rng.normal(0, 1, (c, h, w)), (0, 6, 6)) * 12
    e = np.exp(logit - logit.max(0))
    return image, (e / e.sum(0)).astype(np.float32)


def direct_pydensecrf(image, probs, p):
    """What a user would write by hand: the same calls the wrapper makes, without its checks."""
    import pydensecrf.densecrf as dcrf

    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(probs, p.eps, 1.0)).reshape(c, -1)))
    d.addPairwiseGaussian(sxy=p.gauss_sxy, compat=p.gauss_compat)
    d.addPairwiseBilateral(sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=image, compat=p.bilateral_compat)
    return np.asarray(d.inference(p.iterations), dtype=np.float32).reshape(c, h, w)


def wrapper_overhead(rows, args, reps):
    from wsss_lib.ops.crf import CRFParams, dense_crf

    rng = np.random.default_rng(args.seed)
    p = CRFParams.deeplab()
    for c in (2, 21):
        image, probs = synthetic(rng, 321, 321, c)
        t = compare({"direct": lambda: direct_pydensecrf(image, probs, p), "wrapper": lambda: dense_crf(image, probs, p)},
                    repeat=max(reps, 9))  # cheap; more repeats because the difference is small
        rows.append(Row(f"321px {c} labels: direct pydensecrf", t["direct"]["median"], "s/img"))
        rows.append(Row(f"321px {c} labels: crf.dense_crf", t["wrapper"]["median"], "s/img"))
        rows.append(Row(f"321px {c} labels: wrapper / direct", t["wrapper"]["median"] / t["direct"]["median"], "ratio",
                        "<= 1.05", note=f"ratio of the minima {t['wrapper']['min'] / t['direct']['min']:.3f}"))


def workers_speedup(rows, args, reps):
    from wsss_lib.ops.crf import CRFParams, crf_batch
    from wsss_lib.core.parallel import num_threads_hint

    rng = np.random.default_rng(args.seed + 1)
    n = 12 if args.quick else 24
    items = [synthetic(rng, 321, 321, 2) for _ in range(n)]
    images = [i for i, _ in items]
    fg = [p[1] for _, p in items]
    k = num_threads_hint()
    p = CRFParams.deeplab()
    t = compare({"one": lambda: crf_batch(images, fg, p, workers=1), "pool": lambda: crf_batch(images, fg, p, workers=k)},
                repeat=max(2, reps // 2), warmup=0)
    rows.append(Row(f"crf_batch {n}x321px fg/bg, 1 process", n / t["one"]["median"], "img/s"))
    rows.append(Row(f"crf_batch {n}x321px fg/bg, {k} workers", n / t["pool"]["median"], "img/s"))
    rows.append(Row(f"workers speed-up ({k} cores)", t["one"]["median"] / t["pool"]["median"], "x", ">= 1.7",
                    note=f"ratio of the minima {t['one']['min'] / t['pool']['min']:.2f}"))


def photo(name: str, side: int | None = None) -> np.ndarray:
    """A scikit-image sample photograph (bundled, offline) as uint8 (H, W, 3), optionally resized
    to ``side x side``; a synthetic image when scikit-image is missing."""
    try:
        import skimage.data
    except ImportError:
        return synthetic(np.random.default_rng(len(name)), side or 321, side or 321, 2)[0]
    image = getattr(skimage.data, name)()[..., :3]
    if side is not None:
        from PIL import Image

        image = np.array(Image.fromarray(image).resize((side, side), Image.BILINEAR))
    return np.ascontiguousarray(image)


def coarse_unaries(image, n_labels, seed=0, gt_prob=0.7, flip=0.3, block=8):
    """pydensecrf-example-style probabilities: a coarse noisy labelling (colour clusters by a few
    k-means steps, one label per ``block`` px cell, a share ``flip`` of the cells relabelled at
    random), ``gt_prob`` for its label and the rest spread evenly. Returns float32 (C, H, W)."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    px = image.reshape(-1, 3).astype(np.float32)
    sample = px[rng.choice(len(px), min(len(px), 20000), replace=False)]
    centres = sample[rng.choice(len(sample), n_labels, replace=False)]
    for _ in range(5):
        lab = ((sample[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        for c in range(n_labels):
            if (lab == c).any():
                centres[c] = sample[lab == c].mean(0)
    cells = image[block // 2::block, block // 2::block].reshape(-1, 3).astype(np.float32)
    cl = ((cells[:, None] - centres[None]) ** 2).sum(-1).argmin(1).reshape(-(-(h - block // 2) // block), -1)
    cl = np.where(rng.random(cl.shape) < flip, rng.integers(0, n_labels, cl.shape), cl)
    coarse = np.kron(cl, np.ones((block, block), int))[:h, :w]
    coarse = np.pad(coarse, ((0, h - coarse.shape[0]), (0, w - coarse.shape[1])), mode="edge")
    probs = np.full((n_labels, h, w), (1 - gt_prob) / (n_labels - 1), np.float32)
    np.put_along_axis(probs, coarse[None], gt_prob, 0)
    return probs


class _threads:
    """Temporarily run torch on ``n`` threads (pydensecrf is single-threaded: same thread count)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


def _cpu_times(fns: dict, repeat: int) -> dict:
    """Median process CPU seconds of each function, interleaved (after one warm-up round)."""
    import statistics
    import time

    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.process_time()
            fn()
            times[k].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def torch_vs_pydensecrf(rows, args, reps):
    """Seconds per 321x321 photo, 10 iterations (DeepLab parameters), 2 and 21 labels, timed
    interleaved in one run: pydensecrf vs the torch lattice CRF on ``--device``. On CPU torch runs
    on 1 thread (pydensecrf's count; target <= 2x its time) and, as a note, on its default count.
    ``cold``: the cached position-only lattice is cleared before every call (every lattice built);
    ``warm``: reused, as in a loop over same-sized images."""
    from wsss_lib.ops import crf_torch
    from wsss_lib.ops.crf import CRFParams, dense_crf
    from wsss_lib.ops.crf_torch import dense_crf_torch

    dev = torch.device(args.device)
    p = CRFParams.deeplab()
    image = photo("astronaut", 321)
    ti = torch.from_numpy(image).permute(2, 0, 1).to(dev)
    for c in (2, 21):
        probs = coarse_unaries(image, c, seed=c)
        tp = torch.from_numpy(probs).to(dev)

        def cold():
            crf_torch._position_kernel.cache_clear()
            return dense_crf_torch(ti, tp, p)

        fns = {"pydensecrf": lambda: dense_crf(image, probs, p), "cold": cold, "warm": lambda: dense_crf_torch(ti, tp, p)}
        if dev.type == "cpu":
            with _threads(1):
                t = compare(fns, repeat=max(3, reps), device=dev)
            nt = torch.get_num_threads()
            t_def = timeit(lambda: (crf_torch._position_kernel.cache_clear(), dense_crf_torch(ti, tp, p, cpu_threads=nt)),
                           repeat=max(2, reps // 2))
            thr = f"1 thread (the default); at {nt} threads cold {t_def['median']:.3f} s"
        else:
            t = compare(fns, repeat=max(3, reps), device=dev)
            thr = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
        ref = t["pydensecrf"]["median"]
        rows.append(Row(f"321px {c} labels: pydensecrf", ref, "s/img", note="1 thread"))
        rows.append(Row(f"321px {c} labels: torch lattice, {dev.type}, cold", t["cold"]["median"], "s/img", note=thr))
        rows.append(Row(f"321px {c} labels: torch lattice, {dev.type}, warm", t["warm"]["median"], "s/img",
                        note="position lattice cached"))
        target = "<= 2" if dev.type == "cpu" else ""
        rows.append(Row(f"321px {c} labels: torch cold / pydensecrf time", t["cold"]["median"] / ref, "ratio", target,
                        note=f"warm {t['warm']['median'] / ref:.2f}; minima {t['cold']['min'] / t['pydensecrf']['min']:.2f}"))
        if dev.type == "cpu":  # CPU seconds: less sensitive than wall time to other jobs on the machine
            with _threads(1):
                ct = _cpu_times(fns, max(3, reps))
            rows.append(Row(f"321px {c} labels: torch cold / pydensecrf CPU time", ct["cold"] / ct["pydensecrf"], "ratio",
                            target, note=f"process CPU s, medians; warm {ct['warm'] / ct['pydensecrf']:.2f}"))
    if dev.type == "cuda":  # batched throughput, the GPU use case
        n = 16
        imgs = torch.stack([ti] * n)
        prs = torch.from_numpy(np.stack([coarse_unaries(image, 21, seed=s) for s in range(n)])).to(dev)
        t_gpu = timeit(lambda: dense_crf_torch(imgs, prs, p), repeat=reps, device=dev)
        t_ref = timeit(lambda: dense_crf(image, coarse_unaries(image, 21), p), repeat=2)
        rows.append(Row("321px 21 labels, batch 16: torch CUDA / pydensecrf throughput",
                        (n / t_gpu["median"]) / (1 / t_ref["median"]), "x", ">= 10", note=torch.cuda.get_device_name(dev)))


def _pooled_iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def _agree(rows, name, images_u8, fg_prob, params, pname, device):
    """Pixel agreement and IoU of the two CRFs' fg masks (> 0.5)."""
    from wsss_lib.ops.crf import crf_batch
    from wsss_lib.ops.crf_torch import crf_fgbg_torch

    ims = [np.ascontiguousarray(x) for x in images_u8.permute(0, 2, 3, 1).numpy()]
    ref = np.stack(crf_batch(ims, list(fg_prob.numpy()), params)) > 0.5
    out = crf_fgbg_torch(images_u8.to(device), fg_prob.to(device), params).cpu().numpy() > 0.5
    per = np.mean([_pooled_iou(r, o) for r, o in zip(ref, out)])
    raw = _pooled_iou(ref, fg_prob.numpy() > 0.5)
    rows.append(Row(f"agreement {name}, {pname} params: pixels", float((ref == out).mean()), "share", ">= 0.995",
                    note=f"{len(ims)} TEST imgs; {int((ref != out).sum())} px differ"))
    rows.append(Row(f"agreement {name}, {pname} params: fg IoU", _pooled_iou(ref, out), "IoU", ">= 0.99",
                    note=f"per-image mean {per:.4f}; raw vs CRF {raw:.2f}"))


def agreement_photos(rows, args):
    """Real photographs, unaries from a coarse noisy labelling (gt_prob 0.7), 2 and 21 labels
    (C-label post-processing), DeepLab parameters: share of pixels with the same label and the
    smallest per-label IoU (pooled over the photos; labels with >= 100 px)."""
    from wsss_lib.ops.crf import CRFParams, dense_crf
    from wsss_lib.ops.crf_torch import dense_crf_torch

    names = ["astronaut", "chelsea"] if args.quick else ["astronaut", "chelsea", "coffee", "rocket"]
    p = CRFParams.deeplab()
    for c in (2, 21):
        refs, outs, raws = [], [], []
        for k, name in enumerate(names):
            image = photo(name)
            if args.quick:
                image = np.ascontiguousarray(image[::2, ::2])
            probs = coarse_unaries(image, c, seed=k)
            raws.append(probs.argmax(0).ravel())
            refs.append(dense_crf(image, probs, p).argmax(0).ravel())
            ti = torch.from_numpy(image).permute(2, 0, 1).to(args.device)
            outs.append(dense_crf_torch(ti, torch.from_numpy(probs).to(args.device), p).argmax(0).cpu().numpy().ravel())
        ref, out = np.concatenate(refs), np.concatenate(outs)
        ious = [_pooled_iou(ref == j, out == j) for j in range(c) if (ref == j).sum() >= 100]
        rows.append(Row(f"agreement photos, {c} labels: pixels", float((ref == out).mean()), "share", ">= 0.995",
                        note=f"{len(names)} photos ({', '.join(names)}), {ref.size} px; the CRF relabels "
                             f"{(np.concatenate(raws) != ref).mean():.1%} of the unary argmax"))
        rows.append(Row(f"agreement photos, {c} labels: min per-label IoU", min(ious), "IoU", ">= 0.99",
                        note=f"mean {np.mean(ious):.4f} over {len(ious)} labels"))


def agreement(rows, args):
    from wsss_lib.ops.crf import CRFParams

    rng = np.random.default_rng(args.seed + 3)
    if args.quick:
        images, labels, _ = toy_batch(24, seed=args.seed)
    else:
        from wsss_lib.data.base import SegmentationDataset
        from wsss_lib.data.registry import load_dataset
        from wsss_lib.engine.train import preload

        info, samples = load_dataset("toy_objects", split="test")
        ds = preload(SegmentationDataset(info, samples))
        images, labels = ds.images, ds.labels.long()
    fg = ((labels > 0) & (labels != 255)).numpy().astype(np.float32)
    z = nd.gaussian_filter(rng.normal(0, 1, fg.shape), (0, 2, 2)) * 4
    pf = torch.from_numpy((1 / (1 + np.exp(-((2 * fg - 1) + z)))).astype(np.float32))
    _agree(rows, "ToyObjects GT+noise", images, pf, CRFParams(), "default", args.device)
    if not args.quick:
        fused = fused_maps(args, images)
        for pname, prm in (("default", CRFParams()), ("deeplab", CRFParams.deeplab())):
            _agree(rows, "ToyObjects fused masks", images, fused, prm, pname, args.device)


def _rss() -> int:
    """Resident set size of this process in bytes (Linux /proc)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_increase(fn) -> int:
    """Largest RSS increase while ``fn()`` runs, sampled every millisecond by a thread (torch
    releases the GIL in its ops; large buffers are mapped and unmapped, so RSS follows them)."""
    import threading
    import time

    base, peak, done = _rss(), [0], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    return max(peak[0], _rss()) - base


_MEM_CHILD = """
import sys
sys.path.insert(0, {bench!r})
import numpy as np, torch
from bench_crf import _peak_rss_increase
from wsss_lib.ops.crf import CRFParams
from wsss_lib.ops.crf_torch import dense_crf_torch
dense_crf_torch(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), torch.full((1, 2, 16, 16), 0.5))  # warm-up
from bench_crf import photo, coarse_unaries
image = photo("astronaut", {side})
im = torch.from_numpy(image).permute(2, 0, 1).contiguous()
pr = torch.from_numpy(coarse_unaries(image, 2))
print(_peak_rss_increase(lambda: dense_crf_torch(im, pr, CRFParams.deeplab())))
"""


def memory_scaling(rows, args):
    """Peak memory of one dense_crf_torch call (2 labels, DeepLab parameters, the astronaut photo
    resized) vs image side 128..1024 px: on CPU the largest RSS increase during the call (a fresh process per size), on CUDA
    ``max_memory_allocated``; exponent ``a`` of ``mem ~ N^a`` (N = pixels; 1 = linear)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from _common import REPO
    from bench_scaling import fit_exponent

    sides = [128, 256, 512] if args.quick else [128, 256, 512, 768, 1024]
    mem = []
    for side in sides:
        if args.device.startswith("cuda"):
            from wsss_lib.ops.crf import CRFParams
            from wsss_lib.ops.crf_torch import dense_crf_torch

            rng = np.random.default_rng(0)
            im = torch.from_numpy(rng.integers(0, 256, (1, 3, side, side), dtype=np.uint8)).to(args.device)
            pr = torch.softmax(torch.randn(1, 2, side, side, device=args.device), 1)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            dense_crf_torch(im, pr, CRFParams.deeplab())
            mem.append(torch.cuda.max_memory_allocated() - base)
        else:  # a fresh process per size; every buffer >= 64 KiB mapped, so RSS follows live memory
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(REPO))
            out = subprocess.run([sys.executable, "-c", _MEM_CHILD.format(bench=str(Path(__file__).parent), side=side)],
                                 capture_output=True, text=True, check=True, env=env)
            mem.append(int(out.stdout.strip().splitlines()[-1]))
    n = [s * s for s in sides]
    rows.append(Row("torch lattice CRF peak memory, " + " / ".join(f"{s}" for s in sides) + " px",
                    mem[-1] / 2**20, "MiB", note="MiB: " + " / ".join(f"{m / 2**20:.0f}" for m in mem)))
    rows.append(Row(f"memory exponent vs pixels ({args.device})", fit_exponent(n, [max(m, 1) for m in mem]), "a",
                    "<= 1.1", note="1 = linear in pixels"))


def fused_maps(args, test_images: torch.Tensor) -> torch.Tensor:
    """Calibrated fused conv4+conv5 maps of a small tag classifier trained here (threshold from VAL)."""
    from wsss_lib.data.base import SegmentationDataset
    from wsss_lib.data.registry import load_dataset
    from wsss_lib.ops.masks import calibrate, choose_threshold, extract_masks
    from wsss_lib.models import TagClassifier, build_backbone
    from wsss_lib.engine.train import preload, train_classifier

    info, tr = load_dataset("toy_objects", split="train")
    _, va = load_dataset("toy_objects", split="val")
    train, val = preload(SegmentationDataset(info, tr)), preload(SegmentationDataset(info, va))
    torch.manual_seed(args.seed)
    clf = TagClassifier(build_backbone("small_vgg"), len(info.foreground))
    train_classifier(clf, train, classes=info.foreground, steps=300, batch_size=32, lr=0.05, device="cpu",
                     seed=args.seed, progress=False)
    v = extract_masks(clf, val.images.float() / 255, val.tags[:, info.foreground])["fused"]
    th, _ = choose_threshold(v, val.labels.long())
    t = extract_masks(clf, test_images.float() / 255)["fused"]
    return calibrate(t, th).float().clamp(0, 1)


def _configure(p):
    p.add_argument("--device", default="auto", help="device of the torch CRF: auto (CUDA when present), cpu, cuda")
    p.add_argument("--only", nargs="+", default=None, metavar="PART",
                   choices=["wrapper", "workers", "speed", "photos", "toy", "memory"],
                   help="run only these parts (default: all)")


def main(argv=None) -> int:
    args = start(__doc__, argv, configure=_configure)  # seeds torch and numpy
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    reps = repeats(args)
    rows: list[Row] = []
    parts = [("wrapper", "wrapper overhead", lambda: wrapper_overhead(rows, args, reps)),
             ("workers", "worker processes", lambda: workers_speedup(rows, args, reps)),
             ("speed", "torch lattice CRF speed", lambda: torch_vs_pydensecrf(rows, args, reps)),
             ("photos", "agreement on photographs", lambda: agreement_photos(rows, args)),
             ("toy", "agreement on ToyObjects", lambda: agreement(rows, args)),
             ("memory", "torch lattice CRF memory", lambda: memory_scaling(rows, args))]
    for key, name, fn in parts:
        if args.only is None or key in args.only:
            guarded(name, rows, fn)
    sync()
    return finish("Dense CRF (pydensecrf wrapper, workers, torch CRF)", rows, args)


if __name__ == "__main__":
    raise SystemExit(main())
