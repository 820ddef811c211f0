"""YouTube-Objects index builder (10 classes + background, video-level tags, sparse ground truth).

ASSUMED layout (YouTube-Objects is distributed in several forms -- original ``.tar`` per class
with shots and frames, plus the separately released pixel GT of Jain & Grauman 2014 -- so
reorganise it into this, one folder per class)::

    <root>/<class>/frames/<video>/<frame>.jpg     every decoded frame of a video/shot (.jpg or .png)
    <root>/<class>/gt/<video>/<frame>.png         sparse GT: only SOME frames; same <frame> stem as
                                                  the frame it annotates; BINARY mask:
                                                  0 = background, any non-zero = the class object
    (optional) <root>/ImageSets/<split>.txt       lines "<class>/<video>" restricting a split

``<class>`` is one of aeroplane, bird, boat, car, cat, cow, dog, horse, motorbike, train
(case-insensitive); other top-level folders are ignored. ``<frame>`` stems are sorted by the
number they contain (``00042.jpg``, ``frame0042.jpg``).

The binary masks are converted ONCE to class-index palette PNGs (0 = background, k = class) under
``cache_dir`` (default ``<root>/_wsss_cache/labels/<class>/<video>/<frame>.png``), because the class
of a mask depends on its folder. Frames without GT get ``Sample.label = None`` (all-ignore at load).

Splits: ``train``/``all`` = every frame of every video (the usual transductive weakly-supervised
setting; tags only), ``test``/``val``/``labelled`` = only frames that have GT. With
``ImageSets/<split>.txt`` only the listed videos are used. Tags are video-level:
``[background, class]``. ``Sample.clip`` = ``<class>/<video>``, ``Sample.frame`` = frame number.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..core.errors import CorruptFileError, DatasetLayoutError, dataset_layout_error
from ..core.io import read_image, read_label, voc_palette, write_label
from .base import DatasetInfo, Sample, read_list_file, safe_join

YTO_CLASSES = ["background", "aeroplane", "bird", "boat", "car", "cat", "cow", "dog", "horse", "motorbike", "train"]
YTO_URL = ("https://data.vision.ee.ethz.ch/cvl/youtube-objects/ (videos, v2.2); pixel ground truth: "
           "Jain & Grauman, ECCV 2014 (http://vision.cs.utexas.edu/projects/videoseg/)")
YTO_TREE = """<root>/<class>/frames/<video>/<frame>.jpg
<root>/<class>/gt/<video>/<frame>.png      (sparse, binary: 0 = background, >0 = object)
<root>/ImageSets/<split>.txt               (optional, lines "<class>/<video>")
<class> in: aeroplane bird boat car cat cow dog horse motorbike train"""
_DIGITS = re.compile(r"(\d+)")
_IMG_EXT = (".jpg", ".jpeg", ".png")
_LABELLED_SPLITS = ("test", "val", "labelled")


def youtube_objects_info() -> DatasetInfo:
    """11 classes (background + 10), VOC palette; all foreground classes can move."""
    return DatasetInfo(name="youtube_objects", classes=list(YTO_CLASSES), background=[0], palette=voc_palette(),
                       moving=list(range(1, 11)))


def _frame_number(stem: str) -> int:
    m = _DIGITS.findall(stem)
    return int(m[-1]) if m else -1


def convert_gt(src: Path, dst: Path, class_index: int) -> Path:
    """Binary GT mask -> class-index palette PNG ``dst`` (0 / ``class_index``); skipped when up to date."""
    if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    try:
        m = read_label(src)
    except CorruptFileError as exc:
        if "mode" not in str(exc):
            raise
        m = read_image(src).max(axis=2)  # RGB-saved masks: any non-black channel
    lab = np.where(m > 0, class_index, 0).astype(np.uint8)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.stem + f".tmp{os.getpid()}.png")
    write_label(tmp, lab)
    os.replace(tmp, dst)
    return dst


def load_youtube_objects(root: str | os.PathLike, split: str = "train", *,
                         cache_dir: str | os.PathLike | None = None) -> tuple[DatasetInfo, list[Sample]]:
    """Index YouTube-Objects (see module docstring): ``(info, samples)`` sorted by clip then frame."""
    root = Path(root).expanduser()
    info = youtube_objects_info()
    if not root.is_dir():
        raise dataset_layout_error("youtube_objects", root, "the folder does not exist", YTO_TREE, YTO_URL)
    class_dirs = {}
    for d in sorted(root.iterdir()):
        if d.is_dir() and d.name.lower() in YTO_CLASSES[1:]:
            class_dirs[d.name.lower()] = d
    if not class_dirs or not any((d / "frames").is_dir() for d in class_dirs.values()):
        raise dataset_layout_error("youtube_objects", root, "no <class>/frames/ folders found", YTO_TREE, YTO_URL)
    videos: list[tuple[str, str]] | None = None
    list_path = root / "ImageSets" / f"{split}.txt"
    if list_path.is_file():
        videos = []
        for ln in read_list_file(list_path):
            parts = ln.split("/", 1)
            if len(parts) != 2 or parts[0].lower() not in class_dirs:
                raise dataset_layout_error("youtube_objects", root,
                                           f"{list_path} line {ln!r} is not '<class>/<video>' with a known class",
                                           YTO_TREE, YTO_URL)
            safe_join(class_dirs[parts[0].lower()] / "frames", parts[1])  # refuse ../ escapes
            videos.append((parts[0].lower(), parts[1]))
    elif split not in ("train", "all") + _LABELLED_SPLITS:
        raise dataset_layout_error("youtube_objects", root,
                                   f"unknown split {split!r} (no ImageSets/{split}.txt; built-in: train, all, test, "
                                   f"val, labelled)", YTO_TREE, YTO_URL)
    if videos is None:
        videos = [(c, v.name) for c, d in class_dirs.items() if (d / "frames").is_dir()
                  for v in sorted((d / "frames").iterdir()) if v.is_dir()]
    labelled_only = split in _LABELLED_SPLITS
    cache = Path(cache_dir).expanduser() if cache_dir is not None else root / "_wsss_cache" / "labels"
    samples = []
    for cls, video in videos:
        k = YTO_CLASSES.index(cls)
        fdir = safe_join(class_dirs[cls] / "frames", video)
        gdir = class_dirs[cls] / "gt" / video
        if not fdir.is_dir():
            raise dataset_layout_error("youtube_objects", root, f"missing frame folder {fdir}", YTO_TREE, YTO_URL)
        gts = {p.stem: p for p in gdir.iterdir() if p.suffix.lower() in _IMG_EXT} if gdir.is_dir() else {}
        for f in sorted((p for p in fdir.iterdir() if p.suffix.lower() in _IMG_EXT),
                        key=lambda p: (_frame_number(p.stem), p.stem)):
            gt = gts.get(f.stem)
            if labelled_only and gt is None:
                continue
            lab = None
            if gt is not None:
                try:
                    lab = convert_gt(gt, cache / cls / video / f"{f.stem}.png", k)
                except OSError as exc:
                    raise DatasetLayoutError(f"youtube_objects: cannot write converted labels to {cache} ({exc}); "
                                             "pass cache_dir= a writable folder") from exc
            samples.append(Sample(id=f"{cls}/{video}/{f.stem}", image=f, label=lab, tags=[0, k], clip=f"{cls}/{video}",
                                  frame=_frame_number(f.stem)))
    if not samples:
        raise dataset_layout_error("youtube_objects", root,
                                   f"split {split!r} has no frames" + (" with GT" if labelled_only else ""),
                                   YTO_TREE, YTO_URL)
    samples.sort(key=lambda s: (s.clip, s.frame, s.id))
    return info, samples
