"""The notebooks on real-data trees in the official layouts (VOC-like variable sizes), through papermill
in quick mode: 01-04 on VOC 2012 + SBD, 05-07 on Cityscapes with its ``leftImg8bit_sequence``
neighbours, sized by the notebooks' own parameters (``real_subset``, ``clips``, ``frame_size``)."""

from __future__ import annotations

import json

import pytest

from fixtures_real import build_cityscapes_sized, build_voc_sized
from wsss_lib.runner import run_notebooks

VOC_SUBSET = {"n_train": 12, "n_val": 4, "n_test": 6, "image_size": [48, 48]}
CS_CLIPS = {"train": 12, "val": 4, "test": 4}


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebooks_real")
    build_voc_sized(root / "voc", n_voc_train=10, n_sbd_only=8, n_val=8, sizes=(200, 400))
    build_cityscapes_sized(root / "cs", n_train=12, n_val=6)
    runs = {}
    for key, only, params in (
            ("voc", ["01", "02", "03", "04"], {"dataset": "voc_aug", "data_root": str(root / "voc"),
                                               "real_subset": VOC_SUBSET}),
            ("cs", ["05", "06", "07"], {"dataset": "cityscapes", "data_root": str(root / "cs"), "clips": CS_CLIPS,
                                        "frame_size": [48, 96], "kinds": ["appearance", "two_stream"]})):
        out = root / f"out_{key}"
        status = run_notebooks(out, quick=True, only=only, params=params, device="cpu", html=False, keep_going=True)
        runs[key] = {"status": status, "out": out,
                     "metrics": json.loads((out / "results.json").read_text())["metrics"]}
    return runs


@pytest.mark.parametrize("key", ["voc", "cs"])
def test_notebooks_run_on_real_trees(real_runs, key):
    run = real_runs[key]
    failed = {name: r.error for name, r in run["status"].items() if r.status != "ok"}
    assert not failed, failed
    for name in run["status"]:
        assert run["metrics"].get(name), f"{name} recorded no metrics"
        assert list((run["out"] / "figures").glob(f"{name}_*.png")), f"{name} saved no figure"


def test_paper1_notebooks_use_the_subset_and_score_in_range(real_runs):
    m = real_runs["voc"]["metrics"]
    assert 0 <= m["01_tags_classifier"]["map_test"] <= 1
    assert 0 <= m["02_fgbg_masks"]["mask_iou_fused"] <= 1 and 0 <= m["03_dense_crf"]["mask_iou_crf"] <= 1
    assert all(0 <= m["04_weak_training"][f"miou_{k}"] <= 1 for k in ("prior", "tags", "full", "checkmask"))


def test_paper2_notebooks_see_the_sequence_motion(real_runs):
    m = real_runs["cs"]["metrics"]
    flow = m["06_optical_flow"]
    # Cityscapes' pipeline "test" and "val" both read its official val split (test labels are not public)
    assert flow["frames"] == CS_CLIPS  # one labelled frame per clip
    assert flow["cache_hit_computed"] == 0  # the second call reads the cache
    # the fixture's car and person move 6 px per frame, the rest stands still: the flow to the sequence
    # neighbour must single them out
    assert flow["moving_auc"] > 0.8, flow["moving_auc"]
    assert 0 <= m["05_classifier_heatmaps"]["classifier_map"] <= 1
