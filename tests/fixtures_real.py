"""Tiny fixture trees in the OFFICIAL layouts of the real datasets (built by tests in tmp_path).

Each builder returns the root and a dict of what it wrote, so tests can check the loaders
against known ground truth without any download.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_lib.core.io import write_image, write_label


def _img(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def build_voc(root: Path) -> dict:
    """``root/VOCdevkit/VOC2012`` with 3 segmentation images (train: a, b; val: c) plus two images
    (d, e) that only SBD annotates; ``root/benchmark_RELEASE/dataset`` with cls/*.mat for a, c, d, e.

    SBD train = [d, a], SBD val = [e, c] -> train_aug = {a, b, d, e} (c is VOC val).
    """
    import scipy.io

    voc = root / "VOCdevkit" / "VOC2012"
    ids = {"a": "2007_000032", "b": "2007_000033", "c": "2007_000039", "d": "2008_000002", "e": "2008_000003"}
    h, w = 20, 24
    labels = {}
    for k, (key, sid) in enumerate(ids.items()):
        write_image(voc / "JPEGImages" / f"{sid}.jpg", _img(h, w, k))
        lab = np.zeros((h, w), np.uint8)
        lab[2:10, 3:12] = 1 + k           # aeroplane, bicycle, bird, boat, bottle
        lab[12:18, 14:22] = 15            # person
        labels[sid] = lab
    voc_gt = {}
    for key in ("a", "b", "c"):
        sid = ids[key]
        lab = labels[sid].copy()
        lab[9, 3:12] = 255                # VOC boundary band
        write_label(voc / "SegmentationClass" / f"{sid}.png", lab)
        voc_gt[sid] = lab
    seg = voc / "ImageSets" / "Segmentation"
    seg.mkdir(parents=True)
    (seg / "train.txt").write_text(f"{ids['a']}\n{ids['b']}\n")
    (seg / "val.txt").write_text(f"{ids['c']}\n")
    (seg / "trainval.txt").write_text(f"{ids['a']}\n{ids['b']}\n{ids['c']}\n")
    sbd = root / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    sbd_gt = {}
    for key in ("a", "c", "d", "e"):
        sid = ids[key]
        lab = labels[sid].copy()
        if key == "d":
            lab[0:2, :] = 7               # car, only in SBD's version
        scipy.io.savemat(str(sbd / "cls" / f"{sid}.mat"), {"GTcls": {
            "Segmentation": lab, "Boundaries": np.empty((1, 0), dtype=object),
            "CategoriesPresent": np.unique(lab[lab > 0]).astype(np.uint8)}})
        sbd_gt[sid] = lab
    (sbd / "train.txt").write_text(f"{ids['d']}\n{ids['a']}\n")
    (sbd / "val.txt").write_text(f"{ids['e']}\n{ids['c']}\n")
    return {"ids": ids, "voc_gt": voc_gt, "sbd_gt": sbd_gt, "voc2012": voc}


def build_cityscapes(root: Path) -> dict:
    """2 images with label ids: train/aachen (road 7, car 26, sky 23, unlabeled 0, license plate -1 -> 255
    is not storable, so ego vehicle 1), val/frankfurt (sidewalk 8, person 24, bicycle 33)."""
    h, w = 16, 32
    out = {}
    specs = {
        ("train", "aachen", "aachen_000000_000019"): {7: (slice(8, 16), slice(0, 32)), 23: (slice(0, 4), slice(0, 32)),
                                                      26: (slice(9, 13), slice(4, 12)), 1: (slice(14, 16), slice(20, 32))},
        ("val", "frankfurt", "frankfurt_000001_000042"): {8: (slice(8, 16), slice(0, 32)), 24: (slice(2, 8), slice(3, 6)),
                                                          33: (slice(4, 8), slice(10, 16))},
    }
    for k, ((split, city, base), regions) in enumerate(specs.items()):
        write_image(root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png", _img(h, w, k))
        lab = np.zeros((h, w), np.uint8)
        for lid, (ys, xs) in regions.items():
            lab[ys, xs] = lid
        p = root / "gtFine" / split / city / f"{base}_gtFine_labelIds.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(lab, mode="L").save(p)
        out[base] = lab
    return out


def build_camvid(root: Path) -> dict:
    """SegNet-style CamVid: train = 2 frames of clip 0001TP, val = 1 frame of Seq05VD, test = 1 of 0016E5."""
    h, w = 12, 16
    names = {"train": ["0001TP_006690", "0001TP_006720"], "val": ["Seq05VD_f00000"], "test": ["0016E5_00390"]}
    out = {}
    k = 0
    for split, stems in names.items():
        for stem in stems:
            write_image(root / split / f"{stem}.png", _img(h, w, k))
            lab = np.full((h, w), 3, np.uint8)        # road
            lab[:3] = 0                                # sky
            lab[5:8, 2:6] = 8                          # car
            lab[0, 0] = 11                             # void
            p = root / f"{split}annot" / f"{stem}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(lab, mode="L").save(p)
            out[stem] = lab
            k += 1
    # the original lists hold the authors' absolute paths: must be ignored
    (root / "train.txt").write_text("/SegNet/CamVid/train/0001TP_006690.png /SegNet/CamVid/trainannot/0001TP_006690.png\n")
    return out


def build_youtube_objects(root: Path) -> dict:
    """car/0001 (3 frames, GT on frame 00002 as 0/255 mask) and cat/0007 (2 frames, GT on 00001)."""
    h, w = 10, 14
    gts = {}
    for cls, video, frames, gt_frames in (("car", "0001", 3, ["00002"]), ("cat", "0007", 2, ["00001"])):
        for f in range(1, frames + 1):
            write_image(root / cls / "frames" / video / f"{f:05d}.jpg", _img(h, w, f))
        for g in gt_frames:
            m = np.zeros((h, w), np.uint8)
            m[2:6, 3:9] = 255
            p = root / cls / "gt" / video / f"{g}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(m, mode="L").save(p)
            gts[f"{cls}/{video}/{g}"] = m
    (root / "README.txt").write_text("not a class folder\n")
    return gts


# VOC classes drawn by build_voc_sized (index -> RGB of the object): aeroplane, bird, car, person
_SIZED_COLOURS = {1: (200, 40, 40), 3: (40, 200, 40), 7: (40, 40, 220), 15: (220, 200, 40)}


def _sized_sample(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A VOC-like picture: a noisy grey background and 1-2 solid objects (ellipses/boxes) of known
    classes, with the label map (255 band of 3 px around each object, like VOC's boundaries)."""
    from scipy import ndimage  # lazy: test helper only

    img = np.clip(rng.normal(110, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    lab = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(int(rng.integers(1, 3))):
        cls = int(rng.choice(list(_SIZED_COLOURS)))
        ch, cw = int(rng.integers(h // 5, h // 2)), int(rng.integers(w // 5, w // 2))
        cy, cx = int(rng.integers(ch // 2, h - ch // 2)), int(rng.integers(cw // 2, w - cw // 2))
        if rng.random() < 0.5:
            obj = ((yy - cy) / (ch / 2)) ** 2 + ((xx - cx) / (cw / 2)) ** 2 <= 1
        else:
            obj = (abs(yy - cy) <= ch // 2) & (abs(xx - cx) <= cw // 2)
        band = ndimage.binary_dilation(obj, iterations=3) & ~ndimage.binary_erosion(obj, iterations=3)
        img[obj] = np.clip(np.asarray(_SIZED_COLOURS[cls]) + rng.normal(0, 12, (int(obj.sum()), 3)), 0, 255)
        lab[obj] = cls
        lab[band] = 255
    return img, lab


def build_voc_sized(root: Path, n_voc_train: int = 8, n_sbd_only: int = 12, n_val: int = 8,
                    sizes: tuple[int, int] = (200, 500), seed: int = 0) -> dict:
    """VOC 2012 + SBD in the official layout with VOC-like variable sizes (each side in ``sizes``):
    ``n_voc_train`` VOC train ids (PNG labels; also in SBD train), ``n_sbd_only`` ids only SBD
    annotates (``cls/*.mat``, no VOC PNG), ``n_val`` VOC val ids (PNG; also in SBD val, so
    train_aug must drop them). ``train_aug`` = VOC train + SBD-only ids."""
    import scipy.io  # lazy: test helper only

    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True, exist_ok=True)
    groups = {"train": [f"2007_{i:06d}" for i in range(n_voc_train)],
              "sbd": [f"2008_{i:06d}" for i in range(n_sbd_only)],
              "val": [f"2009_{i:06d}" for i in range(n_val)]}
    shapes = {}
    for group, ids in groups.items():
        for sid in ids:
            h, w = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
            img, lab = _sized_sample(rng, h, w)
            write_image(voc / "JPEGImages" / f"{sid}.jpg", img)
            shapes[sid] = (h, w)
            if group in ("train", "val"):
                write_label(voc / "SegmentationClass" / f"{sid}.png", lab)
            if group in ("sbd", "val", "train"):
                seg = np.where(lab == 255, 0, lab).astype(np.uint8)  # SBD has no 255 band
                scipy.io.savemat(str(sbd / "cls" / f"{sid}.mat"), {"GTcls": {
                    "Segmentation": seg, "Boundaries": np.empty((1, 0), dtype=object),
                    "CategoriesPresent": np.unique(seg[seg > 0]).astype(np.uint8)}})
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in groups["train"]))
    (lists / "val.txt").write_text("".join(f"{i}\n" for i in groups["val"]))
    (lists / "trainval.txt").write_text("".join(f"{i}\n" for i in groups["train"] + groups["val"]))
    (sbd / "train.txt").write_text("".join(f"{i}\n" for i in groups["sbd"] + groups["train"]))
    (sbd / "val.txt").write_text("".join(f"{i}\n" for i in groups["val"]))
    return {"ids": groups, "shapes": shapes, "voc2012": voc}


# Cityscapes label ids drawn by build_cityscapes_sized, with a colour each
_CS_COLOURS = {7: (128, 64, 128), 8: (244, 35, 232), 11: (70, 70, 70), 21: (107, 142, 35), 23: (70, 130, 180),
               24: (220, 20, 60), 26: (0, 0, 142)}


def _street_frame(rng: np.random.Generator, h: int, w: int, shift: int, layout: dict) -> tuple[np.ndarray, np.ndarray]:
    """A street-like frame and its label ids: sky, buildings with a tree, sidewalk, road, a car and a
    person that move ``shift`` px to the right (the static scene does not move), ego-vehicle id 1 at
    the bottom (-> 255)."""
    lab = np.full((h, w), 11, np.uint8)                                  # building
    lab[: int(h * layout["sky"])] = 23                                    # sky
    tx = int(w * layout["tree_x"])
    lab[int(h * 0.15): int(h * 0.6), tx: tx + w // 8] = 21               # vegetation
    lab[int(h * 0.55): int(h * 0.62)] = 8                                 # sidewalk
    lab[int(h * 0.62):] = 7                                               # road
    cx = int(w * layout["car_x"]) + shift
    lab[int(h * 0.6): int(h * 0.8), cx: cx + w // 5] = 26                 # car
    px = int(w * layout["person_x"]) + shift
    yy, xx = np.mgrid[:h, :w]
    lab[((yy - h * 0.55) / (h * 0.15)) ** 2 + ((xx - px) / (w * 0.02 + 2)) ** 2 <= 1] = 24  # person
    lab[int(h * 0.95):] = 1                                               # ego vehicle
    img = np.zeros((h, w, 3), np.float32)
    for lid, col in _CS_COLOURS.items():
        img[lab == lid] = col
    img[lab == 1] = (20, 20, 20)
    tex = layout["texture"]
    moving = (lab == 24) | (lab == 26)
    img += np.where(moving[..., None], np.roll(tex, shift, axis=1), tex)  # the objects' texture moves with them
    return np.clip(img, 0, 255).astype(np.uint8), lab


def build_cityscapes_sized(root: Path, n_train: int = 24, n_val: int = 8, heights: tuple[int, int] = (200, 250),
                           seed: int = 0, sequence: bool = True) -> dict:
    """Cityscapes in the official layout with variable sizes (H in ``heights``, W = 2H, i.e. 400-500 px):
    ``n_train`` / ``n_val`` labelled frames (``{city}_{seq:06d}_000019``, one per 30-frame snippet,
    cities aachen/bochum for train and frankfurt for val) with ``gtFine`` label ids, and (``sequence``)
    ``leftImg8bit_sequence`` with frames 18, 19 and 20 of each snippet, in which the car and the person
    move 6 px to the right per frame and the rest stays still (a fixed texture, no noise: small PNGs)."""
    rng = np.random.default_rng(seed)
    out = {"train": [], "val": [], "shapes": {}}
    for split, n, cities in (("train", n_train, ("aachen", "bochum")), ("val", n_val, ("frankfurt",))):
        for k in range(n):
            city = cities[k % len(cities)]
            base = f"{city}_{k:06d}"
            h = int(rng.integers(heights[0], heights[1] + 1))
            w = 2 * h
            layout = {"sky": float(rng.uniform(0.15, 0.3)), "tree_x": float(rng.uniform(0.05, 0.8)),
                      "car_x": float(rng.uniform(0.05, 0.6)), "person_x": float(rng.uniform(0.7, 0.9)),
                      "texture": 8 * np.round(rng.normal(0, 2, (h, w, 1))).astype(np.float32)}
            frames = {f: _street_frame(rng, h, w, 6 * (f - 19), layout) for f in (18, 19, 20)}
            img, lab = frames[19]
            first = root / "leftImg8bit" / split / city / f"{base}_000019_leftImg8bit.png"
            write_image(first, img)
            p = root / "gtFine" / split / city / f"{base}_000019_gtFine_labelIds.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(lab, mode="L").save(p)
            if sequence:
                seq = root / "leftImg8bit_sequence" / split / city
                seq.mkdir(parents=True, exist_ok=True)
                for f, (im, _) in frames.items():
                    if f == 19:
                        shutil.copyfile(first, seq / first.name)
                    else:
                        write_image(seq / f"{base}_{f:06d}_leftImg8bit.png", im)
            out[split].append(f"{city}/{base}_000019")
            out["shapes"][f"{city}/{base}_000019"] = (h, w)
    return out
