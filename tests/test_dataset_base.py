"""The dataset contract (wsss_lib.data.base): tensors, validation, skip-and-report, safe paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wsss_lib.data.base import DatasetInfo, Sample, SegmentationDataset, safe_join
from wsss_lib.core.io import to_uint8_image
from wsss_lib.core.errors import CorruptFileError, InvalidInputError, UnsafePathError
from wsss_lib.core.io import write_image, write_label

INFO = DatasetInfo("t", ["background", "a", "b"], background=[0])


def _pair(tmp_path, name, h=12, w=10, label=None, mode="RGB"):
    rng = np.random.default_rng(len(name))
    img = Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).convert(mode)
    ip = tmp_path / f"{name}.png"
    img.save(ip)
    lab = np.zeros((h, w), np.uint8) if label is None else label
    lp = write_label(tmp_path / f"{name}_l.png", lab)
    return Sample(name, ip, lp)


def test_sample_dict_shapes_and_tags(tmp_path):
    lab = np.zeros((12, 10), np.uint8)
    lab[2:5, 2:5] = 2
    lab[0, 0] = 255
    ds = SegmentationDataset(INFO, [_pair(tmp_path, "x", label=lab)])
    it = ds[0]
    assert it["image"].shape == (3, 12, 10) and it["image"].dtype == torch.float32
    assert 0 <= it["image"].min() and it["image"].max() <= 1
    assert it["label"].dtype == torch.int64 and it["label"][0, 0] == 255
    assert it["tags"].tolist() == [1.0, 0.0, 1.0]
    assert it["clip"] == "" and it["frame"] == -1


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_image_modes_are_converted(tmp_path, mode):
    ds = SegmentationDataset(INFO, [_pair(tmp_path, "m", mode=mode)])
    assert ds[0]["image"].shape == (3, 12, 10)


def test_resize_keeps_labels_integral(tmp_path):
    lab = np.zeros((12, 10), np.uint8)
    lab[:6] = 1
    ds = SegmentationDataset(INFO, [_pair(tmp_path, "r", label=lab)], size=(24, 20))
    it = ds[0]
    assert it["image"].shape == (3, 24, 20) and set(it["label"].unique().tolist()) <= {0, 1}


def test_tiny_and_huge_images(tmp_path):
    tiny = _pair(tmp_path, "tiny", h=8, w=8)
    huge_p = tmp_path / "huge.jpg"
    write_image(huge_p, np.zeros((4000, 6000, 3), np.uint8))
    ds = SegmentationDataset(INFO, [tiny, Sample("huge", huge_p)], size=(32, 32))
    assert ds[0]["image"].shape == (3, 32, 32) and ds[1]["image"].shape == (3, 32, 32)
    assert (ds[1]["label"] == 255).all()  # no GT -> all ignore


def test_size_mismatch_and_bad_values_are_named(tmp_path):
    s = _pair(tmp_path, "mis")
    write_label(s.label, np.zeros((5, 5), np.uint8))
    with pytest.raises(CorruptFileError, match="mis_l.png.*5x5.*10x12"):
        SegmentationDataset(INFO, [s])[0]
    bad = _pair(tmp_path, "bad", label=np.full((12, 10), 7, np.uint8))
    with pytest.raises(CorruptFileError, match=r"values \[7\]"):
        SegmentationDataset(INFO, [bad])[0]


def test_corrupt_file_raise_or_skip_and_report(tmp_path):
    good = _pair(tmp_path, "good")
    broken = _pair(tmp_path, "broken")
    broken.image.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(CorruptFileError, match="broken.png"):
        SegmentationDataset(INFO, [broken, good])[0]
    ds = SegmentationDataset(INFO, [broken, good], on_error="skip")
    assert ds[0]["id"] == "good"
    assert len(ds.skipped) == 1 and "broken.png" in ds.skipped[0]


def test_image_without_tags(tmp_path):
    s = _pair(tmp_path, "nt")
    s.tags = []
    assert SegmentationDataset(INFO, [s])[0]["tags"].sum() == 0


def test_bad_arguments():
    with pytest.raises(InvalidInputError):
        SegmentationDataset(INFO, [])
    with pytest.raises(InvalidInputError):
        SegmentationDataset(INFO, [Sample("a", "a.png")], on_error="ignore")


@pytest.mark.parametrize("entry", ["../etc/passwd", "/etc/passwd", "a/../../x", ""])
def test_safe_join_refuses_escapes(tmp_path, entry):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, entry)


def test_safe_join_accepts_inside(tmp_path):
    assert safe_join(tmp_path, "a/b.jpg") == (tmp_path / "a" / "b.jpg").resolve()


def test_to_uint8_image_noncontiguous():
    x = torch.rand(3, 8, 6).transpose(1, 2)  # non-contiguous view
    arr = to_uint8_image(x)
    assert arr.shape == (6, 8, 3) and arr.flags.c_contiguous and arr.dtype == np.uint8
