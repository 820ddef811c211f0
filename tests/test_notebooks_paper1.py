"""Paper 1 notebooks (01-04, and the data check of 00) in quick mode: assert on the metrics they record.

The ``quick_run`` fixture (conftest.py) executes every notebook once per session through
``wsss run --quick``; these tests read ``<out>/metrics/<notebook>.json`` and check (a) the paper's
*directions* as orderings with margins (quick mode uses subsets and few steps, so these are not the
default-run targets of the README) and (b) that the recorded numbers are what the library computes
from the executed notebooks' own inputs: the classifier, masks and segmentation nets the run left in
its output folder are loaded (never retrained: a config mismatch between notebook and library fails
the test) and scored again.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsss_lib.core.config import preset
from wsss_lib.papers.common import make_context
from wsss_lib.ops.crf import CRFParams

TOL = 2e-3  # same computation, another process (thread count): a few boundary pixels may flip


def _finite(d):
    for k, v in d.items():
        if isinstance(v, dict):
            _finite(v)
        elif isinstance(v, float):
            assert math.isfinite(v), k


@pytest.fixture(scope="module")
def run(quick_run_dir, quick_run):
    """The quick run's paper-1 context and its tag classifier, loaded from the run's checkpoint."""
    from wsss_lib.papers import paper1 as P

    ctx = make_context(None, quick_run_dir, "cpu", quick=True, seed=0, dataset="toy_objects")
    clf, info = P.get_tag_classifier(ctx, progress=False)
    assert info["trained"] is False, "the notebook's classifier checkpoint did not match the library's config"
    return ctx, clf


@pytest.fixture(scope="module")
def cam(run):
    from wsss_lib.papers import paper1 as P

    ctx, _ = run
    out = P.cam_baseline(ctx)  # the run's CAM classifier (GAP + linear), loaded, never retrained
    return out


@pytest.fixture(scope="module")
def masks(run):
    from wsss_lib.papers import paper1 as P

    ctx, clf = run
    return P.mask_pipeline(ctx, clf)  # the run's cached maps and CRF masks


def test_01_classifier_learns_tags(quick_run, run):
    from wsss_lib.engine.predict import evaluate_classifier
    from wsss_lib.papers import paper1 as P

    m = quick_run["01_tags_classifier"]
    _finite(m)
    # chance mAP ~ the classes' share of images (~0.3)
    assert m["map_test"] > 0.38
    assert m["map_val"] > 0.38
    ctx, clf = run
    test = P.load_split(ctx, "test")
    ev = evaluate_classifier(clf, test, classes=test.info.foreground, device="cpu")
    assert m["map_test"] == pytest.approx(ev["map"], abs=TOL)
    names = [test.info.classes[k] for k in test.info.foreground]
    assert set(m["ap_test"]) == set(names)
    assert [m["ap_test"][n] for n in names] == pytest.approx(list(ev["ap"]), abs=TOL)
    assert 0 <= m["acc_test"] <= 1 and m["acc_test"] == pytest.approx(ev["acc"], abs=TOL)


def test_02_fused_prior_beats_cam_and_floor(quick_run, run, masks, cam):
    from wsss_lib.papers import paper1 as P

    m = quick_run["02_fgbg_masks"]
    _finite(m)
    assert m["mask_iou_fused"] > m["mask_iou_cam"]
    assert m["mask_iou_fused"] > m["mask_iou_floor"] + 0.05
    assert m["mask_precision_fused"] > m["mask_iou_floor"]  # the floor's precision = fg share
    assert m["mask_iou_fused_paper_layers"] > m["mask_iou_cam"]  # the paper's own layers beat CAM too
    assert m["mask_iou_fused"] > m["mask_iou_cam_head"]  # ... and the class maps of the very same network
    # recomputed from the run's own maps: thresholds chosen on VAL, scores on TEST
    ctx, _ = run
    th = P.choose_thresholds(ctx, masks["maps"]["val"])
    assert m["threshold_fused"] == pytest.approx(th["fused"]) and m["threshold_cam_head"] == pytest.approx(th["cam"])
    assert m["threshold_cam"] == pytest.approx(cam["threshold"])
    assert m["threshold_fused"] in preset("masks", True)["thresholds"]
    test = masks["scores"]["test"]
    assert m["mask_iou_fused"] == pytest.approx(test["fused"]["iou"], abs=TOL)
    assert m["mask_iou_cam_head"] == pytest.approx(test["cam"]["iou"], abs=TOL)
    assert m["mask_iou_cam"] == pytest.approx(cam["scores"]["test"]["cam"]["iou"], abs=TOL)
    # Zhou's layout: image logits are the spatial mean of the class maps (GAP + linear)
    assert cam["classifier"].pooling == "mean" and cam["classifier"].hidden == 0
    assert m["mask_iou_floor"] == pytest.approx(test["floor"]["iou"], abs=1e-9)
    assert all(0 < v < 1 for v in m["val_iou_by_variant"].values())


def test_03_crf_improves_the_mask(quick_run, run, masks, cam):
    from wsss_lib.ops.masks import evaluate_masks, refine_masks
    from wsss_lib.papers import paper1 as P

    m = quick_run["03_dense_crf"]
    _finite(m)
    assert m["mask_iou_crf"] >= m["mask_iou_raw"]
    # prior vs CAM like for like (raw vs raw, CRF vs CRF)
    assert m["prior_minus_cam_raw"] > 0.10 and m["prior_minus_cam_crf"] > 0.10
    assert m["prior_minus_cam_raw"] == pytest.approx(m["mask_iou_raw"] - m["mask_iou_cam"])
    assert m["prior_minus_cam_crf"] == pytest.approx(m["mask_iou_crf"] - m["mask_iou_cam_crf"])
    assert m["mask_iou_cam_crf"] == pytest.approx(cam["scores"]["test"]["cam_crf"]["iou"], abs=TOL)
    assert m["mask_iou_crf"] > m["mask_iou_floor"]
    assert m["mask_iou_crf_paper_layers"] > m["mask_iou_cam"]
    # the notebook's CRF is the configured default, and its scores are the pipeline's
    assert CRFParams(**m["crf_params"]) == CRFParams()
    test = masks["scores"]["test"]
    assert m["mask_iou_raw"] == pytest.approx(test["fused"]["iou"], abs=TOL)
    assert m["mask_iou_crf"] == pytest.approx(test["fused_crf"]["iou"], abs=TOL)
    # the CRF masks are a function of the image and the fused map: redo the first images directly
    ctx, _ = run
    ds = P.load_split(ctx, "test")
    k = 8
    q = refine_masks(ds.uint8_images()[:k], masks["maps"]["test"]["fused"][:k], m["threshold_fused"], CRFParams(),
                     workers=1)
    agree = ((q >= 0.5) == (masks["crf"]["test"][:k] >= 0.5)).mean()
    assert agree > 0.999
    assert evaluate_masks(q >= 0.5, ds.labels[:k].long())["iou"] == pytest.approx(
        evaluate_masks(masks["crf"]["test"][:k] >= 0.5, ds.labels[:k].long())["iou"], abs=TOL)
    # VAL decides the setting: the default must not be worse on VAL than no CRF at all
    assert all(0 < v < 1 for v in m["val_iou_by_setting"].values())
    assert m["val_iou_by_setting"]["ours (default)"] >= m["val_iou_by_setting"]["no CRF (threshold on VAL)"]


@pytest.fixture(scope="module")
def segnets(run):
    from wsss_lib.papers import paper1 as P

    ctx, _ = run
    return P.load_trained_segnets(ctx)


def test_04_prior_beats_tags_only(quick_run, run, segnets):
    from wsss_lib.papers import paper1 as P

    m = quick_run["04_weak_training"]
    _finite(m)
    assert m["miou_prior"] > m["miou_tags"] + 0.03
    assert m["miou_full"] > m["miou_tags"]
    assert m["prior_over_full"] >= 0.7
    for k in ("tags", "prior", "full", "checkmask"):
        assert 0 < m[f"miou_{k}"] < 1 and 0 < m[f"miou_{k}_crf"] < 1
    # recomputed: the run's own checkpoints, scored again on TEST (no CRF: the recorded raw mIoU)
    ctx, _ = run
    info = P.load_split(ctx, "test").info
    for k in ("tags", "prior", "full"):
        res = P.evaluate_segnet(ctx, segnets[k], "test", crf=False)
        assert m[f"miou_{k}"] == pytest.approx(res["miou"], abs=TOL), k
        assert set(m["iou_per_class"][k]) == set(info.classes)
    assert m["prior_over_full"] == pytest.approx(m["miou_prior"] / m["miou_full"])


def test_04_checkmask_bookkeeping(quick_run, run, segnets):
    from wsss_lib.ops.masks import per_image_iou
    from wsss_lib.papers import paper1 as P

    m = quick_run["04_weak_training"]
    assert 0 < m["checkmask_accept_rate"] < 1
    assert m["train_mask_iou_accepted"] > m["train_mask_iou"]  # the check keeps the better masks
    # the clicks and the acceptance, recomputed from the run's train masks and a simulated annotator
    ctx, clf = run
    train = P.load_split(ctx, "train")
    tm = P.train_masks(ctx, clf)
    assert m["checkmask_clicks"] == len(train)
    iou = per_image_iou(tm.numpy() >= 0.5, train.labels.long().numpy())
    assert m["checkmask_accept_rate"] == pytest.approx(float(np.mean(iou > preset("seg", True)["tau"])), abs=1e-9)
    res = P.evaluate_segnet(ctx, segnets["checkmask"], "test", crf=False)
    assert m["miou_checkmask"] == pytest.approx(res["miou"], abs=TOL)


def test_00_textured_variant_takes_texture_energy_away(quick_run):
    """Notebook 00 draws the same images with and without object-textured clutter: the texture-energy map's
    best (oracle-threshold) foreground IoU must fall clearly on the variant -- the reason the variant exists --
    while staying above the all-foreground floor (~0.2) on the plain data, where texture does find objects."""
    m = quick_run["00_toy_data"]
    plain, textured = m["lowlevel_fg_iou_plain"], m["lowlevel_fg_iou_textured"]
    assert 0.3 < plain < 0.8, plain
    assert textured < plain - 0.05, (plain, textured)
