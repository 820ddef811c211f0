"""fg/bg mask fusion, CAM baseline, thresholds, CRF refinement and mask scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_lib.core.errors import InvalidInputError
from wsss_lib.ops.masks import (calibrate, cam_maps, choose_threshold, evaluate_masks, extract_masks, floor_mask,
                                fuse_activations, lowlevel_objectness, normalize_maps, per_image_iou, refine_masks)
from wsss_lib.models import SmallVGG, TagClassifier


def _stages(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"conv3": torch.rand(2, 5, 8, 8, generator=g), "conv4": torch.rand(2, 6, 4, 4, generator=g),
            "conv5": torch.rand(2, 7, 4, 4, generator=g)}


@pytest.mark.parametrize("aggregate", ["mean", "max", "l2"])
@pytest.mark.parametrize("align", ["largest", "smallest"])
@pytest.mark.parametrize("normalize_each", [False, True])
def test_fused_range_and_shape(aggregate, align, normalize_each):
    st = _stages()
    m = fuse_activations(st, ("conv3", "conv4", "conv5"), aggregate=aggregate, align=align,
                         normalize_each=normalize_each, out_size=(32, 30))
    assert m.shape == (2, 32, 30)
    assert m.min() >= 0 and m.max() <= 1
    assert torch.allclose(m.flatten(1).amin(1), torch.zeros(2)) and torch.allclose(m.flatten(1).amax(1), torch.ones(2))


def test_paper_fusion_by_hand():
    """conv4 + conv5 channel means, summed, rescaled to [0, 1] (same resolution: no resizing)."""
    st = _stages()
    s = st["conv4"].mean(1) + st["conv5"].mean(1)
    lo, hi = s.flatten(1).amin(1)[:, None, None], s.flatten(1).amax(1)[:, None, None]
    torch.testing.assert_close(fuse_activations(st), (s - lo) / (hi - lo))


def test_fusion_invariants():
    st = _stages()
    base = fuse_activations(st)
    # invariant to a positive global scale and an additive offset of the activations
    scaled = {k: 3.0 * v + 0.5 for k, v in st.items()}
    torch.testing.assert_close(fuse_activations(scaled), base)
    # scaling all weights together changes nothing; a zero weight removes the layer
    torch.testing.assert_close(fuse_activations(st, weights=(2.0, 2.0)), base)
    torch.testing.assert_close(fuse_activations(st, weights=(1.0, 0.0)), fuse_activations(st, layers=("conv4",)))
    # monotone: raising the activations of one location raises its rank
    bumped = {k: v.clone() for k, v in st.items()}
    bumped["conv4"][:, :, 1, 1] += 10
    assert (fuse_activations(bumped)[:, 1, 1] == 1).all()
    # per-image: each image normalised on its own
    one = fuse_activations({k: v[:1] for k, v in st.items()})
    torch.testing.assert_close(one[0], base[0])


def test_alignment_resizes_to_largest_or_smallest():
    st = _stages()
    assert fuse_activations(st, ("conv3", "conv4"), align="largest").shape[-2:] == (8, 8)
    assert fuse_activations(st, ("conv3", "conv4"), align="smallest").shape[-2:] == (4, 4)


def test_fusion_errors():
    st = _stages()
    with pytest.raises(InvalidInputError):
        fuse_activations(st, ("conv2",))
    with pytest.raises(InvalidInputError):
        fuse_activations(st, ())
    with pytest.raises(InvalidInputError):
        fuse_activations(st, weights=(1.0,))
    with pytest.raises(InvalidInputError):
        fuse_activations(st, aggregate="median")
    with pytest.raises(InvalidInputError):
        fuse_activations(st, normalize="zscore")
    with pytest.raises(InvalidInputError):
        fuse_activations(st, align="middle")


def test_normalize_constant_map_is_finite():
    m = normalize_maps(torch.ones(1, 4, 4))
    assert torch.isfinite(m).all() and (m == 0).all()


def test_cam_uses_only_present_classes():
    sm = torch.zeros(1, 3, 4, 4)
    sm[0, 0, 0, 0] = 5.0   # absent class, strong
    sm[0, 1, 3, 3] = 2.0   # present class
    tags = torch.tensor([[0.0, 1.0, 0.0]])
    cam = cam_maps(sm, tags)
    assert cam.shape == (1, 4, 4)
    assert cam[0, 3, 3] == 1 and cam[0, 0, 0] == 0
    up = cam_maps(sm, tags, out_size=(16, 16))
    assert up.shape == (1, 16, 16) and 0 <= up.min() and up.max() <= 1
    # no tag: falls back to the top class
    assert cam_maps(sm, torch.zeros(1, 3))[0, 0, 0] == 1
    with pytest.raises(InvalidInputError):
        cam_maps(sm, torch.zeros(1, 2))


def test_floor_and_scores():
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[:, :2] = 3
    labels[0, 0, 0] = 255
    s = evaluate_masks(floor_mask(labels.shape), labels)
    assert s["recall"] == 1.0 and s["iou"] == pytest.approx(15 / 31)
    perfect = evaluate_masks(labels == 3, labels)
    assert perfect == {"iou": 1.0, "precision": 1.0, "recall": 1.0}
    np.testing.assert_allclose(per_image_iou(labels == 3, labels), [1.0, 1.0])


def test_threshold_choice_and_calibration():
    labels = torch.zeros(1, 10, 10, dtype=torch.long)
    labels[0, :, :4] = 1
    maps = torch.linspace(1, 0, 10).expand(1, 10, 10).clone()  # left = high
    t, scores = choose_threshold(maps, labels, thresholds=np.linspace(0.05, 0.95, 19))
    assert scores[t] == 1.0 and 0.35 < t < 0.7
    x = torch.linspace(0, 1, 11)
    c = calibrate(x, 0.3)
    assert c[0] == 0 and c[-1] == 1 and calibrate(torch.tensor([0.3]), 0.3).item() == pytest.approx(0.5)
    assert (c.diff() >= 0).all()
    torch.testing.assert_close(calibrate(x, 0.5), x)
    with pytest.raises(InvalidInputError):
        calibrate(x, 1.0)


def test_refine_masks_with_crf():
    rng = np.random.default_rng(0)
    gt = np.zeros((2, 32, 32), bool)
    gt[:, 8:24, 8:24] = True
    imgs = np.repeat(np.where(gt[..., None], 210, 30), 3, axis=-1).astype(np.uint8)
    maps = np.clip(np.where(gt, 0.4, 0.1) + rng.normal(0, 0.15, gt.shape), 0, 1).astype(np.float32)
    q = refine_masks(list(imgs), maps, threshold=0.25, workers=1)
    assert q.shape == gt.shape
    raw = per_image_iou(maps >= 0.25, gt.astype(np.int64)).mean()
    ref = per_image_iou(q >= 0.5, gt.astype(np.int64)).mean()
    assert ref > raw and ref > 0.95


def test_extract_masks_one_pass():
    torch.manual_seed(0)
    clf = TagClassifier(SmallVGG(widths=(4, 4, 8, 8, 8), depths=(1, 1, 1, 1, 1)), 3)
    calls = []
    clf.backbone.register_forward_hook(lambda *a: calls.append(1))
    imgs = torch.rand(5, 3, 32, 32)
    out = extract_masks(clf, imgs, torch.ones(5, 3), batch_size=2)
    assert len(calls) == 3  # ceil(5 / 2) backbone passes: stages and score maps come from the same pass
    assert out["fused"].shape == (5, 32, 32) and out["cam"].shape == (5, 32, 32) and out["logits"].shape == (5, 3)
    assert 0 <= out["fused"].min() and out["fused"].max() <= 1
    with pytest.raises(InvalidInputError):
        extract_masks(clf, torch.rand(5, 32, 32))


def test_extract_variants_matches_single_extractions():
    torch.manual_seed(0)
    from wsss_lib.ops.masks import extract_variants

    clf = TagClassifier(SmallVGG(widths=(4, 4, 8, 8, 8), depths=(1, 1, 1, 1, 1)), 3).eval()
    imgs = torch.rand(3, 3, 32, 32)
    variants = {"paper": {"layers": ("conv4", "conv5")}, "c3": {"layers": ("conv3",), "aggregate": "max"}}
    out = extract_variants(clf, imgs, variants, batch_size=2, amp=False)
    ref = extract_masks(clf, imgs, torch.ones(3, 3), layers=("conv3",), aggregate="max", amp=False)["fused"]
    torch.testing.assert_close(out["c3"], ref)
    assert out["paper"].shape == (3, 32, 32)


# --- training-free low-level objectness baseline -----------------------------------------------------------------


def _textured_square(b=2, size=(64, 64), box=(20, 44, 16, 40), seed=0):
    g = torch.Generator().manual_seed(seed)
    y0, y1, x0, x1 = box
    img = torch.full((b, 3, *size), 0.5)
    img[:, :, y0:y1, x0:x1] = torch.rand(b, 3, y1 - y0, x1 - x0, generator=g)
    sq = torch.zeros(size, dtype=torch.bool)
    sq[y0:y1, x0:x1] = True
    return img, sq


@pytest.mark.parametrize("kind", ["gradient", "variance"])
@pytest.mark.parametrize("sigma", [2.0, 4.0])
def test_lowlevel_objectness_finds_a_textured_square(kind, sigma):
    img, sq = _textured_square()
    m = lowlevel_objectness(img, sigma=sigma, kind=kind)
    assert m.shape == (2, 64, 64) and m.dtype == torch.float32
    assert m.min() >= 0 and m.max() <= 1
    for i in range(2):
        assert m[i][sq].mean() > 3 * m[i][~sq].mean()
        pred = m[i] >= 0.3
        iou = (pred & sq).sum().item() / (pred | sq).sum().item()
        assert iou > 0.5, (kind, sigma, iou)


def test_lowlevel_objectness_matches_scipy():
    """gradient = Gaussian(|Sobel|), variance = G*(I^2) - (G*I)^2, both with nearest-pixel borders."""
    from scipy import ndimage

    img, _ = _textured_square(b=1, size=(30, 41), box=(5, 20, 8, 30))
    grey = (img[0] * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0).double().numpy()

    def blur(a):
        return ndimage.gaussian_filter(a, 2.0, mode="nearest", truncate=3.0)

    def norm(a):
        return (a - a.min()) / (a.max() - a.min())

    grad = blur(np.hypot(ndimage.sobel(grey, 0, mode="nearest"), ndimage.sobel(grey, 1, mode="nearest")) / 8)
    var = np.clip(blur(grey ** 2) - blur(grey) ** 2, 0, None)
    np.testing.assert_allclose(lowlevel_objectness(img, 2.0, "gradient")[0].numpy(), norm(grad), atol=1e-5)
    np.testing.assert_allclose(lowlevel_objectness(img, 2.0, "variance")[0].numpy(), norm(var), atol=1e-4)


def test_lowlevel_objectness_edge_cases():
    # flat image -> all zeros; each image normalised on its own; tiny images with a wide window work
    assert (lowlevel_objectness(torch.full((1, 3, 8, 8), 0.3)) == 0).all()
    img, _ = _textured_square()
    torch.testing.assert_close(lowlevel_objectness(img[1:]), lowlevel_objectness(img)[1:])
    torch.testing.assert_close(lowlevel_objectness(img * 0.5), lowlevel_objectness(img), atol=1e-5, rtol=1e-4)
    small = lowlevel_objectness(torch.rand(3, 3, 5, 7), sigma=6.0, kind="variance")
    assert small.shape == (3, 5, 7) and torch.isfinite(small).all() and 0 <= small.min() and small.max() <= 1


def test_lowlevel_objectness_bad_input():
    good = torch.rand(1, 3, 8, 8)
    bad_inputs = [torch.rand(1, 1, 8, 8), torch.rand(3, 8, 8), (good * 255).to(torch.uint8), good * 255,
                  torch.full((1, 3, 8, 8), float("nan")), good.numpy()]
    for x in bad_inputs:
        with pytest.raises(InvalidInputError):
            lowlevel_objectness(x)
    for kw in ({"sigma": 0.0}, {"sigma": -1.0}, {"sigma": float("inf")}, {"sigma": "a"}, {"kind": "laplace"}):
        with pytest.raises(InvalidInputError):
            lowlevel_objectness(good, **kw)


def test_fuse_activations_equals_its_steps():
    """Notebook 02 runs fuse_activations step by step: channel means, align, weighted sum, upsample, rescale."""
    from wsss_lib.ops.masks import aggregate_channels, align_maps, fuse_activations, normalize_maps, resize_maps

    g = torch.Generator().manual_seed(0)
    stages = {"conv3": torch.rand(2, 5, 8, 8, generator=g), "conv4": torch.rand(2, 7, 4, 4, generator=g)}
    means = [aggregate_channels(stages[n]) for n in ("conv3", "conv4")]
    aligned = align_maps(means, "largest")
    assert [tuple(m.shape) for m in aligned] == [(2, 8, 8), (2, 8, 8)]
    assert [tuple(m.shape) for m in align_maps(means, "smallest")] == [(2, 4, 4), (2, 4, 4)]
    fused = normalize_maps(resize_maps(0.5 * aligned[0] + 2.0 * aligned[1], (16, 16)))
    assert torch.allclose(fused, fuse_activations(stages, ("conv3", "conv4"), (0.5, 2.0), out_size=(16, 16)), atol=1e-6)
