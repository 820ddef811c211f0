"""Two-stream network: shapes, gradients into both streams, fusion options, bad input."""

from __future__ import annotations

import pytest
import torch

from wsss_lib.core.errors import InvalidInputError
from wsss_lib.models import SegNet, SmallVGG, TagClassifier
from wsss_lib.models.two_stream import TwoStreamNet, run_stages

W = (4, 8, 8, 8, 8)
D = (1, 1, 1, 1, 1)


def _net(fuse_stage="conv3", late_fusion="sum", fusion_kernel=1, classes=5):
    torch.manual_seed(0)
    app = SegNet(SmallVGG(W, D), classes, width=8, dilation=2)
    motion = SmallVGG((4, 4, 4, 4, 4), D, in_channels=3, input_norm="unit")
    return TwoStreamNet(app, motion, fuse_stage=fuse_stage, late_fusion=late_fusion, fusion_kernel=fusion_kernel)


@pytest.mark.parametrize("fuse_stage", ["conv1", "conv2", "conv3", "conv4"])
@pytest.mark.parametrize("late_fusion", ["sum", "mean", "none"])
def test_forward_shapes(fuse_stage, late_fusion):
    net = _net(fuse_stage, late_fusion)
    x, f = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    out = net(x, f)
    assert out.shape == (2, 5, 4, 6)
    parts = net(x, f, return_parts=True)
    assert set(parts) == {"logits", "appearance", "spatiotemporal"}
    if late_fusion == "sum":
        assert torch.allclose(parts["logits"], parts["appearance"] + parts["spatiotemporal"])
    if late_fusion == "none":
        assert torch.allclose(parts["logits"], parts["spatiotemporal"])
    assert not any(n in net.motion.stages for n in ("conv5",))  # motion stream ends at the fusion


@pytest.mark.parametrize("kernel", [1, 3])
def test_backward_reaches_both_streams_and_fusion(kernel):
    net = _net(fusion_kernel=kernel).train()
    x, f = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    net(x, f).logsumexp(1).mean().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    for prefix in ("appearance.backbone", "appearance.head", "motion.stages", "fusion", "spatiotemporal.head",
                   "spatiotemporal.backbone.stages.conv4"):
        gs = [g for n, g in grads.items() if n.startswith(prefix)]
        assert gs and all(g is not None for g in gs), prefix
        assert sum(float(g.abs().sum()) for g in gs) > 0, prefix


def test_fusion_starts_as_appearance_identity():
    net = _net().eval()
    with torch.no_grad():
        net.fusion[0].weight[:, 8:] = 0  # drop the motion part: the ST stream then copies appearance
    x, f = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        parts = net(x, f, return_parts=True)
        w = net.fusion[0].weight[:, :8, 0, 0]
    assert torch.allclose(w, torch.eye(8), atol=0.05)
    assert torch.allclose(parts["appearance"], parts["spatiotemporal"], atol=0.05)


def test_non_contiguous_inputs():
    net = _net().eval()
    x = torch.rand(2, 3, 48, 32).transpose(2, 3)
    f = torch.rand(2, 3, 48, 32).transpose(2, 3)
    assert net(x, f).shape == (2, 5, 4, 6)


def test_init_from_classifier_copies_rgb_and_later_stages():
    net = _net()
    clf = TagClassifier(SmallVGG(W, D), 3)
    net.init_from_classifier(clf)
    src = clf.backbone.state_dict()
    assert torch.equal(net.appearance.backbone.state_dict()["stages.conv1.0.weight"], src["stages.conv1.0.weight"])
    st = net.spatiotemporal.backbone.state_dict()
    keys = [k for k in src if k.startswith("stages.conv5.") and k.endswith("weight")]
    assert keys and all(torch.equal(st[k], src[k]) for k in keys)


def test_run_stages_matches_backbone_forward():
    bb = SmallVGG(W, D).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref, st = bb(x, ("conv2",))
        mid = run_stages(bb, x, stop="conv2", normalize=True)
        out = run_stages(bb, mid, start="conv3")
    assert torch.allclose(mid, st["conv2"]) and torch.allclose(out, ref)


@pytest.mark.parametrize("kw", [dict(fuse_stage="conv5"), dict(fuse_stage="pool"), dict(late_fusion="max"),
                                dict(fusion_kernel=5)])
def test_bad_config_raises(kw):
    with pytest.raises(InvalidInputError):
        _net(**kw)


def test_bad_inputs_raise():
    net = _net()
    with pytest.raises(InvalidInputError):
        net(torch.rand(1, 3, 32, 32), torch.rand(1, 2, 32, 32))  # raw 2-channel flow
    with pytest.raises(InvalidInputError):
        net(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 16, 32))
    with pytest.raises(InvalidInputError):
        net(torch.rand(2, 3, 32, 32), torch.rand(1, 3, 32, 32))
    with pytest.raises(InvalidInputError):
        TwoStreamNet(SegNet(SmallVGG(W, D), 3), SmallVGG(W, D, in_channels=2, input_norm="unit"))
