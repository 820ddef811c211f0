"""Video data, supervision, losses, training entry points and the bg/fg/moving evaluation split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsss_lib.data.base import DatasetInfo
from wsss_lib.core.errors import InvalidInputError
from wsss_lib.models.classifier import build_heatmap_classifier
from wsss_lib.ops.losses import region_loss
from wsss_lib.core.metrics import ConfusionMatrix
from wsss_lib.engine.train import InMemoryDataset
from wsss_lib.papers.video import (KINDS, binary_auc, build_video_model, compute_fgbg_masks, compute_regions,
                                   evaluate_predictions, evaluate_video, fg_binary_labels, hflip_video_batch,
                                   load_video_data, motion_statistics, predict_video, pseudo_label_scores,
                                   single_bg_label_map, train_video_model, video_loss_step, video_scores)

SMALL = dict(widths=[4, 8, 8, 8, 8], depths=[1, 1, 1, 1, 1], head="linear", head_width=8, head_dilation=1,
             motion_widths=[4, 4, 4, 4, 4])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 48x64 ToyStreets (2 train clips, 1 val, 1 test, 3 frames each) with cached flow."""
    from wsss_lib.data.toy_streets import ensure_toy_streets, load_toy_streets
    from wsss_lib.engine.shard import FlowCache, compute_dataset_flow
    from wsss_lib.ops.flow import FlowParams

    root = tmp_path_factory.mktemp("streets")
    ensure_toy_streets(root / "toy", size=(48, 64), frames=3, n_train=2, n_val=1, n_test=1, workers=1)
    cache = FlowCache(root / "flow", "toy_streets", FlowParams(method="dis"))
    out = {"samples": {}, "cache": cache}
    for split in ("train", "val", "test"):
        info, samples = load_toy_streets(root / "toy", split)
        compute_dataset_flow(samples, cache, progress=False)
        out[split] = load_video_data(info, samples, flow_cache=cache)
        out["samples"][split] = samples
    out["info"] = info
    return out


def test_load_video_data_shapes(tiny):
    ds, info = tiny["train"], tiny["info"]
    assert len(ds) == 6 and ds.images.shape == (6, 3, 48, 64) and ds.images.dtype == torch.uint8
    assert ds.extra["flow"].shape == (6, 3, 48, 64) and ds.extra["flow"].dtype == torch.uint8
    assert ds.tags.shape == (6, info.num_classes)
    b = ds.get_batch([0, 1])
    assert b["flow"].shape == (2, 3, 48, 64)


def test_load_video_data_resizes_flow(tiny):
    info, samples, cache = tiny["info"], tiny["samples"]["train"], tiny["cache"]
    full = tiny["train"].extra["flow"].float()
    half = load_video_data(info, samples, size=(24, 32), flow_cache=cache)
    assert half.images.shape == (6, 3, 24, 32) and half.extra["flow"].shape == (6, 3, 24, 32)
    # same scale relative to the frame: a resized flow image looks like a resized full-size one
    down = torch.nn.functional.interpolate(full, size=(24, 32), mode="bilinear", align_corners=False)
    assert (half.extra["flow"].float()[:, :2] - down[:, :2]).abs().mean() < 12


def test_hflip_mirrors_flow_x(tiny):
    torch.manual_seed(0)
    b = tiny["train"].get_batch(np.arange(6))
    b["regions"] = torch.zeros(6, 8, 48, 64, dtype=torch.uint8)
    out = hflip_video_batch(b)
    flipped = [i for i in range(6) if not torch.equal(out["image"][i], b["image"][i])]
    assert flipped
    i = flipped[0]
    assert torch.equal(out["image"][i], b["image"][i].flip(-1))
    assert torch.equal(out["flow"][i, 0], 255 - b["flow"][i, 0].flip(-1))
    assert torch.equal(out["flow"][i, 1], b["flow"][i, 1].flip(-1))
    assert torch.equal(out["label"][i], b["label"][i].flip(-1))


def _info3():
    return DatasetInfo("t", ["road", "sky", "car"], background=[0, 1], moving=[2])


def test_region_loss_hand_built_value_through_loss_step():
    """Uniform logits: every present class pools S = 1/C (-> log C), every absent class has
    max S = 1/C (-> -log(1 - 1/C)); the loss is their sum."""
    info = _info3()
    C = 3
    step = video_loss_step("appearance", info.foreground, augment=False)

    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], C, 4, 4)

    regions = torch.zeros(1, C, 8, 8, dtype=torch.uint8)
    regions[0, 0, :4] = 255
    regions[0, 1, 4:] = 255
    batch = {"image": torch.zeros(1, 3, 8, 8), "tags": torch.tensor([[1.0, 1.0, 0.0]]), "regions": regions}
    loss = step(Const(), batch, torch.device("cpu"))
    assert math.isclose(float(loss), math.log(C) - math.log(1 - 1 / C), rel_tol=1e-5)


def test_region_loss_rewards_the_right_region():
    regions = torch.zeros(1, 3, 4, 4)
    regions[0, 0, :2] = 1
    regions[0, 1, 2:] = 1
    present = torch.tensor([[1.0, 1.0, 0.0]])
    good = torch.full((1, 3, 4, 4), -5.0)
    good[0, 0, :2] = 5
    good[0, 1, 2:] = 5
    bad = torch.full((1, 3, 4, 4), -5.0)
    bad[0, 1, :2] = 5
    bad[0, 0, 2:] = 5
    assert float(region_loss(good, regions, present)) < 0.05 < 5.0 < float(region_loss(bad, regions, present))


def test_flow_settings_key_only_the_two_stream_checkpoint():
    """Changing how flow is made retrains the two-stream model (its checkpoint config carries the
    flow settings) but not the flow-free models or the classifier."""
    from wsss_lib.data.toy_streets import toy_streets_info
    from wsss_lib.papers.paper2 import _data_id

    streets = {"info": toy_streets_info(), "samples": {"train": [0, 1]},
               "flow_config": {"method": "farneback", "subtract": "median"}}
    other = {**streets, "flow_config": {"method": "dis", "subtract": "median"}}
    assert _data_id(streets, flow=True) != _data_id(other, flow=True)
    assert _data_id(streets) == _data_id(other) and "flow" not in _data_id(streets)


@pytest.mark.parametrize("kind", ["appearance", "two_stream"])
def test_output_stride_option_reaches_both_streams(tiny, kind):
    info = tiny["info"]
    model = build_video_model(kind, info, **{**SMALL, "output_stride": 4}).eval()
    assert model.output_stride == 4
    x = torch.rand(1, 3, 48, 64)
    out = model(x, torch.rand(1, 3, 48, 64)) if kind == "two_stream" else model(x)
    assert out.shape == (1, info.num_classes, 12, 16)


@pytest.mark.parametrize("kind", KINDS)
def test_build_and_train_each_kind(tiny, kind, tmp_path):
    info = tiny["info"]
    torch.manual_seed(0)
    model = build_video_model(kind, info, **SMALL)
    n_out = len(info.foreground) + 1 if kind == "single_bg" else info.num_classes
    ds = tiny["train"]
    regions = torch.zeros(len(ds), info.num_classes, 48, 64, dtype=torch.uint8)
    regions[:, 3, 24:] = 255
    masks = torch.zeros(len(ds), 48, 64, dtype=torch.float16)
    hist = train_video_model(kind, model, ds, info, regions=regions, fg_masks=masks, steps=2, batch_size=2,
                             device="cpu", progress=False, checkpoint_path=tmp_path / f"{kind}.pt", amp=False)
    assert len(hist["loss"]) == 2 and all(np.isfinite(hist["loss"]))
    pred = predict_video(model, tiny["test"], batch_size=2)
    assert pred.shape == (3, 48, 64) and int(pred.max()) < n_out
    lm = single_bg_label_map(info, ds.labels) if kind == "single_bg" else None
    res = evaluate_video(model, tiny["test"], info, label_map=lm, oracle_bg=kind == "single_bg")
    for key in ("miou", "bg_miou", "fg_miou", "moving_miou", "iou", "pixel_acc"):
        assert key in res
    if kind == "single_bg":
        assert res["oracle_bg"]["bg_miou"] >= res["bg_miou"] - 1e-9


def test_train_video_model_missing_supervision_raises(tiny):
    info = tiny["info"]
    m = build_video_model("appearance", info, **SMALL)
    with pytest.raises(InvalidInputError, match="regions"):
        train_video_model("appearance", m, tiny["train"], info, steps=1)
    with pytest.raises(InvalidInputError, match="fg_masks"):
        train_video_model("single_bg", build_video_model("single_bg", info, **SMALL), tiny["train"], info, steps=1)
    with pytest.raises(InvalidInputError):
        build_video_model("three_stream", info)
    with pytest.raises(InvalidInputError):
        build_video_model("appearance", info, bogus=1)
    noflow = InMemoryDataset(tiny["train"].images, tiny["train"].labels, tiny["train"].tags)
    with pytest.raises(InvalidInputError, match="flow"):
        train_video_model("two_stream", build_video_model("two_stream", info, **SMALL), noflow, info,
                          regions=torch.zeros(6, 8, 48, 64, dtype=torch.uint8), steps=1)


def test_compute_regions_and_fgbg_masks(tiny):
    info = tiny["info"]
    torch.manual_seed(0)
    clf = build_heatmap_classifier(info.num_classes, last_stage="conv3", widths=(4, 8, 8, 8, 8),
                                   depths=(1, 1, 1, 1, 1)).eval()
    reg = compute_regions(clf, tiny["train"], batch_size=4)
    assert reg.shape == (6, info.num_classes, 48, 64) and reg.dtype == torch.uint8
    untagged = tiny["train"].tags < 0.5
    assert reg[untagged].max() == 0  # no region for an untagged class
    assert int(reg.float().div(255).sum(1).max()) <= 1
    sc = pseudo_label_scores(reg, tiny["train"].labels, info)
    assert 0 <= sc["coverage"] <= 1 and "bg_miou" in sc
    fg = compute_fgbg_masks(clf, tiny["train"], layers=("conv3",), val_ds=tiny["val"], background=info.background)
    assert fg["masks"].shape == (6, 48, 64) and set(fg["masks"].unique().tolist()) <= {0.0, 1.0}
    assert 0 < fg["threshold"] < 1


def test_evaluation_split_into_bg_fg_moving():
    info = _info3()
    target = torch.tensor([[[0, 0, 1, 1, 2, 2]]])
    pred = torch.tensor([[[0, 0, 1, 0, 2, 1]]])
    res = evaluate_predictions(pred, target, info)
    # IoU road = 2/3, sky = 1/3, car = 1/2
    assert math.isclose(res["iou"]["road"], 2 / 3) and math.isclose(res["iou"]["sky"], 1 / 3)
    assert math.isclose(res["bg_miou"], 0.5) and math.isclose(res["fg_miou"], 0.5)
    assert math.isclose(res["moving_miou"], 0.5) and math.isclose(res["miou"], (2 / 3 + 1 / 3 + 0.5) / 3)
    cm = ConfusionMatrix(3).update(target, pred)
    assert video_scores(cm, info)["miou"] == res["miou"]


def test_single_bg_label_map_and_fg_binary():
    info = _info3()
    labels = torch.tensor([[[1, 1, 1, 0, 2, 255]]])
    lm = single_bg_label_map(info, labels)
    assert lm.tolist() == [1, 2]  # sky is the most frequent bg class; then the fg classes
    assert fg_binary_labels(labels, info.background).tolist() == [[[0, 0, 0, 0, 1, 255]]]


def test_motion_statistics_and_auc(tiny):
    assert math.isclose(binary_auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1])), 1.0)
    assert math.isclose(binary_auc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])), 0.5)
    st = motion_statistics(tiny["train"], tiny["info"])
    assert 0 <= st["moving_auc"] <= 1 and set(st["mean_magnitude"]) == set(tiny["info"].classes)
