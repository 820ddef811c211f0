"""Paper 1 notebooks (01-04) in quick mode: assert on the metrics they record.

The ``quick_run`` fixture (conftest.py) executes every notebook once per session through
``wsss run --quick``; these tests only read ``<out>/metrics/<notebook>.json``. Quick mode uses
subsets and few steps, so the thresholds are the paper's *directions* with margins, not the
default-run targets (those are reported in the README / results of a default run).
"""

from __future__ import annotations

import math

import pytest


def _finite(d):
    for k, v in d.items():
        if isinstance(v, dict):
            _finite(v)
        elif isinstance(v, float):
            assert math.isfinite(v), k


def test_01_classifier_learns_tags(quick_run):
    m = quick_run["01_tags_classifier"]
    assert m["quick"] is True
    _finite(m)
    # chance mAP ~ the classes' share of images (~0.3)
    assert m["map_test"] > 0.38
    assert set(m["ap_test"]) == {"disc", "box", "triangle", "ring", "star", "cross"}


def test_02_fused_prior_beats_cam_and_floor(quick_run):
    m = quick_run["02_fgbg_masks"]
    _finite(m)
    assert m["mask_iou_fused"] > m["mask_iou_cam"]
    assert m["mask_iou_fused"] > m["mask_iou_floor"] + 0.05
    assert m["mask_precision_fused"] > m["mask_iou_floor"]  # the floor's precision = fg share
    assert 0 < m["threshold_fused"] < 1 and 0 < m["threshold_cam"] < 1
    assert "conv4+conv5 mean [summary]" in m["val_iou_by_variant"]
    assert m["mask_iou_fused_paper_layers"] > m["mask_iou_cam"]  # the paper's own layers beat CAM too


def test_03_crf_improves_the_mask(quick_run):
    m = quick_run["03_dense_crf"]
    _finite(m)
    assert m["mask_iou_crf"] >= m["mask_iou_raw"]
    assert m["crf_gain"] == pytest.approx(m["mask_iou_crf"] - m["mask_iou_raw"])
    assert m["mask_iou_crf"] > m["mask_iou_cam"] + 0.10
    assert m["mask_iou_crf"] > m["mask_iou_floor"]
    assert "DeepLab 80/13/10" in m["val_iou_by_setting"]
    assert m["mask_iou_crf_paper_layers"] > m["mask_iou_cam"]


def test_04_prior_beats_tags_only(quick_run):
    m = quick_run["04_weak_training"]
    _finite(m)
    assert m["miou_prior"] > m["miou_tags"] + 0.03
    assert m["miou_full"] > m["miou_tags"]
    assert m["prior_over_full"] >= 0.7
    for k in ("tags", "prior", "full", "checkmask"):
        assert 0 < m[f"miou_{k}"] < 1 and 0 < m[f"miou_{k}_crf"] < 1
        assert set(m["iou_per_class"][k]) >= {"background", "disc", "cross"}


def test_04_checkmask_bookkeeping(quick_run):
    m = quick_run["04_weak_training"]
    assert m["checkmask_clicks"] > 0
    assert 0 < m["checkmask_accept_rate"] < 1
    assert m["train_mask_iou_accepted"] > m["train_mask_iou"]  # the check keeps the better masks
    assert m["checkmask_gain"] == pytest.approx(m["miou_checkmask"] - m["miou_prior"])
