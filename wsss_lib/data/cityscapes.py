"""Cityscapes (fine annotations) index builder: 19 train ids, 11 background + 8 foreground classes.

Expected layout (the official ``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``)::

    <root>/leftImg8bit/{train,val,test}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    <root>/gtFine/{train,val,test}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png
    (optional, for optical flow) <root>/leftImg8bit_sequence/{split}/{city}/..._leftImg8bit.png

With ``leftImg8bit_sequence`` present, each sample's ``neighbor`` is the next frame of its
30-frame snippet (``frame + 1``), else the previous one (``neighbor_offset`` -1), else None.

Label files hold the 34 Cityscapes *label ids*; the mapping to the 19 *train ids* (everything else
-> 255) is the 256-entry look-up table :data:`LABEL_ID_TO_TRAIN_ID`, set as
``DatasetInfo.label_map`` and applied by :class:`~wsss_lib.data.base.SegmentationDataset` at load
(no files are rewritten).

Background/foreground split (OUR choice, following paper 2's idea that stuff *and static objects*
are background classes): background = road, sidewalk, building, wall, fence, pole, traffic light,
traffic sign, vegetation, terrain, sky; foreground = person, rider, car, truck, bus, train,
motorcycle, bicycle (also ``DatasetInfo.moving``).

``Sample.clip`` = ``{city}_{seq}``, ``Sample.frame`` = the frame number; test-split label files are
placeholders in the official release, so ``split="test"`` samples have ``label=None``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .base import DatasetInfo, Sample
from ..core.errors import dataset_layout_error

CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle"]
CITYSCAPES_URL = "https://www.cityscapes-dataset.com/downloads/ (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip)"
CITYSCAPES_TREE = """<root>/
    leftImg8bit/{train,val,test}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{train,val,test}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png"""

# label id -> train id (Cordts et al. 2016, cityscapesScripts labels.py); all other ids -> 255
_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
              27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
LABEL_ID_TO_TRAIN_ID = np.full(256, 255, np.uint8)
for _k, _v in _TRAIN_IDS.items():
    LABEL_ID_TO_TRAIN_ID[_k] = _v

_PALETTE = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
            (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
            (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)]
_NAME_RE = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)_leftImg8bit$")


def cityscapes_info() -> DatasetInfo:
    """19 train-id classes; background = indices 0..10, foreground/moving = 11..18; label_map = labelId LUT."""
    pal = np.zeros((256, 3), np.uint8)
    pal[:19] = _PALETTE
    pal[255] = (224, 224, 192)
    return DatasetInfo(name="cityscapes", classes=list(CITYSCAPES_CLASSES), background=list(range(11)), palette=pal,
                       moving=list(range(11, 19)), label_map=LABEL_ID_TO_TRAIN_ID.copy())


def load_cityscapes(root: str | os.PathLike, split: str = "train",
                    sequence: bool = True) -> tuple[DatasetInfo, list[Sample]]:
    """Index ``split`` (train/val/test) of a Cityscapes root: ``(info, samples)`` sorted by city/seq/frame.

    ``sequence``: fill each sample's ``neighbor`` (the adjacent frame for optical flow) from
    ``leftImg8bit_sequence`` when that folder exists (:func:`cityscapes_neighbor_frame`).

    Raises one :class:`~wsss_lib.core.errors.DatasetLayoutError` (expected tree + download URL) when the
    folders are missing or a listed image has no ``gtFine`` label (train/val).
    """
    root = Path(root).expanduser()
    img_root = root / "leftImg8bit" / split
    gt_root = root / "gtFine" / split
    if not img_root.is_dir():
        problem = "the folder does not exist" if not root.exists() else f"missing folder leftImg8bit/{split}/"
        raise dataset_layout_error("cityscapes", root, problem, CITYSCAPES_TREE, CITYSCAPES_URL)
    want_labels = split != "test"
    if want_labels and not gt_root.is_dir():
        raise dataset_layout_error("cityscapes", root, f"missing folder gtFine/{split}/", CITYSCAPES_TREE, CITYSCAPES_URL)
    samples, missing = [], []
    for img in sorted(img_root.glob("*/*_leftImg8bit.png")):
        m = _NAME_RE.match(img.stem)
        if m is None:
            continue
        city = img.parent.name
        base = img.stem[: -len("_leftImg8bit")]
        lab = None
        if want_labels:
            lab = gt_root / city / f"{base}_gtFine_labelIds.png"
            if not lab.is_file():
                missing.append(str(lab))
                continue
        samples.append(Sample(id=f"{city}/{base}", image=img, label=lab, clip=f"{m['city']}_{m['seq']}",
                              frame=int(m["frame"])))
    if missing:
        raise dataset_layout_error("cityscapes", root, f"{len(missing)} label file(s) missing, e.g. {missing[:3]}",
                                   CITYSCAPES_TREE, CITYSCAPES_URL)
    if not samples:
        raise dataset_layout_error("cityscapes", root, f"no *_leftImg8bit.png images under leftImg8bit/{split}/",
                                   CITYSCAPES_TREE, CITYSCAPES_URL)
    samples.sort(key=lambda s: (s.clip, s.frame))
    if sequence and (root / "leftImg8bit_sequence" / split).is_dir():
        for s in samples:
            for off in (1, -1):
                nb = cityscapes_neighbor_frame(root, s, off)
                if nb is not None:
                    s.neighbor, s.neighbor_offset = nb, off
                    break
    return cityscapes_info(), samples


def cityscapes_neighbor_frame(root: str | os.PathLike, sample: Sample, offset: int = -1) -> Path | None:
    """Path of the frame ``offset`` away in ``leftImg8bit_sequence`` (for optical flow), or None if absent."""
    root = Path(root).expanduser()
    split = Path(sample.image).parent.parent.name
    city = Path(sample.image).parent.name
    m = _NAME_RE.match(Path(sample.image).stem)
    if m is None:
        return None
    name = f"{m['city']}_{m['seq']}_{int(m['frame']) + offset:06d}_leftImg8bit.png"
    p = root / "leftImg8bit_sequence" / split / city / name
    return p if p.is_file() else None
