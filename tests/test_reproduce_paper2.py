"""``wsss reproduce paper2`` on a Cityscapes tree in the official layout (variable frame sizes,
``leftImg8bit_sequence`` neighbours for optical flow), tiny networks and steps, CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures_real import build_cityscapes_sized
from wsss_lib.cli import main
from wsss_lib.core.config import PRESETS, preset

SMALL = {"backbone": "small_vgg", "widths": [4, 8, 8, 8, 8], "depths": [1, 1, 1, 1, 1]}
# tiny paper-profile sizes: the pipeline's code paths at the paper's structure, seconds on a CPU
TINY_PAPER2 = {
    "paper2_classifier": {**SMALL, "pretrained": None, "last_stage": "conv3", "steps": 4, "batch_size": 4},
    "paper2_video_seg": {**SMALL, "head_width": 8, "head_dilation": 2, "motion_widths": [4, 4, 8, 8, 8],
                         "motion_depths": [1, 1, 1, 1, 1], "steps": 3, "batch_size": 2, "clips": {},
                         "image_size": {"cityscapes": [48, 96], "camvid": [48, 64]}},
}


@pytest.fixture(scope="module")
def cs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes_real")
    return root, build_cityscapes_sized(root, n_train=16, n_val=6)


def test_paper2_presets_have_every_toy_key():
    assert set(preset("streets_classifier")) <= set(preset("streets_classifier", profile="paper"))
    assert set(preset("video_seg")) <= set(preset("video_seg", profile="paper"))
    assert preset("video_seg", profile="paper")["backbone"] == "vgg16"
    assert PRESETS["paper2_classifier"]["default"]["pretrained"] == "imagenet"


def test_cityscapes_neighbours_and_their_flow(cs_root, tmp_path):
    """Each labelled frame's neighbour is frame+1 of leftImg8bit_sequence; its cached flow is
    non-zero on the moving car and ~zero on the static road."""
    from wsss_lib.data.registry import dataset_fingerprint, load_dataset, load_label
    from wsss_lib.engine.shard import FlowCache, compute_dataset_flow

    root, info = cs_root
    ds_info, samples = load_dataset("cityscapes", root, "train")
    assert all(s.neighbor is not None and s.neighbor_offset == 1 and s.neighbor.name.endswith("_000020_leftImg8bit.png")
               for s in samples)
    assert dataset_fingerprint("cityscapes", root) == "seq"
    cache = FlowCache(tmp_path / "flow", "cityscapes", data_version="seq")
    res = compute_dataset_flow(samples[:2], cache, progress=False)
    assert res["computed"] == 2 and res["zero_flow"] == 0
    flow = cache.load(samples[0].id)
    lab = load_label(ds_info, samples[0])
    car, road = lab == ds_info.classes.index("car"), lab == ds_info.classes.index("road")
    assert flow.shape[:2] == lab.shape
    assert np.median(flow[car, 0]) > 3.0 and np.abs(np.median(flow[road, 0])) < 1.0


def test_reproduce_paper2_end_to_end_and_resumes(cs_root, tmp_path, patch_presets, capsys):
    root, info = cs_root
    patch_presets(TINY_PAPER2)
    out = tmp_path / "out"
    argv = ["reproduce", "paper2", "--dataset", "cityscapes", "--data-root", str(root), "--out", str(out),
            "--device", "cpu", "--no-progress", "--pretrained", "none"]
    assert main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("reproduce_paper2.md")
    res = json.loads((out / "reproduce_paper2.json").read_text())
    assert [r["kind"] for r in res["rows"]] == ["appearance", "two_stream"]
    for r in res["rows"]:
        for k in ("miou", "bg_miou", "fg_miou", "moving_miou"):
            assert 0.0 <= r[k] <= 1.0, (r, k)
    m = res["metrics"]
    assert m["data"]["train"]["frames"] == 16 and m["data"]["test"]["frames"] == 6
    assert m["data"]["test"]["source_split"] == "val" and m["data"]["train"]["zero_flow"] == 0
    assert res["config"]["profile"] == "paper" and res["config"]["test_split"] == "val"
    md = (out / "reproduce_paper2.md").read_text()
    assert "two-stream − appearance" in md and "official **val**" in md
    flow_files = sorted((root / "cache" / "flow" / "cityscapes").glob("*/*.npz"))
    assert len(flow_files) == 16 + 6
    # a second run loads every model (nothing retrained, no flow recomputed) and gives the same table
    stamp = {p: p.stat().st_mtime_ns for p in flow_files}
    assert main(argv) == 0
    again = json.loads((out / "reproduce_paper2.json").read_text())
    assert again["metrics"]["classifier"]["trained_now"] is False
    assert not any(t["trained_now"] for t in again["metrics"]["trained"].values())
    # the same weights; the just-trained model may differ from the reloaded one in memory layout
    # (channels_last on CPU), so scores agree up to float rounding
    assert [r["miou"] for r in again["rows"]] == pytest.approx([r["miou"] for r in res["rows"]], abs=1e-4)
    assert stamp == {p: p.stat().st_mtime_ns for p in flow_files}


def test_reproduce_paper2_without_sequences_is_one_error(tmp_path, patch_presets, capsys):
    patch_presets(TINY_PAPER2)
    root = tmp_path / "cs"
    build_cityscapes_sized(root, n_train=2, n_val=2, heights=(60, 60), sequence=False)
    rc = main(["reproduce", "paper2", "--data-root", str(root), "--out", str(tmp_path / "o"), "--device", "cpu",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "leftImg8bit_sequence" in err and len(err.strip().splitlines()) == 1


def test_reproduce_wrong_dataset_for_paper(tmp_path, capsys):
    rc = main(["reproduce", "paper2", "--dataset", "voc_aug", "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 2 and "cityscapes or camvid" in capsys.readouterr().err
