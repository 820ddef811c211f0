"""PASCAL VOC 2012 (+ SBD ``train_aug``) index builder, and the shared VOC-layout reader.

Expected layout (``root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself, or
``VOC2012`` itself)::

    <root>/VOCdevkit/VOC2012/
        JPEGImages/<id>.jpg
        SegmentationClass/<id>.png          palette PNG, values 0..20, 255 = boundary/ignore
        ImageSets/Segmentation/{train,val,trainval}.txt   (test.txt with the test tarball)

SBD (for ``train_aug``), found under ``sbd_root`` or next to the VOC folder::

    <root>/benchmark_RELEASE/dataset/
        cls/<id>.mat      struct GTcls with field Segmentation (uint8 H x W, values 0..20)
        train.txt, val.txt

``train_aug`` = (SBD train + SBD val + VOC train) - VOC val = 10,582 ids on the real data. Its label
maps are VOC's own ``SegmentationClass`` PNG where one exists (official, with the 255 band), else
the SBD ``.mat`` converted once to a palette PNG in ``<VOC2012>/SegmentationClassAug_fromSBD/``
(or ``cache_dir``). Images always come from ``VOC2012/JPEGImages`` (SBD's ``img/`` as fallback).

:func:`voc_layout_index` (one list file of ids -> samples) is shared with :mod:`.toy_objects`,
which writes the same layout. Tags of real VOC samples are ``None``: they are derived from the
label map when loaded (see :class:`~wsss_lib.data.base.SegmentationDataset`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.errors import CorruptFileError, DatasetLayoutError, InvalidInputError, dataset_layout_error
from ..core.io import voc_palette, write_label
from ..core.parallel import run_pool
from .base import DatasetInfo, Sample, read_list_file, safe_join

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar)"
SBD_URL = "http://home.bharathh.info/pubs/codes/SBD/download.html (benchmark.tgz)"

VOC_TREE = """<root>/VOCdevkit/VOC2012/
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png
    ImageSets/Segmentation/{train,val,trainval}.txt"""
SBD_TREE = """<sbd_root>/benchmark_RELEASE/dataset/
    cls/<id>.mat        (struct GTcls, field Segmentation)
    train.txt, val.txt"""


def voc_info() -> DatasetInfo:
    """PASCAL VOC 2012: 21 classes, background = 0."""
    return DatasetInfo(name="voc", classes=list(VOC_CLASSES), background=[0], palette=voc_palette())


def voc_layout_index(root: str | os.PathLike, split: str, info: DatasetInfo, *, dataset: str, tree: str,
                     url: str | None = None, tags: dict[str, list[int]] | None = None,
                     image_dir: str = "JPEGImages", label_dir: str | None = "SegmentationClass",
                     list_dir: str = "ImageSets/Segmentation", image_ext: str = ".jpg", label_ext: str = ".png",
                     labels: str = "required", ids: Sequence[str] | None = None) -> list[Sample]:
    """Samples for one split of a VOC-layout folder (``root/list_dir/<split>.txt`` of ids).

    Parameters
    ----------
    root: the folder holding ``JPEGImages`` etc.
    tags: optional ``{id: [class index]}`` (e.g. from ``tags.json``); ``None`` -> ``Sample.tags``
        is ``None`` (derived from the label map at load).
    labels: ``"required"`` (a missing label file is a layout error), ``"optional"`` (missing ->
        ``Sample.label = None``) or ``"none"``.
    ids: use these ids instead of reading the list file.

    Every id goes through :func:`safe_join` (``../`` entries raise ``UnsafePathError``); missing
    folders or files raise ONE :class:`DatasetLayoutError` naming the expected tree.
    """
    if labels not in ("required", "optional", "none"):
        raise InvalidInputError(f"labels must be 'required', 'optional' or 'none', got {labels!r}")
    root = Path(root)
    if not root.is_dir():
        raise dataset_layout_error(dataset, root, "the dataset folder does not exist", tree, url)
    img_root = root / image_dir
    if not img_root.is_dir():
        raise dataset_layout_error(dataset, root, f"missing folder {image_dir}/", tree, url)
    if ids is None:
        list_path = root / list_dir / f"{split}.txt"
        if not list_path.is_file():
            have = sorted(p.stem for p in (root / list_dir).glob("*.txt")) if (root / list_dir).is_dir() else []
            raise dataset_layout_error(dataset, root, f"no split list {list_dir}/{split}.txt (splits found: {have})",
                                       tree, url)
        ids = read_list_file(list_path)
    lab_root = root / label_dir if (label_dir and labels != "none") else None
    if labels == "required" and (lab_root is None or not lab_root.is_dir()):
        raise dataset_layout_error(dataset, root, f"missing folder {label_dir}/", tree, url)
    samples, missing = [], []
    for sid in ids:
        sid = sid.split()[0]
        img = safe_join(img_root, sid + image_ext)
        if not img.is_file():
            missing.append(str(img))
            continue
        lab = None
        if lab_root is not None:
            cand = safe_join(lab_root, sid + label_ext)
            if cand.is_file():
                lab = cand
            elif labels == "required":
                missing.append(str(cand))
                continue
        samples.append(Sample(id=sid, image=img, label=lab, tags=None if tags is None else tags.get(sid)))
    if missing:
        raise dataset_layout_error(
            dataset, root, f"{len(missing)} file(s) listed in split {split!r} are missing, e.g. {missing[:3]}", tree, url)
    if tags is not None:
        no_tags = [s.id for s in samples if s.tags is None]
        if no_tags:
            raise CorruptFileError(f"{dataset}: tags missing for {len(no_tags)} sample(s), e.g. {no_tags[:3]}")
    return samples


def find_voc2012(root: str | os.PathLike) -> Path:
    """Resolve ``root`` (holding ``VOCdevkit``, or ``VOCdevkit``, or ``VOC2012``) to the ``VOC2012`` folder."""
    root = Path(root).expanduser()
    for cand in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (cand / "JPEGImages").is_dir():
            return cand
    problem = "the folder does not exist" if not root.exists() else "no VOC2012/JPEGImages found under it"
    raise dataset_layout_error("voc", root, problem, VOC_TREE, VOC_URL)


def find_sbd(voc2012: Path, sbd_root: str | os.PathLike | None = None) -> Path:
    """Locate SBD's ``benchmark_RELEASE/dataset`` folder (has ``cls/`` and ``train.txt``)."""
    bases = [Path(sbd_root).expanduser()] if sbd_root is not None else [
        voc2012.parent.parent, voc2012.parent, voc2012, voc2012.parent.parent / "SBD", voc2012.parent.parent.parent]
    for b in bases:
        for cand in (b, b / "dataset", b / "benchmark_RELEASE" / "dataset", b / "SBD" / "benchmark_RELEASE" / "dataset"):
            if (cand / "cls").is_dir() and (cand / "train.txt").is_file():
                return cand
    raise dataset_layout_error("voc_aug (SBD)", sbd_root or bases[0], "SBD's benchmark_RELEASE/dataset not found",
                               SBD_TREE, SBD_URL)


def read_sbd_mat(path: str | os.PathLike) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` -> ``uint8 (H, W)`` class indices 0..20."""
    import scipy.io  # lazy: scipy is heavy and needed by this function only

    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
        seg = np.asarray(mat["GTcls"].Segmentation)
    except Exception as exc:  # scipy raises many types for corrupt files
        raise CorruptFileError(f"cannot read SBD label {path} (expected struct GTcls with field Segmentation): {exc}") from exc
    if seg.ndim != 2 or seg.size == 0:
        raise CorruptFileError(f"SBD label {path}: GTcls.Segmentation has shape {seg.shape}, expected (H, W)")
    if seg.max() > 20 and not np.all((seg <= 20) | (seg == 255)):
        raise CorruptFileError(f"SBD label {path}: values up to {int(seg.max())}, expected 0..20")
    return seg.astype(np.uint8)


def _convert_one(args: tuple[str, str]) -> None:
    src, dst = args
    lab = read_sbd_mat(src)
    tmp = dst + f".tmp{os.getpid()}.png"
    write_label(tmp, lab)
    os.replace(tmp, dst)


def build_sbd_labels(sbd_dir: Path, ids: Sequence[str], cache_dir: Path, workers: int = 1) -> dict[str, Path]:
    """Convert SBD ``cls/<id>.mat`` files to palette PNGs in ``cache_dir`` (only those not yet there)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetLayoutError(f"cannot create the SBD label cache {cache_dir} ({exc}); pass cache_dir=") from exc
    out, todo = {}, []
    for sid in ids:
        dst = safe_join(cache_dir, sid + ".png")
        out[sid] = dst
        if not dst.is_file():
            src = safe_join(sbd_dir / "cls", sid + ".mat")
            if not src.is_file():
                raise dataset_layout_error("voc_aug (SBD)", sbd_dir, f"missing {src}", SBD_TREE, SBD_URL)
            todo.append((str(src), str(dst)))
    if todo:
        run_pool(_convert_one, todo, workers, min_tasks=16, start_method="fork", in_process_without_fork=True)
    return out


def train_aug_ids(voc2012: Path, sbd_dir: Path) -> list[str]:
    """(SBD train + SBD val + VOC train) - VOC val, sorted."""
    seg = voc2012 / "ImageSets" / "Segmentation"
    for f in ("train.txt", "val.txt"):
        if not (seg / f).is_file():
            raise dataset_layout_error("voc_aug", voc2012, f"missing ImageSets/Segmentation/{f}", VOC_TREE, VOC_URL)
    sbd = set(read_list_file(sbd_dir / "train.txt"))
    if (sbd_dir / "val.txt").is_file():
        sbd |= set(read_list_file(sbd_dir / "val.txt"))
    voc_train = set(read_list_file(seg / "train.txt"))
    voc_val = set(read_list_file(seg / "val.txt"))
    return sorted((sbd | voc_train) - voc_val)


def load_voc(root: str | os.PathLike, split: str = "train", *, sbd_root: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None, workers: int = 1) -> tuple[DatasetInfo, list[Sample]]:
    """PASCAL VOC 2012 index: ``split`` in ``train``, ``val``, ``trainval``, ``test`` (labels optional) or
    ``train_aug`` (SBD-augmented, see module docstring; converts SBD labels on first use).

    Returns ``(info, samples)``; ``Sample.tags`` is ``None`` (derived from labels at load).
    """
    voc = find_voc2012(root)
    info = voc_info()
    if split != "train_aug":
        return info, voc_layout_index(voc, split, info, dataset="voc", tree=VOC_TREE, url=VOC_URL,
                                      labels="optional" if split == "test" else "required")
    sbd = find_sbd(voc, sbd_root)
    ids = train_aug_ids(voc, sbd)
    own = voc / "SegmentationClass"
    need_sbd = [i for i in ids if not safe_join(own, i + ".png").is_file()]
    cache = Path(cache_dir).expanduser() if cache_dir is not None else voc / "SegmentationClassAug_fromSBD"
    converted = build_sbd_labels(sbd, need_sbd, cache, workers=workers)
    samples, missing = [], []
    for sid in ids:
        img = safe_join(voc / "JPEGImages", sid + ".jpg")
        if not img.is_file():
            alt = safe_join(sbd / "img", sid + ".jpg")
            if not alt.is_file():
                missing.append(str(img))
                continue
            img = alt
        lab = converted.get(sid) or safe_join(own, sid + ".png")
        samples.append(Sample(id=sid, image=img, label=lab))
    if missing:
        raise dataset_layout_error("voc_aug", voc, f"{len(missing)} train_aug image(s) missing, e.g. {missing[:3]}",
                                   VOC_TREE, VOC_URL)
    return info, samples
