"""ToyObjects: a procedurally generated, PASCAL-VOC-like multi-object dataset (paper 1 on a CPU).

Six foreground classes told apart by SHAPE and TEXTURE (never by colour)::

    0 background | 1 disc/stripes | 2 box/checker | 3 triangle/dots | 4 ring/plain | 5 star/waves | 6 cross/camo

Design (what makes it non-trivial):

* Object colours and background colours come from the SAME distribution
  (:func:`~wsss_lib.data.textures.random_colors`), so a per-pixel colour classifier cannot separate
  foreground from background (:func:`color_baseline` measures this).
* Backgrounds are cluttered: a soft two-colour base (large blotches or a gradient), plain irregular
  blobs, lines, soft ellipses and fine-grain patches, all in background colours. Background
  textures have statistics unlike the objects' (soft / very fine / plain vs periodic or 3-5 px
  two-colour patterns), so a CNN can learn objectness.
* 1-3 objects per image (p = 0.40/0.35/0.25), random rotation and aspect (0.6-1.67), full-shape
  area log-uniform in [2 %, 40 %] of the image, later objects occlude earlier ones (label = front
  object; every object keeps >= 50 % of its area visible), a second object copies the first one's
  class with probability ``dup_prob`` (plus chance duplicates).
* A 1-pixel band of label 255 (ignore) lines the inside of every object's visible outline (VOC
  style, thinner), also between touching objects of the same class.

On-disk layout (VOC layout, read by :func:`~wsss_lib.data.voc.voc_layout_index`)::

    <root>/JPEGImages/{id}.jpg                 quality 92
    <root>/SegmentationClass/{id}.png          palette PNG (VOC palette), 0..6, 255 = boundary band
    <root>/ImageSets/Segmentation/{train,val,test}.txt
    <root>/tags.json      {id: [class names present, "background" included when visible]}
    <root>/objects.json   {id: [{"class", "area" (full shape / image), "visible" (fraction of own area)}]}
    <root>/classes.json   DatasetInfo.to_json()
    <root>/manifest.json  generator parameters + version (regenerated when they differ)

Ids are ``{split}_{index:05d}``; image ``index`` of ``split`` is drawn from
``rng_for(seed, "toy_objects", split, index)`` alone, so every image is reproducible on its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..core.config import PRESETS
from ..core.errors import InvalidInputError, dataset_layout_error
from ..core.io import read_image, read_label, voc_palette, write_image, write_label
from ..core.parallel import num_threads_hint, run_pool
from .base import DatasetInfo, Sample, read_tags_json, tags_from_label
from .textures import (blend, ensure_generated, fill_polygons, place_polygons, random_colors, rng_for, shading,
                       shape_polygons, smooth_noise, texture_pattern)
from .voc import voc_layout_index

GENERATOR_VERSION = 1
CLASSES = ["background", "disc", "box", "triangle", "ring", "star", "cross"]
CLASS_TEXTURE = {"disc": "stripes", "box": "checker", "triangle": "dots", "ring": "plain", "star": "waves",
                 "cross": "camo"}
_DEF = PRESETS["toy_objects"]["default"]  # sizes and seed: the one place they live

TOY_OBJECTS_TREE = """<root>/
    JPEGImages/{id}.jpg
    SegmentationClass/{id}.png
    ImageSets/Segmentation/{train,val,test}.txt
    tags.json, objects.json, classes.json, manifest.json"""
TOY_OBJECTS_SOURCE = "generated locally: wsss_lib.data.toy_objects.ensure_toy_objects(root)"


def toy_objects_info() -> DatasetInfo:
    """ToyObjects label space: 7 classes, background = 0, VOC palette."""
    return DatasetInfo(name="toy_objects", classes=list(CLASSES), background=[0], palette=voc_palette())


def _params(size=_DEF["size"], n_train=_DEF["n_train"], n_val=_DEF["n_val"], n_test=_DEF["n_test"], seed=_DEF["seed"], min_area=0.02, max_area=0.4,
            object_probs=(0.4, 0.35, 0.25), dup_prob=0.15, boundary=1, jpeg_quality=92, textured_clutter=0.0) -> dict:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = [int(size[0]), int(size[1])]
    if min(size) < 16:
        raise InvalidInputError(f"image size must be at least 16x16, got {size}")
    if not (0 < min_area <= max_area < 1):
        raise InvalidInputError(f"need 0 < min_area <= max_area < 1, got {min_area}, {max_area}")
    probs = [float(p) for p in object_probs]
    if not probs or any(p < 0 for p in probs) or abs(sum(probs) - 1) > 1e-6:
        raise InvalidInputError(f"object_probs must be non-negative and sum to 1, got {probs}")
    for n in (n_train, n_val, n_test):
        if int(n) < 0:
            raise InvalidInputError(f"split sizes must be >= 0, got {(n_train, n_val, n_test)}")
    if not 0.0 <= float(textured_clutter) <= 10.0:
        raise InvalidInputError(f"textured_clutter (mean textured blobs per image) must be in [0, 10], got {textured_clutter}")
    # textured_clutter enters the manifest only when on, so the default dataset's manifest (and files) stay as they were
    return {"size": size, "splits": {"train": int(n_train), "val": int(n_val), "test": int(n_test)},
            "seed": int(seed), "min_area": float(min_area), "max_area": float(max_area), "object_probs": probs,
            "dup_prob": float(dup_prob), "boundary": int(boundary), "jpeg_quality": int(jpeg_quality),
            **({"textured_clutter": float(textured_clutter)} if float(textured_clutter) > 0 else {})}


# ------------------------------------------------------------------------------------------ drawing
def _two_colors(rng: np.random.Generator, min_dist: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Two colours from the shared distribution, at least ``min_dist`` apart in RGB (visible texture)."""
    a = random_colors(rng, 1)[0]
    for _ in range(20):
        b = random_colors(rng, 1)[0]
        if np.linalg.norm(a - b) >= min_dist:
            break
    return a, b


def _irregular_blob(rng: np.random.Generator, center, radius: float) -> np.ndarray:
    n = int(rng.integers(5, 10))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.45, 1.0, n)
    return np.stack([center[0] + r * np.cos(t), center[1] + r * np.sin(t)], axis=1)


# the objects' own periodic / 3-5 px textures (not "plain": plain blobs are already clutter)
OBJECT_TEXTURES = tuple(sorted({t for t in CLASS_TEXTURE.values() if t != "plain"}))


def render_background(rng: np.random.Generator, shape: tuple[int, int], textured_clutter: float = 0.0) -> np.ndarray:
    """Cluttered background ``float32 (H, W, 3)`` in [0, 255] (colours from the shared distribution).

    ``textured_clutter`` [ours]: the mean number of extra object-sized blobs (0 to 2x that many, area
    log-uniform in [2 %, 25 %] of the image, drawn under the objects) that wear one of the objects' own
    textures (:data:`OBJECT_TEXTURES`, two colours as far apart as an object's), so texture energy alone
    no longer singles out the objects; their shapes still do (the blobs are irregular 5-9-gons, never one
    of the six class shapes). 0 (the default) draws exactly the background it always did."""
    h, w = shape
    c1, c2 = _two_colors(rng, 40.0)
    base_kind = "blotch" if rng.random() < 0.6 else "gradient"
    img = blend(texture_pattern(base_kind, shape, rng), c1, c2) * shading(shape, rng, 0.2)
    for _ in range(int(rng.integers(4, 11))):
        kind = rng.choice(["blob", "line", "ellipse", "grain", "blob"])
        color = random_colors(rng, 1)[0]
        if kind == "line":
            canvas = np.zeros(shape, np.uint8)
            pts = np.stack([rng.uniform(-0.1 * w, 1.1 * w, 3), rng.uniform(-0.1 * h, 1.1 * h, 3)], 1)
            cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, 1, int(rng.integers(1, 4)), cv2.LINE_8)
            img[canvas.astype(bool)] = color
            continue
        radius = np.sqrt(rng.uniform(0.01, 0.15) * h * w / np.pi)
        center = (rng.uniform(0, w), rng.uniform(0, h))
        if kind == "blob":
            mask = fill_polygons(shape, [_irregular_blob(rng, center, radius * 1.3)])
            fill = np.broadcast_to(color, (h, w, 3)) * shading(shape, rng, 0.15)
        else:
            ax = radius * np.exp(rng.uniform(-0.5, 0.5))
            canvas = np.zeros(shape, np.uint8)
            cv2.ellipse(canvas, (int(center[0]), int(center[1])), (max(1, int(ax)), max(1, int(radius * radius / ax))),
                        float(rng.uniform(0, 180)), 0, 360, 1, -1)
            mask = canvas.astype(bool)
            c2 = random_colors(rng, 1)[0]
            if kind == "ellipse":
                fill = blend(texture_pattern("gradient", shape, rng, center), color, c2)
            else:  # fine grain: per-pixel noise between two close-ish colours
                fill = blend(texture_pattern("grain", shape, rng), color, color * 0.6 + c2 * 0.4)
        img[mask] = fill[mask]
    if textured_clutter > 0:  # object-sized irregular blobs in the objects' textures, under the objects
        for _ in range(int(rng.integers(0, int(round(2 * textured_clutter)) + 1))):
            radius = np.sqrt(np.exp(rng.uniform(np.log(0.02), np.log(0.25))) * h * w / np.pi)
            center = (rng.uniform(0, w), rng.uniform(0, h))
            mask = fill_polygons(shape, [_irregular_blob(rng, center, radius * 1.2)])
            a, b = _two_colors(rng)
            fill = blend(texture_pattern(str(rng.choice(OBJECT_TEXTURES)), shape, rng, center), a, b) * \
                shading(shape, rng, 0.15)
            img[mask] = fill[mask]
    return img


def generate_image(seed: int, split: str, index: int, size: Sequence[int] = (96, 96), min_area: float = 0.02,
                   max_area: float = 0.4, object_probs: Sequence[float] = (0.4, 0.35, 0.25), dup_prob: float = 0.15,
                   boundary: int = 1, noise: float = 2.5, textured_clutter: float = 0.0,
                   **_ignored) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Render one ToyObjects image (pure function of ``(seed, split, index)`` and the parameters).

    Returns ``image uint8 (H, W, 3)`` (before JPEG), ``label uint8 (H, W)`` (0..6, 255 band) and the
    object list ``[{"class": name, "area": float, "visible": float}]`` in drawing order (back to front).
    """
    h, w = int(size[0]), int(size[1])
    shape = (h, w)
    rng = rng_for(seed, "toy_objects", split, index)
    img = render_background(rng, shape, textured_clutter)
    n = int(rng.choice(np.arange(1, len(object_probs) + 1), p=np.asarray(object_probs)))
    cls = [int(c) for c in rng.integers(1, len(CLASSES), n)]
    if n >= 2 and rng.random() < dup_prob:
        i, j = rng.choice(n, 2, replace=False)
        cls[j] = cls[i]
    inst = np.zeros(shape, np.int32)
    full_area: list[int] = []
    placed: list[tuple[int, np.ndarray]] = []
    for k, c in enumerate(cls):
        name = CLASSES[c]
        target = np.exp(rng.uniform(np.log(min_area), np.log(max_area))) * h * w
        for attempt in range(40):
            if attempt and attempt % 8 == 0:
                target = max(target * 0.8, min_area * h * w)
            outer, holes, unit = shape_polygons(name, rng)
            scale = np.sqrt(target / unit)
            angle = rng.uniform(0, 2 * np.pi)
            ext = scale * max(np.abs(p).max() for p in outer)
            m = min(ext * 0.8, w / 2), min(ext * 0.8, h / 2)
            center = (rng.uniform(m[0], w - m[0]), rng.uniform(m[1], h - m[1]))
            mask = fill_polygons(shape, place_polygons(outer, center, angle, scale),
                                 place_polygons(holes, center, angle, scale))
            area = int(mask.sum())
            if area < 0.8 * target or area < min_area * h * w * 0.8:
                continue  # too much of it outside the image
            trial = inst.copy()
            trial[mask] = k + 1
            if all((trial == j + 1).sum() >= 0.5 * full_area[j] for j in range(len(full_area)) if full_area[j] > 0):
                inst = trial
                full_area.append(area)
                placed.append((c, mask))
                break
        else:
            full_area.append(0)  # could not place: dropped
            continue
        # appearance
        tex = CLASS_TEXTURE[name]
        if tex == "plain":
            a = random_colors(rng, 1)[0]
            fill = np.broadcast_to(a, (h, w, 3)) * shading(shape, rng, 0.25)
        else:
            a, b = _two_colors(rng)
            fill = blend(texture_pattern(tex, shape, rng, center), a, b) * shading(shape, rng, 0.15)
        img[mask] = fill[mask]
    label = np.zeros(shape, np.uint8)
    objects = []
    for k, c in enumerate(cls):
        if full_area[k] == 0:
            continue
        vis = inst == k + 1
        label[vis] = c
        objects.append({"class": CLASSES[c], "area": round(full_area[k] / (h * w), 5),
                        "visible": round(float(vis.sum()) / full_area[k], 4)})
    if boundary > 0:
        band = np.zeros(shape, bool)
        pad = np.pad(inst, 1, mode="edge")
        for _ in range(boundary):
            diff = ((pad[1:-1, 1:-1] != pad[:-2, 1:-1]) | (pad[1:-1, 1:-1] != pad[2:, 1:-1]) |
                    (pad[1:-1, 1:-1] != pad[1:-1, :-2]) | (pad[1:-1, 1:-1] != pad[1:-1, 2:]))
            band |= diff & (inst > 0)
            pad = np.pad(np.where(band, -1, inst), 1, mode="edge")
        label[band] = 255
    if noise > 0:
        img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return image, label, objects


def _work(args: tuple[str, str, int, dict]) -> tuple[str, list[str], list[dict]]:
    root, split, index, p = args
    cv2.setNumThreads(1)
    image, label, objects = generate_image(p["seed"], split, index, **{k: v for k, v in p.items() if k != "seed"})
    sid = f"{split}_{index:05d}"
    write_image(Path(root) / "JPEGImages" / f"{sid}.jpg", image, quality=p["jpeg_quality"])
    write_label(Path(root) / "SegmentationClass" / f"{sid}.png", label)
    tags = [CLASSES[t] for t in tags_from_label(label, len(CLASSES))]
    return sid, tags, objects


def write_toy_objects(root: str | os.PathLike, params: dict, workers: int = 2) -> None:
    """Generate every split of ToyObjects into ``root`` (no manifest; see :func:`ensure_toy_objects`)."""
    root = Path(root)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    tasks = [(str(root), split, i, params) for split, n in params["splits"].items() for i in range(n)]
    results = run_pool(_work, tasks, workers, min_tasks=16, start_method="fork", in_process_without_fork=True)
    tags, objects = {}, {}
    for sid, t, o in results:
        tags[sid], objects[sid] = t, o
    for split, n in params["splits"].items():
        (lists / f"{split}.txt").write_text("".join(f"{split}_{i:05d}\n" for i in range(n)), encoding="utf-8")
    (root / "tags.json").write_text(json.dumps(tags, indent=0, sort_keys=True), encoding="utf-8")
    (root / "objects.json").write_text(json.dumps(objects, sort_keys=True), encoding="utf-8")
    (root / "classes.json").write_text(json.dumps(toy_objects_info().to_json(), indent=1), encoding="utf-8")


def _files_ok(root: Path, params: dict) -> bool:
    for split, n in params["splits"].items():
        if not (root / "ImageSets" / "Segmentation" / f"{split}.txt").is_file():
            return False
    for f in ("tags.json", "objects.json", "classes.json"):
        if not (root / f).is_file():
            return False
    for split, n in params["splits"].items():
        for i in range(n):
            sid = f"{split}_{i:05d}"
            if not (root / "JPEGImages" / f"{sid}.jpg").is_file() or not (root / "SegmentationClass" / f"{sid}.png").is_file():
                return False
    return True


def toy_objects_manifest(**params) -> dict:
    """The manifest dict that :func:`ensure_toy_objects` writes for these parameters."""
    return {"generator": "toy_objects", "version": GENERATOR_VERSION, "params": _params(**params)}


def ensure_toy_objects(root: str | os.PathLike = "data/toy/objects", *, size: int | Sequence[int] = _DEF["size"],
                       n_train: int = _DEF["n_train"], n_val: int = _DEF["n_val"], n_test: int = _DEF["n_test"],
                       seed: int = _DEF["seed"],
                       min_area: float = 0.02, max_area: float = 0.4,
                       object_probs: Sequence[float] = (0.4, 0.35, 0.25), dup_prob: float = 0.15,
                       boundary: int = 1, jpeg_quality: int = 92, textured_clutter: float = 0.0,
                       workers: int | None = None) -> Path:
    """Generate ToyObjects under ``root`` unless an identical one (same manifest, all files) is there.

    ``textured_clutter`` > 0: that many object-textured blobs per image on average in the background
    (:func:`render_background`; the ``toy_objects_textured`` dataset). Returns the resolved root.
    Regeneration is atomic and process-safe (see
    :func:`~wsss_lib.data.textures.ensure_generated`). ``workers`` (default ``min(2, cores)``) only
    changes speed, never the bytes written.
    """
    kw = dict(size=size, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed, min_area=min_area,
              max_area=max_area, object_probs=object_probs, dup_prob=dup_prob, boundary=boundary,
              jpeg_quality=jpeg_quality, textured_clutter=textured_clutter)
    manifest = toy_objects_manifest(**kw)
    p = manifest["params"]
    if workers is None:
        workers = min(2, num_threads_hint())
    return ensure_generated(root, manifest, lambda tmp: write_toy_objects(tmp, p, workers),
                            lambda r: _files_ok(r, p))


def load_toy_objects(root: str | os.PathLike = "data/toy/objects", split: str = "train") -> tuple[DatasetInfo, list[Sample]]:
    """Index one split of an on-disk ToyObjects folder: ``(info, samples)`` with ``Sample.tags`` filled
    from ``tags.json`` (class indices, background included when visible)."""
    root = Path(root)
    info = toy_objects_info()
    if not (root / "tags.json").is_file():
        raise dataset_layout_error("toy_objects", root, "no tags.json (not generated yet?)", TOY_OBJECTS_TREE,
                                   TOY_OBJECTS_SOURCE)
    tags = read_tags_json(root / "tags.json", info.classes)
    return info, voc_layout_index(root, split, info, dataset="toy_objects", tree=TOY_OBJECTS_TREE,
                                  url=TOY_OBJECTS_SOURCE, tags=tags)


def read_objects_json(root: str | os.PathLike) -> dict[str, list[dict]]:
    """``objects.json`` of a generated ToyObjects folder (``{}`` when absent)."""
    p = Path(root) / "objects.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


# ------------------------------------------------------------------------------------------ statistics
def _pct(values, qs=(0, 5, 25, 50, 75, 95, 100)) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {}
    return {f"p{q}": round(float(np.percentile(v, q)), 4) for q in qs}


def dataset_statistics(info: DatasetInfo, samples: Sequence[Sample], objects: dict[str, list[dict]] | None = None,
                       max_images: int | None = None) -> dict:
    """Label statistics of a dataset (any dataset; object-level ones need ToyObjects' ``objects.json``).

    Returns a dict: ``images``, ``class_image_freq`` (fraction of images/frames whose label holds the
    class), ``class_pixel_freq`` (fraction of labelled pixels), ``ignore_pixel_frac``,
    ``fg_pixel_frac``, ``fg_area_per_image`` (percentiles of the foreground fraction per image) and,
    given ``objects``: ``objects_per_image`` histogram, ``object_area`` and ``object_visible``
    percentiles, ``object_class_freq``, ``duplicate_class_images`` (fraction), ``occluded_images``.
    Reads at most ``max_images`` label files (evenly spaced) when set.
    """
    samples = [s for s in samples if s.label is not None]
    if max_images is not None and len(samples) > max_images:
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, max_images).astype(int)]
    c = info.num_classes
    lut = None if info.label_map is None else np.asarray(info.label_map)
    img_count = np.zeros(c, np.int64)
    pix_count = np.zeros(c + 1, np.int64)  # last = ignore
    fg_frac = []
    fg = np.asarray(info.foreground, np.int64)
    for s in samples:
        lab = read_label(s.label)
        if lut is not None:
            lab = lut[lab]
        lab = lab.astype(np.int64)
        valid = lab != info.ignore_index
        cnt = np.bincount(lab[valid].reshape(-1), minlength=c)[:c]
        img_count += cnt > 0
        pix_count[:c] += cnt
        pix_count[c] += int((~valid).sum())
        fg_frac.append(float(cnt[fg].sum()) / max(1, lab.size))
    n = max(1, len(samples))
    labelled = max(1, int(pix_count[:c].sum()))
    out = {
        "images": len(samples),
        "class_image_freq": {info.classes[k]: round(float(img_count[k]) / n, 4) for k in range(c)},
        "class_pixel_freq": {info.classes[k]: round(float(pix_count[k]) / labelled, 4) for k in range(c)},
        "ignore_pixel_frac": round(float(pix_count[c]) / max(1, int(pix_count.sum())), 4),
        "fg_pixel_frac": round(float(pix_count[fg].sum()) / labelled, 4),
        "fg_area_per_image": _pct(fg_frac),
    }
    if objects:
        objs = [objects[s.id] for s in samples if s.id in objects]
        counts = [len(o) for o in objs]
        out["objects_per_image"] = {str(k): round(counts.count(k) / max(1, len(counts)), 4)
                                    for k in range(1, max(counts, default=0) + 1)}
        out["objects_per_image_mean"] = round(float(np.mean(counts)), 3) if counts else 0.0
        areas = [o["area"] for obj in objs for o in obj]
        out["object_area"] = _pct(areas)
        out["object_visible"] = _pct([o["visible"] for obj in objs for o in obj])
        names = [o["class"] for obj in objs for o in obj]
        out["object_class_freq"] = {k: round(names.count(k) / max(1, len(names)), 4) for k in info.classes[1:]}
        out["duplicate_class_images"] = round(
            float(np.mean([len({o["class"] for o in obj}) < len(obj) for obj in objs])) if objs else 0.0, 4)
        out["occluded_images"] = round(
            float(np.mean([any(o["visible"] < 0.999 for o in obj) for obj in objs])) if objs else 0.0, 4)
    return out


def color_baseline(info: DatasetInfo, train: Sequence[Sample], test: Sequence[Sample], bins: int = 8) -> dict:
    """How well does a per-pixel colour classifier separate foreground from background?

    Fits a histogram Bayes classifier on RGB quantised to ``bins`` levels per channel
    (``bins**3`` cells, Laplace smoothing) over the ``train`` samples' pixels, predicts fg/bg on
    ``test``. Returns ``accuracy``, ``majority`` (accuracy of always predicting the larger class),
    ``balanced_accuracy`` (0.5 = chance) and ``fg_fraction``. Ignore pixels are left out.
    """
    fg = np.zeros(256, bool)
    fg[info.foreground] = True

    def pixels(samples):
        cells, ys = [], []
        for s in samples:
            img = read_image(s.image).astype(np.int64) * bins // 256
            lab = read_label(s.label).astype(np.int64)
            valid = lab != info.ignore_index
            cell = (img[..., 0] * bins + img[..., 1]) * bins + img[..., 2]
            cells.append(cell[valid])
            ys.append(fg[np.clip(lab[valid], 0, 255)])
        return np.concatenate(cells), np.concatenate(ys)

    xc, yc = pixels(train)
    n_cells = bins ** 3
    h_fg = np.bincount(xc[yc], minlength=n_cells) + 1.0
    h_bg = np.bincount(xc[~yc], minlength=n_cells) + 1.0
    prior_fg = yc.mean()
    score = np.log(h_fg / h_fg.sum()) + np.log(prior_fg) > np.log(h_bg / h_bg.sum()) + np.log(1 - prior_fg)
    xt, yt = pixels(test)
    pred = score[xt]
    acc = float((pred == yt).mean())
    tpr = float(pred[yt].mean()) if yt.any() else 0.0
    tnr = float((~pred[~yt]).mean()) if (~yt).any() else 0.0
    return {"accuracy": round(acc, 4), "majority": round(float(max(yt.mean(), 1 - yt.mean())), 4),
            "balanced_accuracy": round((tpr + tnr) / 2, 4), "fg_fraction": round(float(yt.mean()), 4)}
