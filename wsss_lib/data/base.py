"""The one dataset contract every loader (toy and real) fills.

A dataset is a :class:`DatasetInfo` (class names, which are background, ignore value, palette)
plus a list of :class:`Sample` index entries (paths + tags). :class:`SegmentationDataset` turns
those into tensors; real-dataset modules (``voc``, ``cityscapes``, ``camvid``,
``youtube_objects``) and the toy generators only build the index, so one loader path serves all.

Sample dict returned by :class:`SegmentationDataset` (``__getitem__``)::

    image  float32 (3, H, W) RGB in [0, 1]   (models normalise internally; CRFs want raw pixels)
    label  int64   (H, W) class indices, 255 = ignore; all 255 when the sample has no GT
    tags   float32 (C,) multi-hot over ``info.classes`` (C = len(classes), background ones included)
    index  int, id str, clip str ('' for still images), frame int (-1 for still images)
    <name> int64   (H, W) one per extra map folder (``maps={name: folder}``, e.g. ``fg_mask``)
    <name> float32 scalar, one per per-sample value (``values={name: (N,)}``, e.g. ``accepted``)

Real datasets are *streamed*: their images differ in size, so training crops them
(:class:`~wsss_lib.data.transforms.JointTransform`, image and maps together) and evaluation reads
one full-size image at a time. An index may be ``(i, seed)``: the augmentation of sample ``i``
then draws from ``numpy.random.default_rng(seed)`` (reproducible in any DataLoader worker).

Paper 1 (one background class) uses ``tags[:, info.foreground]``; paper 2 uses all of ``tags``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..core.errors import CorruptFileError, InvalidInputError, UnsafePathError
from ..core.io import IGNORE_INDEX, read_image, read_label, to_uint8_image  # noqa: F401 (to_uint8_image: re-exported)



@dataclass
class DatasetInfo:
    """Static description of a dataset's label space.

    ``classes``: names, index = label value. ``background``: indices of background classes
    (``[0]`` for VOC-like data; road/sky/building... for street scenes).
    """

    name: str
    classes: list[str]
    background: list[int]
    ignore_index: int = IGNORE_INDEX
    palette: np.ndarray | None = None
    moving: list[int] = field(default_factory=list)  # foreground classes that move on their own (video)
    # Optional look-up table applied to stored label values at load: ``uint8/int (256,)``, stored value
    # v -> class index ``label_map[v]`` (255 = ignore). Used where files hold another id space
    # (Cityscapes labelIds -> trainIds, CamVid void 11 -> 255). None: values are class indices already.
    label_map: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def foreground(self) -> list[int]:
        return [i for i in range(len(self.classes)) if i not in set(self.background)]

    def to_json(self) -> dict:
        out = {"name": self.name, "classes": self.classes, "background": self.background,
               "ignore_index": self.ignore_index, "moving": self.moving}
        if self.label_map is not None:
            out["label_map"] = [int(v) for v in np.asarray(self.label_map).reshape(-1)]
        return out


@dataclass
class Sample:
    """One index entry. ``tags`` are class indices present (None: derive from the label map).

    ``neighbor``: a frame of the same video that is not itself a sample (Cityscapes
    ``leftImg8bit_sequence``), ``neighbor_offset`` frames away (+1 = the next frame, -1 = the
    previous one); optical flow is computed towards it (:func:`~wsss_lib.engine.shard.compute_dataset_flow`).
    """

    id: str
    image: Path
    label: Path | None = None
    tags: list[int] | None = None
    clip: str = ""
    frame: int = -1
    neighbor: Path | None = None
    neighbor_offset: int = 0


def safe_join(root: str | os.PathLike, rel: str) -> Path:
    """Join a list-file entry to ``root``, refusing absolute paths and ``..`` escapes."""
    root = Path(root).resolve()
    rel = str(rel).strip()
    if not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise UnsafePathError(f"list entry {rel!r} must be a relative path inside {root}")
    p = (root / rel).resolve()
    if p != root and root not in p.parents:
        raise UnsafePathError(f"list entry {rel!r} escapes the dataset root {root}")
    return p


def read_list_file(path: str | os.PathLike) -> list[str]:
    """Non-empty, stripped lines of a split/list file."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        return [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]


def read_tags_json(path: str | os.PathLike, classes: Sequence[str]) -> dict[str, list[int]]:
    """``tags.json``: ``{sample_id: [class_name, ...]}`` -> ``{sample_id: [class_index, ...]}``."""
    path = Path(path)
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"cannot read tags file {path}: {exc}") from exc
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for sid, names in raw.items():
        bad = [n for n in names if n not in index]
        if bad:
            raise CorruptFileError(f"tags file {path}: sample {sid!r} has unknown classes {bad}; known: {list(classes)}")
        out[sid] = sorted(index[n] for n in names)
    return out


def tags_from_label(label: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> list[int]:
    """Class indices present in a label map (ignore value left out)."""
    vals = np.unique(label)
    return [int(v) for v in vals if v != ignore_index and 0 <= v < num_classes]


class SegmentationDataset(torch.utils.data.Dataset):
    """Images + label maps + tags, as tensors (see module docstring for the sample dict).

    Parameters
    ----------
    info, samples: the dataset description and index.
    size: ``None`` keeps the stored size; ``(H, W)`` resizes (bilinear image, nearest label).
    transform: optional callable ``(image uint8 HxWx3, label HxW) -> (image, label)`` (numpy),
        applied before resizing (augmentation).
    on_error: ``"raise"`` (default) stops on a corrupt file with a message naming it;
        ``"skip"`` returns the next readable sample instead and records the file in
        ``self.skipped`` (reported, never silent).
    maps: ``{name: folder}``: extra per-sample label-like maps ``<folder>/<id>.png`` (e.g. paper 1's
        CRF fg/bg masks), returned as ``sample[name]`` int64 ``(H, W)`` and transformed with the
        image (a :class:`~wsss_lib.data.transforms.JointTransform` pads them with 255).
    values: ``{name: (N,) numbers}``: one value per sample (e.g. check-mask's ``accepted``), returned
        as ``sample[name]`` float32 scalar (a batch of them: ``(B,)``); see :meth:`with_extra`.
    """

    def __init__(self, info: DatasetInfo, samples: Sequence[Sample], size: tuple[int, int] | None = None,
                 transform: Callable | None = None, on_error: str = "raise",
                 maps: dict[str, str | os.PathLike] | None = None,
                 values: dict[str, Sequence[float]] | None = None):
        if on_error not in ("raise", "skip"):
            raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if len(samples) == 0:
            raise InvalidInputError(f"dataset {info.name!r} has no samples")
        self.info = info
        self.samples = list(samples)
        self.size = tuple(size) if size is not None else None
        self.transform = transform
        self.on_error = on_error
        self.maps = {k: Path(v) for k, v in (maps or {}).items()}
        if self.maps and transform is not None and not getattr(transform, "joint", False):
            raise InvalidInputError("extra maps need a joint transform (data.transforms.JointTransform)")
        self.values = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(-1) for k, v in (values or {}).items()}
        for k, v in self.values.items():
            if v.shape[0] != len(self.samples):
                raise InvalidInputError(f"values {k!r} has {v.shape[0]} entries, expected one per sample "
                                        f"({len(self.samples)})")
        self.skipped: list[str] = []

    def subset(self, indices: Sequence[int]) -> "SegmentationDataset":
        """The same dataset restricted to ``indices`` (in that order)."""
        idx = [int(i) for i in indices]
        return SegmentationDataset(self.info, [self.samples[i] for i in idx], self.size, self.transform,
                                   self.on_error, self.maps, {k: v[idx] for k, v in self.values.items()})

    def with_extra(self, **values) -> "SegmentationDataset":
        """The same samples with more (or replaced) per-sample values ``name=(N,) numbers`` (the
        streamed counterpart of :meth:`wsss_lib.engine.train.InMemoryDataset.with_extra`)."""
        return SegmentationDataset(self.info, self.samples, self.size, self.transform, self.on_error, self.maps,
                                   {**self.values, **values})

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def load_map(self, name: str, index: int, shape: tuple[int, int]) -> np.ndarray:
        """Extra map ``name`` of sample ``index`` as int64 ``(H, W)`` (must match the image's ``shape``)."""
        path = safe_join(self.maps[name], self.samples[index].id + ".png")
        if not path.is_file():
            raise CorruptFileError(f"missing {name} map {path} (expected <folder>/<id>.png for every sample)")
        m = read_label(path)
        if m.shape != tuple(shape):
            raise CorruptFileError(f"{name} map {path} is {m.shape[1]}x{m.shape[0]} but its image is "
                                   f"{shape[1]}x{shape[0]}")
        return m.astype(np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def load_label(self, index: int, shape: tuple[int, int] | None = None) -> np.ndarray | None:
        """Label map int64 ``(H, W)`` of sample ``index`` (the dataset's ``label_map`` applied, values in
        ``[0, num_classes)`` or ``ignore_index``), checked against the image ``shape`` when given; ``None``
        for a sample without a label. Reads the label file only."""
        s = self.samples[index]
        if s.label is None:
            return None
        lab = read_label(s.label)
        if self.info.label_map is not None:
            lut = np.asarray(self.info.label_map)
            if lab.size and int(lab.max()) >= len(lut):
                raise CorruptFileError(
                    f"label {s.label} has value {int(lab.max())} beyond the {len(lut)}-entry label map of "
                    f"dataset {self.info.name!r}"
                )
            lab = lut[lab]
        if shape is not None and lab.shape != tuple(shape):
            raise CorruptFileError(
                f"label {s.label} is {lab.shape[1]}x{lab.shape[0]} but its image {s.image} is "
                f"{shape[1]}x{shape[0]}"
            )
        bad = (lab != self.info.ignore_index) & ((lab < 0) | (lab >= self.info.num_classes))
        if bad.any():
            vals = np.unique(lab[bad])[:8].tolist()
            raise CorruptFileError(
                f"label {s.label} has values {vals} outside [0, {self.info.num_classes}) that are not the "
                f"ignore value {self.info.ignore_index}"
            )
        return lab.astype(np.int64)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Raw ``(image uint8 (H, W, 3), label (H, W), tags)`` for one sample, validated."""
        s = self.samples[index]
        img = read_image(s.image)
        lab = self.load_label(index, img.shape[:2])
        if lab is None:
            lab = np.full(img.shape[:2], self.info.ignore_index, dtype=np.int64)
        tags = s.tags if s.tags is not None else tags_from_label(lab, self.info.num_classes, self.info.ignore_index)
        return img, lab, tags

    def __getitem__(self, index) -> dict:
        rng = None
        if isinstance(index, (tuple, list)):  # (i, augmentation seed)
            index, seed = int(index[0]), int(index[1])
            rng = np.random.default_rng(seed)
        tries = 0
        while True:
            try:
                img, lab, tags = self.load_arrays(index)
                extra = [self.load_map(k, index, img.shape[:2]) for k in self.maps]
                break
            except CorruptFileError as exc:
                if self.on_error == "raise" or tries >= len(self.samples):
                    raise
                self.skipped.append(str(exc))
                index = (index + 1) % len(self.samples)
                tries += 1
        if self.transform is not None:
            if getattr(self.transform, "joint", False):  # a JointTransform: image + every map, seeded
                img, lab, *extra = self.transform(img, lab, *extra, rng=rng)
            else:
                img, lab = self.transform(img, lab)
        image = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        label = torch.from_numpy(np.ascontiguousarray(lab)).long()
        extra = [torch.from_numpy(np.ascontiguousarray(m)).long() for m in extra]
        if self.size is not None and tuple(image.shape[1:]) != self.size:
            image = torch.nn.functional.interpolate(image[None], size=self.size, mode="bilinear",
                                                    align_corners=False)[0].clamp_(0, 1)
            label, *extra = [torch.nn.functional.interpolate(m[None, None].float(), size=self.size,
                                                             mode="nearest")[0, 0].long() for m in (label, *extra)]
        t = torch.zeros(self.info.num_classes, dtype=torch.float32)
        if tags:
            t[torch.as_tensor(tags, dtype=torch.long)] = 1.0
        s = self.samples[index]
        out = {"image": image, "label": label, "tags": t, "index": index, "id": s.id,
               "clip": s.clip, "frame": s.frame}
        out.update(zip(self.maps, extra))
        out.update({k: v[index] for k, v in self.values.items()})
        return out
