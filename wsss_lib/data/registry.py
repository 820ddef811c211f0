"""One entry point for every dataset: ``load_dataset(name, root, split) -> (DatasetInfo, [Sample])``.

Names and default roots (relative to :func:`default_data_root`)::

    toy_objects      toy/objects        generated on first use (ensure_toy_objects)
    toy_objects_textured  toy/objects_textured  the same, background blobs in the objects' textures
    toy_streets      toy/streets        generated on first use (ensure_toy_streets)
    voc              voc                holding VOCdevkit/VOC2012           splits train, val, trainval, test
    voc_aug          voc                + benchmark_RELEASE (SBD)           split train -> train_aug; val/test as voc
    cityscapes       cityscapes         leftImg8bit/ + gtFine/               train, val, test
    camvid           camvid             train/ trainannot/ ... (SegNet)      train, val, test, trainval
    youtube_objects  youtube_objects    <class>/frames, <class>/gt           train/all, test/val/labelled

``root`` may be the dataset's own folder or the data root above it (then the default sub-folder
is used).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.config import PRESETS
from ..core.errors import InvalidInputError
from ..core.io import read_label
from .base import DatasetInfo, Sample, tags_from_label
from .camvid import load_camvid
from .cityscapes import load_cityscapes
from .toy_objects import ensure_toy_objects, load_toy_objects
from .toy_streets import ensure_toy_streets, load_toy_streets
from .voc import load_voc
from .youtube_objects import load_youtube_objects

DATASETS = ("toy_objects", "toy_objects_textured", "toy_streets", "voc", "voc_aug", "cityscapes", "camvid",
            "youtube_objects")
DEFAULT_SUBDIR = {"toy_objects": "toy/objects", "toy_objects_textured": "toy/objects_textured",
                  "toy_streets": "toy/streets", "voc": "voc", "voc_aug": "voc",
                  "cityscapes": "cityscapes", "camvid": "camvid", "youtube_objects": "youtube_objects"}
# a file/folder that marks a folder as the dataset's own root
_MARKERS = {"toy_objects": ("manifest.json",), "toy_objects_textured": ("manifest.json",),
            "toy_streets": ("manifest.json",),
            "voc": ("VOCdevkit", "VOC2012", "JPEGImages"), "voc_aug": ("VOCdevkit", "VOC2012", "JPEGImages"),
            "cityscapes": ("leftImg8bit",), "camvid": ("trainannot", "CamVid"),
            "youtube_objects": tuple(["aeroplane", "bird", "boat", "car", "cat", "cow", "dog", "horse", "motorbike",
                                      "train"])}


def default_data_root() -> Path:
    """``$WSSS_DATA_ROOT`` if set; else ``<repo>/data`` when wsss_lib sits in a checkout that has a
    ``data/`` folder; else ``~/.cache/wsss/data``."""
    env = os.environ.get("WSSS_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    repo_data = Path(__file__).resolve().parents[2] / "data"  # <checkout>/wsss_lib/data/registry.py
    if repo_data.is_dir():
        return repo_data
    return Path.home() / ".cache" / "wsss" / "data"


def resolve_root(name: str, root: str | os.PathLike | None) -> Path:
    """The dataset's own folder: ``root`` itself when it looks like the dataset (or, for toy data,
    is missing/empty), else ``root/<default sub-folder>``; ``None`` -> under :func:`default_data_root`."""
    if name not in DATASETS:
        raise InvalidInputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if root is None:
        return default_data_root() / DEFAULT_SUBDIR[name]
    root = Path(root).expanduser()
    sub = root / DEFAULT_SUBDIR[name]
    if any((root / m).exists() for m in _MARKERS[name]):
        return root
    if any((sub / m).exists() for m in _MARKERS[name]):
        return sub
    if root.resolve() == default_data_root().resolve():
        return sub  # the data root itself: the dataset lives (or is expected) in its sub-folder
    if name.startswith("toy_"):
        empty = not root.exists() or (root.is_dir() and not any(root.iterdir()))
        return root if empty else sub
    return root  # real data: let the loader explain what is missing there


def load_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train",
                 **kwargs) -> tuple[DatasetInfo, list[Sample]]:
    """Index ``split`` of dataset ``name`` (see module docstring) -> ``(info, samples)``.

    Toy datasets are generated when missing: with ``kwargs`` (generator parameters, e.g.
    ``n_train=200``) they are (re)generated to match; without, an existing generated folder is
    used as it is. Real-dataset ``kwargs`` go to the loader (``sbd_root``, ``cache_dir``...).
    Problems with the files raise :class:`~wsss_lib.core.errors.DatasetLayoutError`.
    """
    path = resolve_root(name, root)
    if name in ("toy_objects", "toy_objects_textured"):
        if kwargs or not (path / "manifest.json").is_file():
            ensure_toy_objects(path, **{**PRESETS[name]["default"], **kwargs})  # generator defaults: the preset
        return load_toy_objects(path, split)
    if name == "toy_streets":
        if kwargs or not (path / "manifest.json").is_file():
            ensure_toy_streets(path, **kwargs)
        return load_toy_streets(path, split)
    if name in ("voc", "voc_aug"):
        if name == "voc_aug" and split == "train":
            split = "train_aug"
        return load_voc(path, split, **kwargs)
    if name == "cityscapes":
        return load_cityscapes(path, split, **kwargs)
    if name == "camvid":
        return load_camvid(path, split, **kwargs)

    return load_youtube_objects(path, split, **kwargs)


def dataset_fingerprint(name: str, root: str | os.PathLike | None = None) -> str:
    """A short hash of a generated dataset's ``manifest.json`` (generator version + parameters), ""
    for datasets without one (real datasets do not change under a fixed root), except Cityscapes
    with a ``leftImg8bit_sequence`` folder: ``"seq"`` (its flow is computed towards the
    neighbouring frames, not zero). Caches derived from the frames (optical flow) and the video
    models' data ids carry it, so regenerated data or newly added sequences never read a stale cache."""
    if name == "cityscapes":
        return "seq" if (resolve_root(name, root) / "leftImg8bit_sequence").is_dir() else ""
    path = resolve_root(name, root) / "manifest.json"
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()[:8]
    except OSError:
        return ""


def load_label(info: DatasetInfo, sample: Sample) -> np.ndarray | None:
    """A sample's label map as class indices ``int64 (H, W)`` (``info.label_map`` applied), or None."""
    if sample.label is None:
        return None
    lab = read_label(sample.label)
    if info.label_map is not None:
        lab = np.asarray(info.label_map)[lab]
    return lab.astype(np.int64)


def fill_tags(info: DatasetInfo, samples: Sequence[Sample]) -> list[Sample]:
    """Fill ``Sample.tags`` (in place) from the label maps where it is ``None``; returns ``samples``.

    Reads every such label file once (VOC val: ~1,449 PNGs, a few seconds).
    """
    for s in samples:
        if s.tags is None and s.label is not None:
            s.tags = tags_from_label(load_label(info, s), info.num_classes, info.ignore_index)
    return list(samples)
