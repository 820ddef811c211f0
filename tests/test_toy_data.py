"""ToyObjects / ToyStreets: determinism, on-disk format, and the properties that make them non-trivial."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from wsss_lib.data.base import SegmentationDataset, tags_from_label
from wsss_lib.data.registry import load_dataset
from wsss_lib.data.toy_objects import (CLASSES, color_baseline, dataset_statistics, ensure_toy_objects,
                                       generate_image, load_toy_objects, read_objects_json, toy_objects_manifest)
from wsss_lib.core.config import PRESETS
from wsss_lib.data.toy_streets import (BACKGROUND, CLASSES as STREET_CLASSES, GENERATOR_VERSION, MOVING,
                                       ensure_toy_streets, frame_pairs, generate_clip, instance_sizes,
                                       load_toy_streets, oracle_stride_iou, oracle_stride_prediction,
                                       read_clips_json)
from wsss_lib.core.errors import DatasetLayoutError, InvalidInputError

OBJ_KW = dict(n_train=48, n_val=16, n_test=8, seed=3)
STREET_KW = dict(n_train=4, n_val=2, n_test=1, seed=5)


@pytest.fixture(scope="module")
def objects_root(tmp_path_factory):
    return ensure_toy_objects(tmp_path_factory.mktemp("toy") / "objects", workers=2, **OBJ_KW)


@pytest.fixture(scope="module")
def streets_root(tmp_path_factory):
    return ensure_toy_streets(tmp_path_factory.mktemp("toy") / "streets", workers=2, **STREET_KW)


@pytest.fixture(scope="module")
def many_images():
    """200 ToyObjects images in memory (default parameters)."""
    return [generate_image(0, "stats", i) for i in range(200)]


@pytest.fixture(scope="module")
def many_clips():
    """40 ToyStreets clips in memory (default parameters; ~3 s): enough for per-class frequencies."""
    return [generate_clip(0, "stats", i) for i in range(40)]


# ------------------------------------------------------------------------------------------ ToyObjects
def test_objects_deterministic_per_image():
    a = generate_image(7, "train", 11)
    b = generate_image(7, "train", 11)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    c = generate_image(8, "train", 11)
    d = generate_image(7, "train", 12)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])


def test_objects_same_bytes_whatever_the_workers(tmp_path, objects_root):
    other = ensure_toy_objects(tmp_path / "again", workers=1, **OBJ_KW)
    for rel in ("JPEGImages/train_00005.jpg", "SegmentationClass/val_00003.png", "tags.json", "objects.json",
                "ImageSets/Segmentation/test.txt", "manifest.json"):
        assert (other / rel).read_bytes() == (objects_root / rel).read_bytes(), rel
    changed = ensure_toy_objects(tmp_path / "seed4", workers=1, **dict(OBJ_KW, seed=4, n_train=4, n_val=0, n_test=0))
    assert (changed / "JPEGImages/train_00000.jpg").read_bytes() != (objects_root / "JPEGImages/train_00000.jpg").read_bytes()


def test_objects_layout_and_formats(objects_root):
    info, train = load_toy_objects(objects_root, "train")
    assert info.classes == CLASSES and info.background == [0] and len(info.classes) >= 7
    assert len(train) == OBJ_KW["n_train"]
    assert len(load_toy_objects(objects_root, "val")[1]) == OBJ_KW["n_val"]
    assert len(load_toy_objects(objects_root, "test")[1]) == OBJ_KW["n_test"]
    assert json.loads((objects_root / "classes.json").read_text()) == info.to_json()
    manifest = json.loads((objects_root / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(toy_objects_manifest(**OBJ_KW)))
    tags_json = json.loads((objects_root / "tags.json").read_text())
    for s in train[:20]:
        with Image.open(s.image) as im:
            assert im.format == "JPEG" and im.size == (96, 96) and im.mode == "RGB"
        with Image.open(s.label) as lab_im:
            assert lab_im.format == "PNG" and lab_im.mode == "P"
            lab = np.asarray(lab_im)
        assert set(np.unique(lab)) <= set(range(len(CLASSES))) | {255}
        assert s.tags == tags_from_label(lab, len(CLASSES))
        assert sorted(tags_json[s.id]) == sorted(CLASSES[t] for t in s.tags)
    item = SegmentationDataset(info, train)[0]
    assert item["image"].shape == (3, 96, 96) and item["tags"].shape == (7,)


def test_objects_ensure_is_idempotent_and_regenerates(tmp_path):
    kw = dict(n_train=6, n_val=2, n_test=2, seed=1, workers=1)
    root = ensure_toy_objects(tmp_path / "o", **kw)
    f = root / "JPEGImages" / "train_00002.jpg"
    mtime = f.stat().st_mtime_ns
    ensure_toy_objects(root, **kw)
    assert f.stat().st_mtime_ns == mtime                     # nothing rewritten
    f.unlink()
    ensure_toy_objects(root, **kw)                            # missing file -> regenerated
    assert f.is_file()
    ensure_toy_objects(root, **dict(kw, n_train=3))           # other parameters -> regenerated
    assert len(load_toy_objects(root, "train")[1]) == 3
    assert not (root / "JPEGImages" / "train_00004.jpg").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(DatasetLayoutError, match="refusing to overwrite"):
        ensure_toy_objects(tmp_path / "mine", **kw)
    with pytest.raises(InvalidInputError):
        ensure_toy_objects(tmp_path / "bad", min_area=0.5, max_area=0.1)


def test_objects_missing_root_message(tmp_path):
    with pytest.raises(DatasetLayoutError) as e:
        load_toy_objects(tmp_path / "none", "train")
    assert "JPEGImages/{id}.jpg" in str(e.value) and "ensure_toy_objects" in str(e.value)


def test_objects_area_range_and_counts(many_images):
    objs = [o for _, _, obj in many_images for o in obj]
    areas = np.array([o["area"] for o in objs])
    assert areas.min() >= 0.015 and areas.max() <= 0.45
    assert np.percentile(areas, 5) < 0.04 and np.percentile(areas, 95) > 0.25   # really spans 2 %..40 %
    counts = [len(obj) for _, _, obj in many_images]
    assert set(counts) == {1, 2, 3}
    vis = np.array([o["visible"] for o in objs])
    assert vis.min() >= 0.5 and (vis < 0.99).mean() > 0.1                       # occlusion happens
    assert {o["class"] for o in objs} == set(CLASSES[1:])


def test_objects_duplicate_classes(many_images):
    dup = np.mean([len({o["class"] for o in obj}) < len(obj) for _, _, obj in many_images])
    assert dup >= 0.10


def test_objects_labels_consistent_with_objects(many_images):
    for image, label, obj in many_images[:50]:
        present = {CLASSES[t] for t in tags_from_label(label, len(CLASSES))} - {"background"}
        assert present == {o["class"] for o in obj}
        band = label == 255
        assert 0 < band.mean() < 0.1                                            # thin boundary band


def test_objects_textured_clutter_off_is_the_default_data_and_bad_values_raise():
    for i in range(3):
        a, b = generate_image(0, "val", i), generate_image(0, "val", i, textured_clutter=0.0)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert "textured_clutter" not in toy_objects_manifest()["params"]  # the default folder's manifest is unchanged
    assert toy_objects_manifest(textured_clutter=2.0)["params"]["textured_clutter"] == 2.0
    for bad in (-0.5, 11.0):
        with pytest.raises(InvalidInputError, match="textured_clutter"):
            toy_objects_manifest(textured_clutter=bad)


def test_objects_textured_clutter_takes_texture_energy_away_from_the_objects():
    """The textured variant's point: on the same number of images, texture energy separates the objects
    from the background less well (the best low-level map's fg IoU on VAL-style images falls), while the
    objects themselves are drawn as before (same classes, areas, visibility rules)."""
    import torch
    from wsss_lib.ops.masks import choose_threshold, lowlevel_objectness

    def lowlevel_iou(tc):
        imgs, labs = zip(*[generate_image(0, "stats", i, textured_clutter=tc)[:2] for i in range(40)])
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
        lab = torch.from_numpy(np.stack(labs)).long()
        th, scores = choose_threshold(lowlevel_objectness(x, sigma=8.0, kind="gradient"), lab,
                                      [round(0.05 * i, 2) for i in range(1, 20)])
        return scores[th]

    plain, textured = lowlevel_iou(0.0), lowlevel_iou(2.0)
    assert textured < plain - 0.05, (plain, textured)
    objs = [generate_image(0, "stats", i, textured_clutter=2.0)[2] for i in range(40)]
    assert all(1 <= len(o) <= 3 and all(d["visible"] >= 0.5 for d in o) for o in objs)


def test_registry_textured_variant_has_its_own_folder_and_preset(tmp_path):
    info, samples = load_dataset("toy_objects_textured", tmp_path / "data", "val", n_train=2, n_val=3, n_test=1,
                                 workers=1)
    assert len(samples) == 3 and info.classes == CLASSES
    params = json.loads((tmp_path / "data" / "manifest.json").read_text())["params"]
    assert params["textured_clutter"] == PRESETS["toy_objects_textured"]["default"]["textured_clutter"] > 0
    _, samples = load_dataset("toy_objects_textured", tmp_path / "data", "val")  # existing one used as is
    assert len(samples) == 3


def test_objects_colour_alone_does_not_separate_fg_bg(objects_root):
    info, train = load_toy_objects(objects_root, "train")
    _, val = load_toy_objects(objects_root, "val")
    res = color_baseline(info, train, val, bins=8)
    assert res["accuracy"] <= res["majority"] + 0.02, res
    assert res["balanced_accuracy"] < 0.56, res


def test_objects_statistics(objects_root):
    info, train = load_toy_objects(objects_root, "train")
    st = dataset_statistics(info, train, read_objects_json(objects_root))
    assert st["images"] == len(train)
    assert 0.05 < st["fg_pixel_frac"] < 0.5
    assert abs(sum(st["objects_per_image"].values()) - 1) < 1e-3
    assert st["class_image_freq"]["background"] == 1.0


# ------------------------------------------------------------------------------------------ ToyStreets
def test_streets_deterministic():
    a, b = generate_clip(1, "train", 2), generate_clip(1, "train", 2)
    np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    c = generate_clip(2, "train", 2)
    assert not np.array_equal(a["images"], c["images"])


def test_streets_layout(streets_root, tmp_path):
    info, train = load_toy_streets(streets_root, "train")
    assert info.background == BACKGROUND and info.moving == MOVING and len(info.background) >= 4
    assert {info.classes[k] for k in info.moving} == {"car", "person", "bicycle"}
    assert len(train) == STREET_KW["n_train"] * 8
    assert [(s.clip, s.frame) for s in train] == sorted((s.clip, s.frame) for s in train)
    assert all(s.id == f"{s.clip}/{s.frame:04d}" for s in train)
    tags_json = json.loads((streets_root / "tags.json").read_text())
    for s in train[::5]:
        with Image.open(s.image) as im:
            assert im.format == "JPEG" and im.size == (128, 96)
        with Image.open(s.label) as li:
            assert li.mode == "P"
            lab = np.asarray(li)
        assert s.tags == tags_from_label(lab, info.num_classes)
        assert sorted(tags_json[s.id]) == sorted(info.classes[t] for t in s.tags)
    item = SegmentationDataset(info, train)[3]
    assert item["clip"] == train[3].clip and item["frame"] == 3
    clips = read_clips_json(streets_root)
    assert len(clips) == sum(STREET_KW[k] for k in ("n_train", "n_val", "n_test"))
    assert all(set(m) == {"layout", "canvas_shape", "cameras", "objects"} for m in clips.values())
    # the on-disk layout (v1 and v2 alike): exactly these files, nothing else
    names = [f"{split}_{i:04d}" for split in ("train", "val", "test") for i in range(STREET_KW[f"n_{split}"])]
    expected = {"tags.json", "clips.json", "classes.json", "manifest.json",
                *(f"ImageSets/{split}.txt" for split in ("train", "val", "test")),
                *(f"frames/{c}/{t:04d}.jpg" for c in names for t in range(8)),
                *(f"labels/{c}/{t:04d}.png" for c in names for t in range(8))}
    found = {p.relative_to(streets_root).as_posix() for p in streets_root.rglob("*") if p.is_file()}
    assert found == expected
    assert json.loads((streets_root / "manifest.json").read_text())["version"] == GENERATOR_VERSION
    with pytest.raises(DatasetLayoutError, match="frames/"):
        load_toy_streets(tmp_path / "none")


def test_streets_same_seed_same_bytes(streets_root, tmp_path):
    """Same parameters -> byte-identical files whatever the number of workers; another seed -> other files."""
    again = ensure_toy_streets(tmp_path / "s2", workers=1, **STREET_KW)
    files = sorted(p.relative_to(streets_root) for p in streets_root.rglob("*") if p.is_file())
    assert len(files) > 100
    for rel in files:
        assert (again / rel).read_bytes() == (streets_root / rel).read_bytes(), rel
    other = ensure_toy_streets(tmp_path / "s3", workers=1, **dict(STREET_KW, seed=STREET_KW["seed"] + 1, n_val=0,
                                                                    n_test=0))
    for rel in ("frames/train_0000/0000.jpg", "labels/train_0001/0003.png"):
        assert (other / rel).read_bytes() != (streets_root / rel).read_bytes(), rel
    # the files are what generate_clip renders (the in-memory statistics below describe the disk data)
    clip = generate_clip(STREET_KW["seed"], "val", 1)
    _, val = load_toy_streets(streets_root, "val")
    for s in val[8:]:
        with Image.open(s.label) as li:
            np.testing.assert_array_equal(np.asarray(li), clip["labels"][s.frame])


def test_frame_pairs(streets_root):
    _, train = load_toy_streets(streets_root, "train")
    pairs = frame_pairs(train)
    assert len(pairs) == STREET_KW["n_train"] * 7
    assert all(train[i].clip == train[j].clip and train[j].frame == train[i].frame + 1 for i, j in pairs)
    shuffled = list(reversed(train))
    assert all(shuffled[j].frame == shuffled[i].frame + 1 for i, j in frame_pairs(shuffled))


def test_streets_background_classes_vary(many_clips):
    frames = [lab for c in many_clips for lab in c["labels"]]
    assert all(c["labels"].shape[0] >= 8 for c in many_clips)
    present = np.array([[k in set(np.unique(lab)) for k in range(8)] for lab in frames])
    for k in BACKGROUND:   # every background class is missing from some frames and present in others
        assert 0.02 < present[:, k].mean() < 1.0, k
    assert len({tuple(p[BACKGROUND]) for p in present}) >= 4
    for k in MOVING:
        assert 0.2 < present[:, k].mean() < 1.0, k
    within = [len({tuple(p) for p in present[i * 8:(i + 1) * 8]}) > 1 for i in range(len(many_clips))]
    assert np.mean(within) > 0.3      # tags change within clips too (objects/trees entering/leaving)


def _warp_prev(lab_prev, cam_prev, cam_next, h, w):
    """Label of frame t seen at frame t+1's pixels, assuming a STATIC scene (camera motion only)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    x = cam_next[0] + (u + 0.5) * cam_next[2] / w
    y = cam_next[1] + (v + 0.5) * cam_next[3] / h
    up = np.floor((x - cam_prev[0]) * w / cam_prev[2]).astype(int)
    vp = np.floor((y - cam_prev[1]) * h / cam_prev[3]).astype(int)
    ok = (up >= 0) & (up < w) & (vp >= 0) & (vp < h)
    out = np.full((h, w), 255, np.int64)
    out[ok] = lab_prev[vp[ok], up[ok]]
    return out


def test_streets_camera_and_object_motion(many_clips):
    agree = {"bg_raw": [0, 0], "bg_cam": [0, 0], "moving_cam": [0, 0]}
    for c in many_clips:
        imgs, labs, cams = c["images"].astype(np.float32), c["labels"].astype(np.int64), c["cameras"]
        assert not np.allclose(cams[0], cams[-1])
        for t in range(len(labs) - 1):
            assert np.abs(imgs[t + 1] - imgs[t]).mean() > 2.0        # consecutive frames differ
            warped = _warp_prev(labs[t], cams[t], cams[t + 1], *labs.shape[1:])
            ok = warped != 255
            bg = ok & (labs[t + 1] < 5)
            fg = ok & (labs[t + 1] >= 5)
            agree["bg_raw"][0] += (labs[t + 1][bg] == labs[t][bg]).sum()
            agree["bg_raw"][1] += bg.sum()
            agree["bg_cam"][0] += (labs[t + 1][bg] == warped[bg]).sum()
            agree["bg_cam"][1] += bg.sum()
            agree["moving_cam"][0] += (labs[t + 1][fg] == warped[fg]).sum()
            agree["moving_cam"][1] += fg.sum()
        for o in c["objects"]:
            xs = np.array(o["xy"])[:, 0]
            assert (np.ptp(xs) == 0) == o["parked"]
    r = {k: v[0] / max(1, v[1]) for k, v in agree.items()}
    assert r["bg_cam"] > 0.95 and r["bg_cam"] > r["bg_raw"] + 0.02, r      # the camera moves; the scene is static
    assert r["moving_cam"] < r["bg_cam"] - 0.1, r                          # objects move relative to the scene


def test_streets_some_objects_camouflaged(many_clips):
    """Some cars wear the road's colour: most of their pixels are road-coloured (motion is the cue)."""
    near, far, n_camo, n_cars = [], [], 0, 0
    for c in many_clips:
        road = np.asarray(c["layout"]["road_rgb"])
        for k, o in enumerate(c["objects"]):
            if o["class"] != "car":
                continue
            n_cars += 1
            n_camo += o["camouflaged"]
            for img, inst in zip(c["images"], c["instances"]):
                m = inst == k + 1
                if m.sum() > 30:
                    frac = (np.linalg.norm(img[m].astype(np.float64) - road, axis=1) < 30).mean()
                    (near if o["camouflaged"] else far).append(frac)
    assert n_camo >= 0.1 * n_cars and near and far
    assert np.mean(near) > 0.5 and np.mean(far) < 0.25, (np.mean(near), np.mean(far))


def test_oracle_stride_iou_basics():
    lab = np.zeros((96, 128), np.uint8)
    lab[16:48, 32:64] = 6                      # a block aligned with the 8x8 cells: only its corners are lost
    lab[:, 100] = 7                            # a 1-px line: no cell has a majority of it
    iou = oracle_stride_iou([lab], 8, 8)
    assert 0.95 < iou[6] < 1.0 and iou[7] == 0.0 and np.isnan(iou[3])
    assert oracle_stride_iou(lab[None], 8, 1)[7] == 1.0                      # stride 1 = the labels themselves
    odd = np.full((50, 37), 255, np.uint8)                                     # ragged border, ignore pixels
    odd[5:45, 3:30] = 2
    odd[20:30, 10:20] = 4
    pred = oracle_stride_prediction(odd, 8, 8)
    assert pred.shape == odd.shape and set(np.unique(pred[odd != 255])) <= {2, 4}
    iou = oracle_stride_iou([odd], 8, 8)
    assert iou[2] > 0.9 and 0 < iou[4] <= 1 and np.isnan(iou[0])
    with pytest.raises(InvalidInputError):
        oracle_stride_prediction(odd, 8, 0)


def test_streets_every_class_measurable_at_stride_8(many_clips):
    """A perfect stride-8 score map (12x16 for 96x128 frames; true class fractions per cell, bilinear,
    argmax) reaches IoU >= 0.5 on EVERY class: no class is below the video models' resolution.
    (v1: person 0.17-0.27, bicycle 0.16-0.23, 1-px bicycle frames and 6-px wide persons.)"""
    iou = oracle_stride_iou(np.concatenate([c["labels"] for c in many_clips]), len(STREET_CLASSES), 8)
    assert np.isfinite(iou).all(), iou
    assert (iou >= 0.5).all(), dict(zip(STREET_CLASSES, iou.round(3)))
    assert iou[MOVING].min() >= 0.7, dict(zip(STREET_CLASSES, iou.round(3)))  # margin (measured ~0.8-0.9)


def test_streets_persons_and_bicycles_are_filled_and_wide(many_clips):
    """Persons and bicycles with riders are filled shapes >= 16 px (two score-map cells) wide in the
    median, taller than wide, and thick (v1: bicycles were 1-px lines, thickness ~3 px)."""
    rows = [r for c in many_clips for r in instance_sizes(c)]
    for name in ("person", "bicycle"):
        rr = [r for r in rows if r["class"] == name]
        assert len(rr) >= 50, name
        w, h = np.median([r["w"] for r in rr]), np.median([r["h"] for r in rr])
        thick = np.median([r["thickness"] for r in rr])
        assert w >= 16 and h >= w and thick >= 10, (name, w, h, thick)
    persons = [r["h"] for r in rows if r["class"] == "person" and not r["cut"]]
    assert np.percentile(persons, 90) >= 1.4 * np.percentile(persons, 10)        # sizes vary (depth, zoom)


def test_streets_every_tag_has_negatives(many_clips):
    """No background class is in more than 85 % of the frames (measured on the train split: <= ~75 %),
    so every tag has negatives; every class is present somewhere."""
    frames = [lab for c in many_clips for lab in c["labels"]]
    present = np.array([np.bincount(lab.reshape(-1), minlength=8)[:8] > 0 for lab in frames]).mean(0)
    for k in BACKGROUND:
        assert 0.2 <= present[k] <= 0.85, (STREET_CLASSES[k], present.round(3))
    kinds = {c["layout"]["kind"] for c in many_clips}
    assert kinds == {"street", "tunnel", "open", "plaza", "park"}, kinds
    assert {c["layout"]["camera"] for c in many_clips} == {"level", "up", "down"}


def test_streets_default_sizes():
    d = PRESETS["toy_streets"]["default"]
    assert d["n_val"] >= 30 and d["n_test"] >= 30 and d["n_train"] >= 150
    assert d["n_test"] * d["frames"] >= 240


def test_registry_generates_toy(tmp_path):
    info, samples = load_dataset("toy_objects", tmp_path / "data", "val", n_train=2, n_val=3, n_test=1, workers=1)
    assert len(samples) == 3 and (tmp_path / "data" / "manifest.json").is_file()
    info, samples = load_dataset("toy_objects", tmp_path / "data", "val")     # existing one used as is
    assert len(samples) == 3
    info, samples = load_dataset("toy_streets", tmp_path / "d2", "test", n_train=1, n_val=1, n_test=1, frames=8,
                                 workers=1)
    assert len(samples) == 8 and info.name == "toy_streets"
