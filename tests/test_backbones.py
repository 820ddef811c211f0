"""Backbones, the tag classifier and the DeepLab-style SegNet: shapes, strides, stage capture, errors."""

from __future__ import annotations

import pytest
import torch

from wsss_lib.core.errors import InvalidInputError, WsssError
from wsss_lib.models import STAGES, SegNet, SmallVGG, TagClassifier, VGG16Backbone, build_backbone
from wsss_lib.models.classifier import global_pool

SMALL = dict(widths=(4, 6, 8, 8, 8), depths=(1, 1, 1, 1, 1))


@pytest.mark.parametrize("output_stride", [4, 8, 16])
@pytest.mark.parametrize("size", [(32, 32), (40, 56), (33, 47)])
def test_small_vgg_stage_shapes_and_strides(output_stride, size):
    b = SmallVGG(**SMALL, output_stride=output_stride)
    assert list(b.stages) == list(STAGES)
    x = torch.rand(2, 3, *size)
    out, feats = b(x, return_stages=STAGES)
    assert set(feats) == set(STAGES)
    assert out is feats["conv5"]
    for name, f in feats.items():
        s = b.strides[name]
        assert f.shape[:2] == (2, b.channels[name])
        assert f.shape[-2:] == (-(-size[0] // s), -(-size[1] // s)), name
    assert b.strides["conv5"] == output_stride


def test_output_stride_4_dilates_conv4_and_conv5_and_bad_stride_raises():
    b = SmallVGG(**SMALL, output_stride=4)
    dil = {n: [m.dilation[0] for m in b.stages[n].modules() if isinstance(m, torch.nn.Conv2d)] for n in STAGES}
    assert dil["conv3"] == [1] and dil["conv4"] == [2] and dil["conv5"] == [4]
    with pytest.raises(InvalidInputError, match="output_stride"):
        SmallVGG(**SMALL, output_stride=2)


def test_return_stages_is_one_pass_and_optional():
    b = SmallVGG(**SMALL).eval()
    x = torch.rand(1, 3, 32, 32)
    out0, feats0 = b(x)
    out1, feats1 = b(x, return_stages=("conv4",))
    assert feats0 == {} and set(feats1) == {"conv4"}
    torch.testing.assert_close(out0, out1)


def test_flow_stream_input_channels_and_norm():
    b = SmallVGG(**SMALL, in_channels=3, input_norm="none")
    torch.testing.assert_close(b.normalize(torch.full((1, 3, 2, 2), 0.3)), torch.full((1, 3, 2, 2), 0.3))
    b2 = SmallVGG(**SMALL, in_channels=2, input_norm=((0.5, 0.5), (0.25, 0.25)))
    out, _ = b2(torch.rand(1, 2, 16, 16))
    assert out.shape[1] == 8
    with pytest.raises(InvalidInputError):
        SmallVGG(**SMALL, in_channels=2, input_norm="imagenet")


@pytest.mark.parametrize("bad", [torch.rand(3, 32, 32), torch.rand(1, 4, 32, 32),
                                 torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8)])
def test_bad_input_raises(bad):
    with pytest.raises(InvalidInputError):
        SmallVGG(**SMALL)(bad)


def test_unknown_stage_and_backbone_raise():
    with pytest.raises(InvalidInputError):
        SmallVGG(**SMALL)(torch.rand(1, 3, 16, 16), return_stages=("fc7",))
    with pytest.raises(InvalidInputError):
        build_backbone("resnet50")
    with pytest.raises(InvalidInputError):
        build_backbone("small_vgg", widths=(1, 2))


def test_non_contiguous_input():
    b = SmallVGG(**SMALL).eval()
    x = torch.rand(1, 32, 32, 3).permute(0, 3, 1, 2)
    assert not x.is_contiguous()
    torch.testing.assert_close(b(x)[0], b(x.contiguous())[0])


def test_vgg16_layout_random_init_no_download():
    b = VGG16Backbone(pretrained=None)
    assert b.channels == {"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 512, "conv5": 512}
    assert b.strides == {"conv1": 1, "conv2": 2, "conv3": 4, "conv4": 8, "conv5": 8}
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in b.modules())
    assert n_convs == 13
    conv5 = [m for m in b.stages["conv5"] if isinstance(m, torch.nn.Conv2d)]
    assert all(c.dilation == (2, 2) for c in conv5)
    out, feats = b(torch.rand(1, 3, 32, 32), return_stages=("conv4",))
    assert out.shape == (1, 512, 4, 4) and feats["conv4"].shape == (1, 512, 4, 4)


def test_vgg16_weights_from_local_file(tmp_path):
    from torchvision.models import vgg16

    ref = vgg16(weights=None)
    path = tmp_path / "vgg16.pth"
    torch.save(ref.state_dict(), path)
    b = VGG16Backbone(pretrained=str(path))
    torch.testing.assert_close(b.stages["conv1"][0].weight, ref.features[0].weight)
    torch.testing.assert_close(b.stages["conv5"][1].weight, ref.features[24].weight)
    with pytest.raises(WsssError, match="not found"):
        VGG16Backbone(pretrained=str(tmp_path / "missing.pth"))


def test_vgg16_offline_message(monkeypatch, tmp_path):
    from torchvision.models import VGG16_Weights

    def fail(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", fail)
    with pytest.raises(WsssError, match="pretrained="):
        VGG16Backbone(pretrained=True)


@pytest.mark.parametrize("pooling", ["mean", "max", "lse"])
def test_classifier_outputs(pooling):
    c = TagClassifier(SmallVGG(**SMALL), 5, pooling=pooling)
    out = c(torch.rand(3, 3, 40, 40), return_stages=("conv4", "conv5"))
    assert out["logits"].shape == (3, 5)
    assert out["score_maps"].shape == (3, 5, 5, 5)
    assert set(out["stages"]) == {"conv4", "conv5"}
    torch.testing.assert_close(out["logits"], global_pool(out["score_maps"], pooling, c.lse_r))


def test_global_pool_ordering():
    m = torch.randn(2, 3, 4, 4)
    mean, lse, mx = (global_pool(m, p) for p in ("mean", "lse", "max"))
    assert (mean <= lse + 1e-6).all() and (lse <= mx + 1e-6).all()
    with pytest.raises(InvalidInputError):
        global_pool(m, "median")


@pytest.mark.parametrize("head", ["largefov", "linear"])
def test_segnet_shapes_and_init_from_classifier(head):
    clf = TagClassifier(SmallVGG(**SMALL), 4)
    net = SegNet(SmallVGG(**SMALL), 5, head=head, width=16, dilation=2)
    out = net(torch.rand(2, 3, 48, 40))
    assert out.shape == (2, 5, 6, 5)
    assert net.output_stride == 8
    net.init_from_classifier(clf)
    for (k, a), (_, b) in zip(net.backbone.state_dict().items(), clf.backbone.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    logits, stages = net(torch.rand(1, 3, 32, 32), return_stages=("conv5",))
    assert logits.shape == (1, 5, 4, 4) and stages["conv5"].shape[1] == 8
    other = SmallVGG(widths=(4, 6, 8, 8, 16), depths=(1, 1, 1, 1, 1))
    with pytest.raises(InvalidInputError):
        net.init_from_classifier(TagClassifier(other, 4))


def test_segnet_head_initialised_from_classifier():
    """fc6 = the classifier's hidden layer (centre tap), fc7 = identity, fc8[1:] = its class scores."""
    torch.manual_seed(0)
    clf = TagClassifier(SmallVGG(**SMALL), 4, hidden=12).eval()
    net = SegNet(SmallVGG(**SMALL), 5, width=12, dilation=2).eval()
    net.init_from_classifier(clf)
    assert net.head_initialised
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feat, _ = clf.backbone(x)
        ref = clf.head(clf.fc(torch.nn.functional.max_pool2d(feat, 3, 1, 1)))
        out = net(x)
    torch.testing.assert_close(out[:, 1:], ref, rtol=1e-4, atol=1e-5)
    assert (out[:, 0] == 0).all()
    # a classifier without a matching hidden layer: only the backbone is copied
    net2 = SegNet(SmallVGG(**SMALL), 5, width=16).init_from_classifier(clf)
    assert not net2.head_initialised


def test_mean_pooled_classifier_without_hidden_layer_is_zhou_cam():
    """TagClassifier(backbone, K, pooling="mean", hidden=0) is CAM's layout [Zhou et al. 2016]: GAP of
    the last conv stage + one linear layer. A 1x1 conv commutes with the spatial mean, so the image
    logits are the spatial mean of the score maps, and the score maps are the CAMs
    ``M_c = sum_k w_ck f_k`` plus the bias ``b_c``. cam_maps(normalize="minmax") is then exactly
    Zhou's normalised CAM (``(M - min M) / (max M - min M)``; the bias cancels); the default
    ``"max"`` (ReLU, divide by the max) normalises ``M_c + b_c``."""
    from wsss_lib.ops.masks import cam_maps

    torch.manual_seed(0)
    clf = TagClassifier(SmallVGG(**SMALL), 3, pooling="mean", hidden=0)
    assert isinstance(clf.dropout, torch.nn.Identity) and isinstance(clf.fc, torch.nn.Identity)
    assert clf.head.kernel_size == (1, 1) and clf.head.in_channels == clf.backbone.out_channels
    with torch.no_grad():
        clf.head.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))  # a trained head has a bias: keep it in the check
    clf.eval()
    x = torch.rand(2, 3, 40, 48)
    with torch.no_grad():
        out = clf(x, return_stages=("conv5",))
        feat = out["stages"]["conv5"]  # the last conv stage (after its ReLU), what CAM weights
        w, b = clf.head.weight[:, :, 0, 0], clf.head.bias
        cam = torch.einsum("ck,bkhw->bchw", w, feat)  # Zhou's M_c(x, y) = sum_k w_ck f_k(x, y)
        gap_fc = feat.mean((-2, -1)) @ w.T + b  # GAP, then one linear layer
    torch.testing.assert_close(out["score_maps"], cam + b[None, :, None, None], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["logits"], out["score_maps"].mean((-2, -1)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["logits"], gap_fc, rtol=1e-5, atol=1e-6)

    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    flat = cam.flatten(2)
    lo, hi = flat.amin(-1)[..., None, None], flat.amax(-1)[..., None, None]
    zhou = ((cam - lo) / (hi - lo)).masked_fill(tags[:, :, None, None] == 0, 0).amax(1)
    torch.testing.assert_close(cam_maps(out["score_maps"], tags, normalize="minmax"), zhou, rtol=1e-5, atol=1e-6)
    # the default "max" normalisation sees the bias: ReLU(M_c + b_c) / max (an all-negative map -> 0)
    shifted = (cam + b[None, :, None, None]).clamp(min=0)
    relu_max = shifted / shifted.flatten(2).amax(-1).clamp(min=1e-8)[..., None, None]
    relu_max = relu_max.masked_fill(tags[:, :, None, None] == 0, 0).amax(1)
    torch.testing.assert_close(cam_maps(out["score_maps"], tags), relu_max, rtol=1e-5, atol=1e-6)
    # ... so it is Zhou's ReLU(M)/max only for a zero bias
    with torch.no_grad():
        clf.head.bias.zero_()
        sm0 = clf(x)["score_maps"]
    relu_cam = cam.clamp(min=0) / cam.clamp(min=0).flatten(2).amax(-1).clamp(min=1e-8)[..., None, None]
    relu_cam = relu_cam.masked_fill(tags[:, :, None, None] == 0, 0).amax(1)
    torch.testing.assert_close(cam_maps(sm0, tags), relu_cam, rtol=1e-5, atol=1e-6)
