"""Benchmark 6: scaling of mask extraction + dense CRF with image size and with dataset size.

* Image size: ToyObjects images resized to 128..1024 px (side), fused-activation masks from a
  SmallVGG tag classifier (``masks.extract_masks``) + the fg/bg dense CRF (``crf.crf_fgbg``,
  pydensecrf, DeepLab parameters), seconds per image. Fitted exponent ``a`` of ``t ~ N^a`` with
  N = pixels (log-log least squares); ~1 = linear in pixels.
* Dataset size: 96 px images, 16..128 of them (``extract_masks`` + ``crf_batch`` with worker
  processes), total seconds; exponent vs the number of images (~1 = linear).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from _common import Row, finish, guarded, start, timeit, toy_batch


def fit_exponent(x, y) -> float:
    """Slope of the least-squares line through ``(log x, log y)``."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def _classifier():
    from wsss_lib.models import TagClassifier, build_backbone

    return TagClassifier(build_backbone("small_vgg"), 6).eval()


def by_image_size(rows, args):
    from wsss_lib.ops.crf import CRFParams, crf_fgbg
    from wsss_lib.ops.masks import extract_masks

    sizes = [128, 256, 512] if args.quick else [128, 256, 512, 768, 1024]
    images, _, tags = toy_batch(2, seed=args.seed)
    clf = _classifier()
    p = CRFParams.deeplab()
    t_mask, t_crf = [], []
    for s in sizes:
        x = F.interpolate(images.float() / 255, size=(s, s), mode="bilinear", align_corners=False).clamp(0, 1)
        u8 = [np.ascontiguousarray((im.permute(1, 2, 0) * 255 + 0.5).byte().numpy()) for im in x]
        reps = 2 if (args.quick or s >= 768) else 3
        fused = extract_masks(clf, x, tags, batch_size=1)["fused"].numpy()
        tm = timeit(lambda: extract_masks(clf, x, tags, batch_size=1), repeat=reps)["median"] / len(u8)
        tc = timeit(lambda: [crf_fgbg(i, f, p) for i, f in zip(u8, fused)], repeat=reps)["median"] / len(u8)
        t_mask.append(tm)
        t_crf.append(tc)
        rows.append(Row(f"{s}x{s}: masks / CRF / total", tm + tc, "s/img", note=f"masks {tm:.3f} s, CRF {tc:.3f} s"))
    n = [s * s for s in sizes]
    total = [a + b for a, b in zip(t_mask, t_crf)]
    rows.append(Row("exponent vs pixels: mask extraction", fit_exponent(n, t_mask), "a", note="t ~ N^a"))
    rows.append(Row("exponent vs pixels: dense CRF", fit_exponent(n, t_crf), "a"))
    rows.append(Row("exponent vs pixels: masks + CRF", fit_exponent(n, total), "a",
                    note=f"{sizes[0]}..{sizes[-1]} px side"))


def by_dataset_size(rows, args):
    from wsss_lib.ops.crf import crf_batch
    from wsss_lib.ops.masks import extract_masks

    counts = [8, 16, 32] if args.quick else [16, 32, 64, 128]
    images, _, tags = toy_batch(max(counts), seed=args.seed)
    clf = _classifier()
    totals = []
    for n in counts:
        x = images[:n].float() / 255
        u8 = [np.ascontiguousarray(im) for im in images[:n].permute(0, 2, 3, 1).numpy()]

        def run():
            fused = extract_masks(clf, x, tags[:n], batch_size=32)["fused"].numpy()
            crf_batch(u8, list(fused))

        t = timeit(run, repeat=2)["median"]
        totals.append(t)
        rows.append(Row(f"{n} images (96 px): masks + CRF", t, "s", note=f"{n / t:.1f} img/s"))
    rows.append(Row("exponent vs dataset size", fit_exponent(counts, totals), "a", note="t ~ n^a"))


def main(argv=None) -> int:
    args = start(__doc__, argv)  # seeds torch and numpy
    rows: list[Row] = []
    guarded("image size", rows, lambda: by_image_size(rows, args))
    guarded("dataset size", rows, lambda: by_dataset_size(rows, args))
    return finish("Scaling: mask extraction + dense CRF (CPU)", rows, args)


if __name__ == "__main__":
    raise SystemExit(main())
