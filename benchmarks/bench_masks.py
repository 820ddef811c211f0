"""Benchmark 1: fg/bg mask extraction vs a plain forward pass of the same network on the same batch.

``masks.extract_masks`` captures conv4/conv5 activations *in the same forward pass*, then fuses
them (channel mean, sum, upsample, min-max) and computes the CAM baseline. Its overhead over a
plain ``classifier(x)`` forward is the cost of the prior. Target: ratio <= 1.15.
"""

from __future__ import annotations

import torch

from _common import Row, amp_context, compare, finish, guarded, repeats, start, toy_batch

TARGET = "<= 1.15"


def _case(rows, name, backbone, kw, images, tags, reps):
    from wsss_lib.ops.masks import extract_masks
    from wsss_lib.models import TagClassifier, build_backbone

    clf = TagClassifier(build_backbone(backbone, **kw), tags.shape[1]).eval()
    x = images.float() / 255.0

    def plain():  # the same precision context extract_masks uses
        with torch.no_grad(), amp_context("cpu"):
            clf(x)

    def masks():
        extract_masks(clf, x, tags, batch_size=x.shape[0], device="cpu")

    t = compare({"plain": plain, "masks": masks}, repeat=reps)
    b = x.shape[0]
    rows.append(Row(f"{name}: plain forward", t["plain"]["median"], "s/batch", note=f"batch {b}"))
    rows.append(Row(f"{name}: extract_masks", t["masks"]["median"], "s/batch", note="fused + CAM, one pass"))
    rows.append(Row(f"{name}: masks / forward", t["masks"]["median"] / t["plain"]["median"], "ratio", TARGET,
                    note=f"ratio of the minima {t['masks']['min'] / t['plain']['min']:.3f}"))


def main(argv=None) -> int:
    args = start(__doc__, argv)  # seeds torch and numpy
    reps = repeats(args)
    rows: list[Row] = []
    n = 16 if args.quick else 32
    images, _, tags = toy_batch(n, seed=args.seed)
    guarded("small_vgg 96px", rows, lambda: _case(rows, "small_vgg 96px", "small_vgg", {}, images, tags, reps))
    if not args.quick:
        big = torch.nn.functional.interpolate(images[:4].float(), size=(321, 321), mode="bilinear").round().byte()
        guarded("small_vgg 321px", rows,
                lambda: _case(rows, "small_vgg 321px", "small_vgg", {}, big, tags[:4], reps))
        guarded("vgg16 321px", rows,
                lambda: _case(rows, "vgg16 321px", "vgg16", {"pretrained": None}, big[:2], tags[:2], max(3, reps // 2)))
    return finish("Mask extraction vs plain forward (CPU)", rows, args)


if __name__ == "__main__":
    raise SystemExit(main())
