"""ToyStreets statistics: generation time, pixel shares, tag frequencies, stride-8 oracle IoU, object sizes.

Generates the dataset with ``ensure_toy_streets`` into a fresh temporary folder (timed, the
generator's own worker processes), then measures from the files on disk, per split:

* pixel share of every class and the share of frames whose tags hold it (background classes
  included: paper 2 tags every class, so a background tag needs frames without it);
* the IoU per class of a *perfect* stride-8 score map (``oracle_stride_iou``: the true class
  fractions per 8x8 cell, bilinearly upsampled, argmax), i.e. what the video models' 12x16 score
  maps could reach at best on 96x128 frames, without a CRF;

and, from the same clips rendered again in memory (``generate_clip`` also returns instance maps),
the visible size of the moving objects on train: median box width / height, median thickness
(diameter of the largest disc inside the visible mask).

Targets (ToyStreets v2, generator version 3): oracle IoU >= 0.5 for every class on val and test; no
background tag in more than 80 % of train frames; median person and bicycle width >= 16 px (two
score-map cells). A target row reads MISS, never fails (benchmark convention).

    python benchmarks/toy_streets_stats.py                  # the default dataset (preset sizes)
    python benchmarks/toy_streets_stats.py --quick          # 24 / 8 / 8 clips
    python benchmarks/toy_streets_stats.py --markdown       # + the tables of data/README.md

The v1 numbers of data/README.md came from this script run against the v1 generator
(``git show 37f82ba:wsss_lib/data/toy_streets.py``, which already has the oracle) with
``--n-train 60 --n-val 10 --n-test 10``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from _common import Row, finish, start


def _configure(p):
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--workers", type=int, default=2, help="generator worker processes (default 2)")
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--markdown", action="store_true", help="also print the tables as markdown (data/README.md)")


def measure(root: Path, splits: dict[str, int], stride: int) -> dict:
    from wsss_lib.core.io import read_label
    from wsss_lib.data.toy_streets import CLASSES, load_toy_streets, oracle_stride_iou

    out = {}
    c = len(CLASSES)
    for split, n in splits.items():
        if n == 0:
            continue
        _, samples = load_toy_streets(root, split)
        labels = np.stack([read_label(s.label) for s in samples]).astype(np.int64)
        pix = np.bincount(labels.reshape(-1), minlength=c)[:c] / labels.size
        present = np.stack([np.bincount(lab.reshape(-1), minlength=c)[:c] > 0 for lab in labels])
        tags = present.mean(0)
        assert all(sorted(s.tags) == list(np.nonzero(p)[0]) for s, p in zip(samples, present))  # tags.json agrees
        out[split] = {"clips": n, "frames": len(samples), "pixel_share": dict(zip(CLASSES, pix.round(4).tolist())),
                      "tag_freq": dict(zip(CLASSES, tags.round(4).tolist())),
                      "oracle_iou": dict(zip(CLASSES, np.round(oracle_stride_iou(labels, c, stride), 4).tolist())),
                      "fg_pixels": round(float(pix[5:].sum()), 4)}
    return out


def object_sizes(seed: int, split: str, n: int, params: dict) -> dict:
    from wsss_lib.data.toy_streets import MOVING, CLASSES, generate_clip, instance_sizes

    rows = [r for i in range(n) for r in instance_sizes(generate_clip(seed, split, i, frames=params["frames"],
                                                                      size=params["size"]))]
    out = {}
    for k in MOVING:
        rr = [r for r in rows if r["class"] == CLASSES[k]]
        uncut = [r for r in rr if not r["cut"]]
        out[CLASSES[k]] = {"n": len(rr), **{f"median_{q}": float(np.median([r[q] for r in rr])) if rr else None
                                            for q in ("w", "h", "thickness", "area")},
                           "median_w_uncut": float(np.median([r["w"] for r in uncut])) if uncut else None,
                           "median_h_uncut": float(np.median([r["h"] for r in uncut])) if uncut else None}
    return out


def markdown(stats: dict, sizes: dict, gen: dict) -> str:
    from wsss_lib.data.toy_streets import CLASSES

    def table(title, cols, rows):
        return ["", title, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + \
            ["| " + " | ".join(r) + " |" for r in rows]

    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    lines = table("Share of frames whose tags hold each class:", ["split", "frames", *CLASSES, "fg pixels"],
                  [[k, str(st["frames"]), *(pct(st["tag_freq"][c]) for c in CLASSES), pct(st["fg_pixels"])]
                   for k, st in stats.items()])
    lines += table("Pixel share per class:", ["split", *CLASSES],
                   [[k, *(pct(st["pixel_share"][c]) for c in CLASSES)] for k, st in stats.items()])
    lines += table("Oracle stride-8 IoU (true class fractions per 8x8 cell, bilinear upsampling, argmax):",
                   ["split", *CLASSES, "mIoU"],
                   [[k, *(f"{st['oracle_iou'][c]:.3f}" for c in CLASSES),
                     f"{np.nanmean([st['oracle_iou'][c] for c in CLASSES]):.3f}"] for k, st in stats.items()])
    lines += table("Visible moving objects on train (frame px, medians over objects x frames):",
                   ["class", "n", "width", "height", "thickness", "width / height, not cut by the border"],
                   [[c, str(s["n"]), f"{s['median_w']:.0f}", f"{s['median_h']:.0f}", f"{s['median_thickness']:.1f}",
                     f"{s['median_w_uncut']:.0f} / {s['median_h_uncut']:.0f}"] for c, s in sizes.items()])
    lines += ["", f"Generation: {gen['clips']} clips ({gen['frames']} frames) in {gen['seconds']:.1f} s "
                  f"({gen['workers']} workers). Scenes: {gen['kinds']}; cameras: {gen['cameras']}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = start(__doc__, argv, _configure)
    from wsss_lib.core.config import preset
    from wsss_lib.data.toy_streets import BACKGROUND, CLASSES, MOVING, ensure_toy_streets, read_clips_json

    p = preset("toy_streets")
    quick = {"n_train": 24, "n_val": 8, "n_test": 8} if args.quick else {}
    n = {k: getattr(args, k) if getattr(args, k) is not None else quick.get(k, p[k]) for k in ("n_train", "n_val", "n_test")}
    params = {"size": (p["height"], p["width"]), "frames": p["frames"]}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = ensure_toy_streets(Path(tmp) / "streets", seed=args.seed, workers=args.workers, **params, **n)
        dt = time.perf_counter() - t0
        clips = sum(n.values())
        rows.append(Row("generation, whole dataset", dt, "s", note=f"{clips} clips x {p['frames']} frames, "
                                                                  f"{args.workers} workers"))
        rows.append(Row("generation rate", clips * p["frames"] / dt, "frames/s"))
        meta = read_clips_json(root)
        gen = {"clips": clips, "frames": clips * p["frames"], "seconds": dt, "workers": args.workers,
               "kinds": dict(Counter(m["layout"].get("kind", "?") for m in meta.values())),
               "cameras": dict(Counter(m["layout"].get("camera", "?") for m in meta.values()))}
        stats = measure(root, {"train": n["n_train"], "val": n["n_val"], "test": n["n_test"]}, args.stride)
    sizes = object_sizes(args.seed, "train", n["n_train"], params)
    for split, st in stats.items():
        for c in CLASSES:
            target = ">= 0.5" if split in ("val", "test") else ""
            rows.append(Row(f"{split} oracle stride-{args.stride} IoU {c}", st["oracle_iou"][c], "", target))
    for c in CLASSES:
        k = CLASSES.index(c)
        rows.append(Row(f"train tag frequency {c}", stats["train"]["tag_freq"][c], "",
                        "<= 0.8" if k in BACKGROUND else "", note="share of frames tagged"))
    for c in CLASSES:
        rows.append(Row(f"train pixel share {c}", stats["train"]["pixel_share"][c]))
    for k in MOVING:
        c = CLASSES[k]
        s = sizes[c]
        rows.append(Row(f"train median width {c}", s["median_w"], "px", ">= 16" if c != "car" else "",
                        note=f"height {s['median_h']:.0f} px, thickness {s['median_thickness']:.1f} px, n={s['n']}"))
    if args.markdown:
        print(markdown(stats, sizes, gen))
    return finish("ToyStreets statistics", rows, args, extra={"splits": stats, "object_sizes": sizes, "generation": gen})


if __name__ == "__main__":
    raise SystemExit(main())
