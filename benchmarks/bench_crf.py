"""Benchmark 2: dense CRF — wrapper overhead, worker processes, torch CRF vs pydensecrf (speed, agreement).

1. ``crf.dense_crf`` (validation + unary + pydensecrf) vs the same pydensecrf calls made directly,
   identical parameters, 321x321, 2 and 21 labels. Target: ratio <= 1.05.
2. Dataset-level ``crf.crf_batch`` with worker processes (all cores) vs one process. Target: >= 1.7x
   on 2 cores.
3. ``crf_torch.dense_crf_torch`` (batched) vs pydensecrf: images/s on CPU, and on CUDA when present
   (target there: >= 10x pydensecrf's single-process throughput).
4. Agreement of the two CRFs' fg/bg masks on the ToyObjects TEST split (pooled IoU; target >= 0.95):
   GT-derived noisy probabilities, and (full run) the calibrated fused-activation maps of a tag
   classifier trained here.
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


def torch_vs_pydensecrf(rows, args, reps):
    from wsss_lib.ops.crf import CRFParams, crf_batch, dense_crf
    from wsss_lib.ops.crf_torch import bilateral_stride, dense_crf_torch

    p = CRFParams()
    n = 8 if args.quick else 16
    images, labels, _ = toy_batch(n, seed=args.seed)
    rng = np.random.default_rng(args.seed + 2)
    fg = ((labels > 0) & (labels != 255)).numpy().astype(np.float32)
    z = nd.gaussian_filter(rng.normal(0, 1, fg.shape), (0, 2, 2)) * 4
    pf = (1 / (1 + np.exp(-((2 * fg - 1) + z)))).astype(np.float32)
    probs = torch.from_numpy(np.stack([1 - pf, pf], 1))
    ims_np = [np.ascontiguousarray(x) for x in images.permute(0, 2, 3, 1).numpy()]
    cases = [("96px fg/bg", images, probs, ims_np, n)]
    if not args.quick:
        big_img, big_pr = zip(*[synthetic(rng, 321, 321, 21) for _ in range(2)])
        cases.append(("321px 21 labels", torch.from_numpy(np.stack(big_img)).permute(0, 3, 1, 2),
                      torch.from_numpy(np.stack(big_pr)), list(big_img), 2))
    for name, ti, tp, ims, m in cases:
        pr_np = list(tp.numpy())
        t_ref = timeit(lambda: [dense_crf(i, q, p) for i, q in zip(ims, pr_np)], repeat=max(2, reps // 2))
        t_cpu = timeit(lambda: dense_crf_torch(ti, tp, p), repeat=max(2, reps // 2))
        s = bilateral_stride(*ti.shape[-2:])
        rows.append(Row(f"{name}: pydensecrf, 1 process", m / t_ref["median"], "img/s", note=f"batch {m}"))
        rows.append(Row(f"{name}: torch CRF, CPU", m / t_cpu["median"], "img/s", note=f"bilateral stride {s}"))
        rows.append(Row(f"{name}: torch CPU / pydensecrf", t_ref["median"] / t_cpu["median"], "x",
                        note="pydensecrf stays the CPU default"))
        if torch.cuda.is_available():
            ci, cp = ti.cuda(), tp.cuda()
            t_gpu = timeit(lambda: dense_crf_torch(ci, cp, p), repeat=reps, device="cuda")
            rows.append(Row(f"{name}: torch CRF, CUDA", m / t_gpu["median"], "img/s", note=torch.cuda.get_device_name(0)))
            rows.append(Row(f"{name}: torch CUDA / pydensecrf", t_ref["median"] / t_gpu["median"], "x", ">= 10"))
        else:
            rows.append(Row(f"{name}: torch CUDA / pydensecrf", None, "x", ">= 10", status="n/a",
                            note="no GPU here: not measured"))


def _pooled_iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def _agree(rows, name, images_u8, fg_prob, params, pname):
    """Pooled and per-image mean IoU of the two CRFs' masks (> 0.5)."""
    from wsss_lib.ops.crf import crf_batch
    from wsss_lib.ops.crf_torch import crf_fgbg_torch

    ims = [np.ascontiguousarray(x) for x in images_u8.permute(0, 2, 3, 1).numpy()]
    ref = np.stack(crf_batch(ims, list(fg_prob.numpy()), params)) > 0.5
    out = crf_fgbg_torch(images_u8, fg_prob, params).numpy() > 0.5
    per = np.mean([_pooled_iou(r, o) for r, o in zip(ref, out)])
    raw = _pooled_iou(ref, fg_prob.numpy() > 0.5)
    rows.append(Row(f"agreement {name}, {pname} params: pooled IoU", _pooled_iou(ref, out), "IoU", ">= 0.95",
                    note=f"{len(ims)} TEST imgs; per-image mean {per:.3f}; raw vs CRF {raw:.2f}"))


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
    _agree(rows, "GT+noise", images, pf, CRFParams(), "default")
    if not args.quick:
        fused = fused_maps(args, images)
        for pname, prm in (("default", CRFParams()), ("deeplab", CRFParams.deeplab())):
            _agree(rows, "fused masks", images, fused, prm, pname)


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


def main(argv=None) -> int:
    args = start(__doc__, argv)  # seeds torch and numpy
    reps = repeats(args)
    rows: list[Row] = []
    guarded("wrapper overhead", rows, lambda: wrapper_overhead(rows, args, reps))
    guarded("worker processes", rows, lambda: workers_speedup(rows, args, reps))
    guarded("torch CRF speed", rows, lambda: torch_vs_pydensecrf(rows, args, reps))
    guarded("torch CRF agreement", rows, lambda: agreement(rows, args))
    sync()
    return finish("Dense CRF (pydensecrf wrapper, workers, torch CRF)", rows, args)


if __name__ == "__main__":
    raise SystemExit(main())
