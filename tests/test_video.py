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
from wsss_lib.core.metrics import ConfusionMatrix, binary_auc
from wsss_lib.engine.train import InMemoryDataset
from wsss_lib.ops.flow import encode_flow
from wsss_lib.core.io import to_uint8
from wsss_lib.papers.video import (FLOW_CONTROLS, KINDS, base_kind, build_video_model, compute_fgbg_masks,
                                   compute_regions, derangement, evaluate_predictions, evaluate_video,
                                   fg_binary_labels, flow_control, hflip_video_batch, load_video_data,
                                   motion_statistics, oracle_bg_prediction, predict_video, pseudo_label_scores,
                                   single_bg_label_map, train_video_model, uses_flow, video_loss_step, video_scores)

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
    ds = flow_control(ds, kind, tiny["samples"]["train"], seed=0)  # the controls train on their flow control
    test = flow_control(tiny["test"], kind, tiny["samples"]["test"], seed=0) if kind != "two_stream_shuffled_flow" \
        else tiny["test"]  # one test clip: nothing to shuffle with
    hist = train_video_model(kind, model, ds, info, regions=regions, fg_masks=masks, steps=2, batch_size=2,
                             device="cpu", progress=False, checkpoint_path=tmp_path / f"{kind}.pt", amp=False,
                             class_weights=torch.ones(info.num_classes) if kind == "full" else None)
    assert len(hist["loss"]) == 2 and all(np.isfinite(hist["loss"]))
    pred = predict_video(model, test, batch_size=2)
    assert pred.shape == (3, 48, 64) and int(pred.max()) < n_out
    lm = single_bg_label_map(info, ds.labels) if kind == "single_bg" else None
    res = evaluate_video(model, test, info, label_map=lm, oracle_bg=kind == "single_bg")
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


# ------------------------------------------------------------------------------------------ motion controls
def test_base_kind_and_flow_use():
    assert [base_kind(k) for k in KINDS] == ["appearance", "two_stream", "two_stream", "two_stream", "single_bg", "full"]
    assert [uses_flow(k) for k in KINDS] == [False, True, True, True, False, False]
    assert set(FLOW_CONTROLS) == {"two_stream_zero_flow", "two_stream_shuffled_flow"}
    with pytest.raises(InvalidInputError):
        base_kind("three_stream")


def test_zero_flow_control_is_the_encoding_of_zero_motion(tiny):
    ds = tiny["train"]
    z = flow_control(ds, "two_stream_zero_flow", tiny["samples"]["train"], seed=3)
    want = to_uint8(encode_flow(torch.zeros(1, 2, 48, 64), subtract="median")[0])
    assert z.extra["flow"].shape == ds.extra["flow"].shape and z.extra["flow"].dtype == torch.uint8
    assert torch.equal(z.extra["flow"], want.expand_as(z.extra["flow"]))  # constant: every frame, every pixel
    assert (z.extra["flow_source"] == -1).all()
    assert torch.equal(z.images, ds.images) and torch.equal(ds.extra["flow"], tiny["train"].extra["flow"])
    # other kinds: the data as loaded
    assert flow_control(ds, "two_stream", tiny["samples"]["train"]) is ds


def _clip_samples(n_clips, frames):
    from wsss_lib.data.base import Sample

    return [Sample(f"c{c}_{t}", image=None, clip=f"c{c}", frame=t) for c in range(n_clips) for t in range(frames)]


def test_shuffled_flow_control_takes_another_clips_frame_deterministically():
    n_clips, frames = 5, 3
    samples = _clip_samples(n_clips, frames)
    n = len(samples)
    flow = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 4, 4).clone()  # row id as flow
    ds = InMemoryDataset(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), torch.zeros(n, 4, 4, dtype=torch.long),
                         torch.zeros(n, 2), extra={"flow": flow})
    a = flow_control(ds, "two_stream_shuffled_flow", samples, seed=7)
    b = flow_control(ds, "two_stream_shuffled_flow", samples, seed=7)
    c = flow_control(ds, "two_stream_shuffled_flow", samples, seed=8)
    src = a.extra["flow_source"]
    assert torch.equal(src, b.extra["flow_source"]) and torch.equal(a.extra["flow"], b.extra["flow"])
    assert not torch.equal(src, c.extra["flow_source"])  # another seed, another derangement (5 clips: 24 of them)
    for i, s in enumerate(samples):
        j = int(src[i])
        assert samples[j].clip != s.clip and samples[j].frame == s.frame  # another clip, same frame index
        assert (a.extra["flow"][i] == j).all()
    # a clip's frames all come from one other clip, and every clip gives its flow once
    per_clip = {c: {samples[int(src[i])].clip for i, x in enumerate(samples) if x.clip == c}
                for c in dict.fromkeys(x.clip for x in samples)}
    assert all(len(v) == 1 for v in per_clip.values())
    assert sorted(next(iter(v)) for v in per_clip.values()) == sorted(per_clip)
    with pytest.raises(InvalidInputError):
        flow_control(ds, "two_stream_shuffled_flow", None)
    with pytest.raises(InvalidInputError):
        flow_control(ds.subset(range(frames)), "two_stream_shuffled_flow", samples[:frames])  # one clip


def test_derangement_has_no_fixed_point():
    for n in range(2, 9):
        for seed in range(20):
            p = derangement(n, seed)
            assert sorted(p.tolist()) == list(range(n)) and (p != np.arange(n)).all()
    assert (derangement(6, 1) == derangement(6, 1)).all()


def test_shuffled_flow_on_real_clips(tiny):
    ds = tiny["train"]
    sh = flow_control(ds, "two_stream_shuffled_flow", tiny["samples"]["train"], seed=0)
    smp = tiny["samples"]["train"]
    for i, j in enumerate(sh.extra["flow_source"].tolist()):
        assert smp[j].clip != smp[i].clip and smp[j].frame == smp[i].frame
        assert torch.equal(sh.extra["flow"][i], ds.extra["flow"][j])


def test_motion_controls_are_exactly_the_two_stream_network(tiny):
    info = tiny["info"]

    def n_params(kind):
        torch.manual_seed(0)
        return build_video_model(kind, info, **SMALL)

    ref = n_params("two_stream")
    for kind in FLOW_CONTROLS:
        m = n_params(kind)
        assert type(m) is type(ref)
        assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in ref.parameters())
        assert [(k, v.shape) for k, v in m.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert sum(p.numel() for p in n_params("appearance").parameters()) < sum(p.numel() for p in ref.parameters())


def test_control_kinds_refuse_real_flow(tiny):
    info = tiny["info"]
    reg = torch.zeros(6, info.num_classes, 48, 64, dtype=torch.uint8)
    for kind in FLOW_CONTROLS:
        with pytest.raises(InvalidInputError, match="flow control"):
            train_video_model(kind, build_video_model(kind, info, **SMALL), tiny["train"], info, regions=reg, steps=1)
    zero = flow_control(tiny["train"], "two_stream_zero_flow", tiny["samples"]["train"])
    with pytest.raises(InvalidInputError, match="flow control"):  # the wrong control
        train_video_model("two_stream_shuffled_flow", build_video_model("two_stream", info, **SMALL), zero, info,
                          regions=reg, steps=1)


def test_full_loss_class_weights_change_the_loss():
    info = _info3()
    torch.manual_seed(0)
    lg = torch.randn(2, 3, 4, 4)

    class Const(torch.nn.Module):
        def forward(self, x):
            return lg

    batch = {"image": torch.zeros(2, 3, 8, 8), "tags": torch.ones(2, 3),
             "label": torch.tensor([0, 1]).view(2, 1, 1).expand(2, 8, 8).clone()}
    plain = video_loss_step("full", info.foreground, augment=False)(Const(), batch, torch.device("cpu"))
    ones = video_loss_step("full", info.foreground, augment=False, class_weights=torch.ones(3))(
        Const(), batch, torch.device("cpu"))
    w = video_loss_step("full", info.foreground, augment=False, class_weights=torch.tensor([1.0, 0.0, 1.0]))(
        Const(), batch, torch.device("cpu"))
    only0 = video_loss_step("full", info.foreground, augment=False)(Const(), {**batch, "label": batch["label"].clone().fill_(0)},
                                                                    torch.device("cpu"))
    assert math.isclose(float(plain), float(ones), rel_tol=1e-6)
    # class 1 weighted 0: only image 0's pixels (class 0) count
    ce0 = torch.nn.functional.cross_entropy(torch.nn.functional.interpolate(lg[:1], size=(8, 8), mode="bilinear",
                                                                           align_corners=False),
                                            torch.zeros(1, 8, 8, dtype=torch.long))
    assert math.isclose(float(w), float(ce0), rel_tol=1e-5) and not math.isclose(float(w), float(only0), rel_tol=1e-3)


def test_fgbg_masks_refuse_truncated_stages(tiny):
    info = tiny["info"]
    clf = build_heatmap_classifier(info.num_classes, last_stage="conv3", widths=(4, 8, 8, 8, 8), depths=(1, 1, 1, 1, 1))
    with pytest.raises(InvalidInputError, match="identities"):
        compute_fgbg_masks(clf.eval(), tiny["train"], layers=("conv4", "conv5"), threshold=0.5)
    fg = build_heatmap_classifier(len(info.foreground), last_stage="conv5", widths=(4, 8, 8, 8, 8),
                                  depths=(1, 1, 1, 1, 1)).eval()
    res = compute_fgbg_masks(fg, tiny["train"], layers=("conv4", "conv5"), threshold=0.5)
    assert res["masks"].shape == (6, 48, 64)


def test_oracle_bg_prediction_names_only_true_background():
    info = _info3()  # road, sky = background, car = fg
    lm = torch.tensor([0, 2])  # single bg label -> road
    labels = torch.tensor([[[0, 1, 2, 1, 255]]])
    pred = torch.tensor([[[0, 0, 0, 2, 0]]])
    assert oracle_bg_prediction(pred, labels, info, lm).tolist() == [[[0, 1, 0, 2, 0]]]
