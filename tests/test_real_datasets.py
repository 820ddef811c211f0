"""Real-dataset index builders on tiny fixture trees in the official layouts (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_real import build_camvid, build_cityscapes, build_voc, build_youtube_objects
from PIL import Image

from wsss_lib.data.base import SegmentationDataset
from wsss_lib.data.camvid import load_camvid, parse_camvid_name
from wsss_lib.data.cityscapes import LABEL_ID_TO_TRAIN_ID, load_cityscapes
from wsss_lib.data.registry import default_data_root, fill_tags, load_dataset, load_label, resolve_root
from wsss_lib.data.toy_streets import frame_pairs
from wsss_lib.data.voc import load_voc, read_sbd_mat
from wsss_lib.data.youtube_objects import load_youtube_objects
from wsss_lib.core.errors import CorruptFileError, DatasetLayoutError, UnsafePathError


# ------------------------------------------------------------------------------------------ VOC
def test_voc_splits_classes_tags(tmp_path):
    fx = build_voc(tmp_path)
    info, train = load_voc(tmp_path, "train")
    assert info.num_classes == 21 and info.classes[0] == "background" and info.classes[15] == "person"
    assert info.background == [0] and len(info.foreground) == 20
    assert [s.id for s in train] == [fx["ids"]["a"], fx["ids"]["b"]]
    _, val = load_voc(tmp_path / "VOCdevkit", "val")          # VOCdevkit itself is accepted too
    assert [s.id for s in val] == [fx["ids"]["c"]]
    ds = SegmentationDataset(info, train)
    item = ds[0]
    assert item["image"].shape == (3, 20, 24) and item["label"].shape == (20, 24)
    assert item["clip"] == "" and item["frame"] == -1
    assert set(np.flatnonzero(item["tags"].numpy())) == {0, 1, 15}
    np.testing.assert_array_equal(item["label"].numpy(), fx["voc_gt"][fx["ids"]["a"]])


def test_voc_train_aug_from_sbd(tmp_path):
    fx = build_voc(tmp_path)
    ids = fx["ids"]
    info, aug = load_voc(tmp_path, "train_aug")
    assert sorted(s.id for s in aug) == sorted([ids["a"], ids["b"], ids["d"], ids["e"]])  # minus VOC val (c)
    by_id = {s.id: s for s in aug}
    # VOC's own GT where it exists, SBD converted into the cache otherwise
    assert by_id[ids["a"]].label.parent.name == "SegmentationClass"
    d_label = by_id[ids["d"]].label
    assert d_label.parent == fx["voc2012"] / "SegmentationClassAug_fromSBD"
    with Image.open(d_label) as im:
        assert im.mode == "P"
    np.testing.assert_array_equal(load_label(info, by_id[ids["d"]]), fx["sbd_gt"][ids["d"]])
    ds = SegmentationDataset(info, aug)
    k = [s.id for s in aug].index(ids["d"])
    assert set(np.flatnonzero(ds[k]["tags"].numpy())) == {0, 4, 7, 15}
    # second call reuses the cache (no rewrite)
    mtime = d_label.stat().st_mtime_ns
    _, aug2 = load_dataset("voc_aug", tmp_path, "train")
    assert len(aug2) == 4 and d_label.stat().st_mtime_ns == mtime


def test_sbd_mat_struct_read(tmp_path):
    fx = build_voc(tmp_path)
    sid = fx["ids"]["e"]
    lab = read_sbd_mat(tmp_path / "benchmark_RELEASE" / "dataset" / "cls" / f"{sid}.mat")
    assert lab.dtype == np.uint8
    np.testing.assert_array_equal(lab, fx["sbd_gt"][sid])
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"not a mat file")
    with pytest.raises(CorruptFileError, match="GTcls"):
        read_sbd_mat(bad)


def test_voc_missing_root_and_unsafe_entry(tmp_path):
    with pytest.raises(DatasetLayoutError) as e:
        load_voc(tmp_path / "nope", "train")
    msg = str(e.value)
    assert "VOCdevkit/VOC2012" in msg and "SegmentationClass" in msg and "host.robots.ox.ac.uk" in msg
    build_voc(tmp_path)
    seg = tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    (seg / "evil.txt").write_text("../../../../etc/passwd\n")
    with pytest.raises(UnsafePathError):
        load_voc(tmp_path, "evil")
    with pytest.raises(DatasetLayoutError, match="splits found"):
        load_voc(tmp_path, "nosuchsplit")
    (seg / "broken.txt").write_text("2099_000001\n")
    with pytest.raises(DatasetLayoutError, match="missing"):
        load_voc(tmp_path, "broken")


def test_voc_aug_without_sbd(tmp_path):
    build_voc(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "benchmark_RELEASE")
    with pytest.raises(DatasetLayoutError, match="benchmark_RELEASE") as e:
        load_voc(tmp_path, "train_aug")
    assert "SBD" in str(e.value)


# ------------------------------------------------------------------------------------------ Cityscapes
def test_cityscapes_label_mapping(tmp_path):
    raw = build_cityscapes(tmp_path)
    info, train = load_cityscapes(tmp_path, "train")
    assert info.num_classes == 19 and len(info.background) == 11 and info.moving == list(range(11, 19))
    assert info.classes[info.background[-1]] == "sky" and info.classes[11] == "person"
    assert len(train) == 1
    s = train[0]
    assert s.clip == "aachen_000000" and s.frame == 19 and s.id == "aachen/aachen_000000_000019"
    ds = SegmentationDataset(info, train)
    item = ds[0]
    lab = item["label"].numpy()
    np.testing.assert_array_equal(lab, LABEL_ID_TO_TRAIN_ID[raw["aachen_000000_000019"]])
    assert lab[10, 0] == 0 and lab[0, 0] == 10 and lab[10, 5] == 13     # road, sky, car
    assert lab[5, 0] == 255 and lab[15, 25] == 255                      # unlabeled 0, ego vehicle 1
    assert set(np.flatnonzero(item["tags"].numpy())) == {0, 10, 13}
    _, val = load_cityscapes(tmp_path, "val")
    assert set(np.flatnonzero(SegmentationDataset(info, val)[0]["tags"].numpy())) == {1, 11, 18}
    # 26 (car) -> 13, 33 (bicycle) -> 18, 24 (person) -> 11, everything unknown -> 255
    assert LABEL_ID_TO_TRAIN_ID[26] == 13 and LABEL_ID_TO_TRAIN_ID[33] == 18 and LABEL_ID_TO_TRAIN_ID[24] == 11
    assert (LABEL_ID_TO_TRAIN_ID != 255).sum() == 19


def test_cityscapes_errors(tmp_path):
    with pytest.raises(DatasetLayoutError) as e:
        load_cityscapes(tmp_path / "missing", "train")
    assert "leftImg8bit" in str(e.value) and "gtFine" in str(e.value) and "cityscapes-dataset.com" in str(e.value)
    build_cityscapes(tmp_path)
    next((tmp_path / "gtFine" / "train").rglob("*.png")).unlink()
    with pytest.raises(DatasetLayoutError, match="label file"):
        load_cityscapes(tmp_path, "train")


# ------------------------------------------------------------------------------------------ CamVid
def test_camvid(tmp_path):
    build_camvid(tmp_path / "CamVid")
    info, train = load_camvid(tmp_path, "train")                      # parent of CamVid/ accepted
    assert info.num_classes == 11 and info.classes[8:] == ["car", "pedestrian", "bicyclist"]
    assert info.moving == [8, 9, 10] and info.background == list(range(8))
    assert [(s.clip, s.frame) for s in train] == [("0001TP", 6690), ("0001TP", 6720)]
    item = SegmentationDataset(info, train)[0]
    lab = item["label"].numpy()
    assert lab[0, 0] == 255 and lab[1, 1] == 0 and lab[6, 3] == 8 and lab[10, 10] == 3
    assert set(np.flatnonzero(item["tags"].numpy())) == {0, 3, 8}
    assert frame_pairs(train) == [] and frame_pairs(train, max_gap=None) == [(0, 1)]
    _, tv = load_camvid(tmp_path / "CamVid", "trainval")
    assert len(tv) == 3
    assert parse_camvid_name("Seq05VD_f00930") == ("Seq05VD", 930)
    assert parse_camvid_name("0016E5_00390") == ("0016E5", 390)
    with pytest.raises(DatasetLayoutError, match="trainannot"):
        load_camvid(tmp_path / "nothing", "train")


# ------------------------------------------------------------------------------------------ YouTube-Objects
def test_youtube_objects(tmp_path):
    gts = build_youtube_objects(tmp_path)
    info, train = load_youtube_objects(tmp_path, "train", cache_dir=tmp_path / "cache")
    assert info.num_classes == 11 and info.classes[4] == "car" and info.classes[5] == "cat"
    assert len(train) == 5
    assert [s.clip for s in train] == ["car/0001"] * 3 + ["cat/0007"] * 2
    assert [s.frame for s in train] == [1, 2, 3, 1, 2]
    assert [s.label is None for s in train] == [True, False, True, False, True]
    assert all(s.tags == [0, 4] for s in train[:3]) and all(s.tags == [0, 5] for s in train[3:])
    lab = load_label(info, train[1])
    np.testing.assert_array_equal(lab, np.where(gts["car/0001/00002"] > 0, 4, 0))
    ds = SegmentationDataset(info, train)
    assert (ds[0]["label"] == 255).all()                             # no GT -> all ignore
    assert ds[0]["tags"].tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    _, test = load_youtube_objects(tmp_path, "test", cache_dir=tmp_path / "cache")
    assert [s.id for s in test] == ["car/0001/00002", "cat/0007/00001"]
    assert frame_pairs(train) == [(0, 1), (1, 2), (3, 4)]
    (tmp_path / "ImageSets").mkdir()
    (tmp_path / "ImageSets" / "cats.txt").write_text("cat/0007\n")
    _, cats = load_youtube_objects(tmp_path, "cats", cache_dir=tmp_path / "cache")
    assert len(cats) == 2
    (tmp_path / "ImageSets" / "evil.txt").write_text("cat/../../x\n")
    with pytest.raises((UnsafePathError, DatasetLayoutError)):
        load_youtube_objects(tmp_path, "evil", cache_dir=tmp_path / "cache")
    (tmp_path / "ImageSets" / "evil2.txt").write_text("car/../../../etc\n")
    with pytest.raises(UnsafePathError):
        load_youtube_objects(tmp_path, "evil2", cache_dir=tmp_path / "cache")


def test_youtube_objects_missing(tmp_path):
    with pytest.raises(DatasetLayoutError) as e:
        load_youtube_objects(tmp_path / "none")
    assert "<class>/frames/<video>/<frame>.jpg" in str(e.value) and "youtube-objects" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no <class>/frames"):
        load_youtube_objects(tmp_path / "empty")


# ------------------------------------------------------------------------------------------ registry
def test_registry_resolves_data_root(tmp_path, monkeypatch):
    build_voc(tmp_path / "voc")
    build_cityscapes(tmp_path / "cityscapes")
    build_camvid(tmp_path / "camvid")
    build_youtube_objects(tmp_path / "youtube_objects")
    monkeypatch.setenv("WSSS_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path
    counts = {}
    for name, split in (("voc", "train"), ("voc_aug", "train"), ("cityscapes", "val"), ("camvid", "test"),
                        ("youtube_objects", "test")):
        info, samples = load_dataset(name, None, split)              # default sub-folder of the data root
        _, again = load_dataset(name, tmp_path, split)              # the data root itself
        assert [s.id for s in again] == [s.id for s in samples]
        counts[name] = len(samples)
        fill_tags(info, samples)
        assert all(s.tags is not None for s in samples if s.label is not None)
    assert counts == {"voc": 2, "voc_aug": 4, "cityscapes": 1, "camvid": 1, "youtube_objects": 2}
    assert resolve_root("camvid", tmp_path / "camvid") == tmp_path / "camvid"
    with pytest.raises(Exception, match="unknown dataset"):
        load_dataset("imagenet", tmp_path)
    with pytest.raises(DatasetLayoutError):
        load_dataset("cityscapes", tmp_path / "nowhere")


def test_default_data_root_without_env(monkeypatch):
    monkeypatch.delenv("WSSS_DATA_ROOT", raising=False)
    root = default_data_root()
    assert root.name == "data"
