"""Torch-native dense CRF: shapes, probabilities, agreement with pydensecrf, bad input, devices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as nd
import torch

from wsss_lib.ops.crf import CRFParams, crf_batch, dense_crf
from wsss_lib.ops.crf_torch import DenseCRF, bilateral_stride, crf_fgbg_torch, dense_crf_torch
from wsss_lib.core.errors import InvalidInputError

PARAMS = {"default": CRFParams(), "deeplab": CRFParams.deeplab()}


def _blobs(rng, h=48, w=56, n_classes=2, n_obj=3):
    """A textured image with elliptic objects, its label map, and noisy probabilities (C, H, W)."""
    img = rng.uniform(40, 200, 3) + nd.gaussian_filter(rng.normal(0, 30, (h, w, 3)), (1, 1, 0))
    lab = np.zeros((h, w), int)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(n_obj):
        cy, cx = rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.2 * w, 0.8 * w)
        ry, rx = rng.uniform(0.1, 0.3, 2) * [h, w]
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        img[m] = rng.uniform(0, 255, 3) + rng.normal(0, 10, (m.sum(), 3))
        lab[m] = rng.integers(1, n_classes)
    image = np.clip(img, 0, 255).astype(np.uint8)
    return image, lab, _noisy_probs(rng, lab, n_classes)


def _noisy_probs(rng, lab, n_classes, amp=1.0):
    z = nd.gaussian_filter(rng.normal(0, 1, (n_classes,) + lab.shape), (0, 2, 2)) * 4 * amp
    logit = np.eye(n_classes)[lab].transpose(2, 0, 1) * 1.0 + z
    e = np.exp(logit - logit.max(0))
    return (e / e.sum(0)).astype(np.float32)


def _iou(a, b):
    u = (a | b).sum()
    return 1.0 if u == 0 else float((a & b).sum() / u)


def _t(image):
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------------------- basics
@pytest.mark.parametrize("b,c,h,w", [(2, 2, 24, 32), (1, 5, 17, 23), (3, 3, 8, 8)])
def test_shapes_and_distribution(b, c, h, w):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)
    probs = torch.softmax(torch.randn(b, c, h, w, generator=g), 1)
    out = dense_crf_torch(images, probs)
    assert out.shape == (b, c, h, w) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out.sum(1), torch.ones(b, h, w), atol=1e-5)


def test_unbatched_input_and_module():
    rng = np.random.default_rng(0)
    image, _, probs = _blobs(rng, 20, 24)
    out = dense_crf_torch(_t(image), torch.from_numpy(probs))
    assert out.shape == probs.shape
    batched = DenseCRF()(_t(image)[None], torch.from_numpy(probs)[None])[0]
    assert torch.allclose(out, batched, atol=1e-6)


def test_zero_iterations_returns_clipped_input():
    rng = np.random.default_rng(1)
    image, _, probs = _blobs(rng, 16, 16)
    out = dense_crf_torch(_t(image), torch.from_numpy(probs), CRFParams(iterations=0))
    assert torch.allclose(out, torch.from_numpy(probs), atol=1e-4)


def test_float_and_uint8_images_agree():
    rng = np.random.default_rng(2)
    image, _, probs = _blobs(rng, 24, 24)
    a = dense_crf_torch(_t(image), torch.from_numpy(probs))
    b = dense_crf_torch(_t(image).float() / 255.0, torch.from_numpy(probs))
    assert torch.allclose(a, b, atol=1e-4)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(3)
    image, _, probs = _blobs(rng, 30, 26, n_classes=3)
    ref = dense_crf_torch(_t(image)[None], torch.from_numpy(probs)[None])
    img_cl = torch.from_numpy(image)[None].permute(0, 3, 1, 2)  # channels-last view
    pr_t = torch.from_numpy(probs.transpose(0, 2, 1).copy())[None].transpose(2, 3)  # transposed view
    assert not img_cl.is_contiguous() and not pr_t.is_contiguous()
    out = dense_crf_torch(img_cl, pr_t)
    assert torch.allclose(out, ref, atol=1e-6)
    wide = torch.cat([_t(image)[None]] * 2, 0)[::2]  # strided batch
    assert torch.allclose(dense_crf_torch(wide, torch.from_numpy(probs)[None]), ref, atol=1e-6)


def test_groups_and_fgbg_wrapper_are_consistent():
    rng = np.random.default_rng(4)
    items = [_blobs(rng, 20, 20) for _ in range(3)]
    images = torch.stack([_t(i) for i, _, _ in items])
    fg = torch.stack([torch.from_numpy(p[1]) for _, _, p in items])
    probs = torch.stack([1 - fg, fg], 1)
    one = dense_crf_torch(images, probs)
    split = dense_crf_torch(images, probs, group_max_elements=1)  # one image per group
    assert torch.allclose(one, split, atol=1e-4)  # float32 sums in another order (measured 6e-5)
    assert torch.allclose(crf_fgbg_torch(images, fg), one[:, 1], atol=1e-5)


def test_bilateral_stride_rule():
    assert bilateral_stride(16, 16) == 1
    assert bilateral_stride(96, 96) == 2
    s = bilateral_stride(321, 321)
    assert s > 1 and -(-321 // s) ** 2 <= 2500
    with pytest.raises(InvalidInputError):
        bilateral_stride(10, 10, max_sources=0)


def test_gaussian_term_matmul_and_conv_paths_agree(monkeypatch):
    import wsss_lib.ops.crf_torch as ct

    x = torch.rand(2, 3, 30, 41)
    a = ct._gauss_filter(x, 3.0, 4.0)
    monkeypatch.setattr(ct, "_MATMUL_MAX_SIDE", 1)
    b = ct._gauss_filter(x, 3.0, 4.0)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ vs pydensecrf
@pytest.mark.parametrize("pname", sorted(PARAMS))
def test_agrees_with_pydensecrf_fgbg_on_toy_objects(pname):
    """GT-derived noisy fg probabilities of ToyObjects TEST images: masks agree (IoU >= 0.95), and
    the CRF really changes the masks (so agreement is not trivial)."""
    from wsss_lib.data.toy_objects import generate_image

    params = PARAMS[pname]
    images, probs = [], []
    for i in range(6):
        image, label, _ = generate_image(0, "test", i)
        rng = np.random.default_rng(100 + i)
        fg = ((label > 0) & (label != 255)).astype(int)
        images.append(image)
        probs.append(_noisy_probs(rng, fg, 2))
    ref = np.stack(crf_batch(images, probs, params, workers=1))
    out = dense_crf_torch(torch.stack([_t(i) for i in images]), torch.from_numpy(np.stack(probs)), params).numpy()
    raw = np.stack(probs)[:, 1] > 0.5
    ref_m, out_m = ref[:, 1] > 0.5, out[:, 1] > 0.5
    assert _iou(ref_m, raw) < 0.9, "the CRF should change these masks"
    pooled = _iou(ref_m, out_m)
    per_image = np.mean([_iou(r, o) for r, o in zip(ref_m, out_m)])
    assert pooled >= 0.95 and per_image >= 0.95, (pooled, per_image)
    assert np.abs(ref - out).mean() < 0.05


@pytest.mark.parametrize("n_classes", [2, 4])
def test_agrees_with_pydensecrf_synthetic(n_classes):
    rng = np.random.default_rng(10 + n_classes)
    params = CRFParams.deeplab()
    ious = []
    for _ in range(3):
        image, _, probs = _blobs(rng, 64, 72, n_classes=n_classes)
        ref = dense_crf(image, probs, params).argmax(0)
        out = dense_crf_torch(_t(image), torch.from_numpy(probs), params).argmax(0).numpy()
        ious += [_iou(ref == c, out == c) for c in range(n_classes) if (ref == c).any() or (out == c).any()]
    assert np.mean(ious) >= 0.95 and min(ious) >= 0.9, ious


def test_sampled_bilateral_close_to_exact():
    rng = np.random.default_rng(5)
    image, _, probs = _blobs(rng, 64, 64)
    exact = dense_crf_torch(_t(image), torch.from_numpy(probs), stride=1)
    sampled = dense_crf_torch(_t(image), torch.from_numpy(probs), stride=3)
    assert _iou(exact[1].numpy() > 0.5, sampled[1].numpy() > 0.5) >= 0.95


def test_bfloat16_kernel_close_to_float32():
    rng = np.random.default_rng(6)
    image, _, probs = _blobs(rng, 40, 40)
    a = dense_crf_torch(_t(image), torch.from_numpy(probs))
    b = dense_crf_torch(_t(image), torch.from_numpy(probs), kernel_dtype=torch.bfloat16)
    assert _iou(a[1].numpy() > 0.5, b[1].numpy() > 0.5) >= 0.98


# ---------------------------------------------------------------------------------- bad input
def _good(h=8, w=9, c=2):
    return torch.zeros(1, 3, h, w, dtype=torch.uint8), torch.full((1, c, h, w), 1.0 / c)


@pytest.mark.parametrize("case", ["image_channels", "probs_one_class", "hw_mismatch", "batch_mismatch",
                                  "not_distribution", "negative", "nan", "int_probs", "float_image_range",
                                  "int32_image", "list_input", "probs_5d"])
def test_bad_input_raises(case):
    img, pr = _good()
    if case == "image_channels":
        img = img[:, :2]
    elif case == "probs_one_class":
        pr = pr[:, :1]
    elif case == "hw_mismatch":
        pr = torch.full((1, 2, 8, 10), 0.5)
    elif case == "batch_mismatch":
        pr = torch.cat([pr, pr])
    elif case == "not_distribution":
        pr = pr * 1.5
    elif case == "negative":
        pr = pr.clone()
        pr[0, 0, 0, 0], pr[0, 1, 0, 0] = -0.5, 1.5
    elif case == "nan":
        pr = pr.clone()
        pr[0, 0, 0, 0] = float("nan")
    elif case == "int_probs":
        pr = torch.ones(1, 2, 8, 9, dtype=torch.int64)
    elif case == "float_image_range":
        img = img.float() + 3.0
    elif case == "int32_image":
        img = img.to(torch.int32)
    elif case == "list_input":
        img = img.tolist()
    elif case == "probs_5d":
        pr = pr[None]
    with pytest.raises(InvalidInputError):
        dense_crf_torch(img, pr)


@pytest.mark.parametrize("kwargs", [{"params": {"gauss_sxy": -1.0}}, {"params": {"nope": 1}},
                                    {"params": CRFParams(iterations=-1)}, {"stride": 0}, {"truncate": 0.0},
                                    {"kernel_dtype": torch.int8}])
def test_bad_settings_raise(kwargs):
    img, pr = _good()
    with pytest.raises(InvalidInputError):
        dense_crf_torch(img, pr, **kwargs)


def test_fgbg_bad_input_raises():
    img, _ = _good()
    with pytest.raises(InvalidInputError):
        crf_fgbg_torch(img, torch.full((1, 8, 9), 1.5))
    with pytest.raises(InvalidInputError):
        crf_fgbg_torch(img, torch.ones(1, 8, 9, dtype=torch.uint8))


# ------------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA not available"))])
def test_devices(device):
    rng = np.random.default_rng(7)
    image, _, probs = _blobs(rng, 32, 40, n_classes=3)
    ref = dense_crf_torch(_t(image), torch.from_numpy(probs), kernel_dtype=torch.float32)
    out = dense_crf_torch(_t(image).to(device), torch.from_numpy(probs).to(device), kernel_dtype=torch.float32)
    assert out.device.type == device
    assert torch.allclose(out.cpu(), ref, atol=1e-3)


def test_streamed_kernel_matches_stored_kernel():
    """An image whose kernel exceeds the memory budget is processed in chunks with the same result."""
    rng = np.random.default_rng(8)
    image, _, probs = _blobs(rng, 30, 34, n_classes=3)
    stored = dense_crf_torch(_t(image), torch.from_numpy(probs), stride=2)
    streamed = dense_crf_torch(_t(image), torch.from_numpy(probs), stride=2, group_max_elements=2000)
    assert torch.allclose(stored, streamed, atol=1e-5)


def test_crf_batch_torch_matches_crf_batch_layout():
    from wsss_lib.ops.crf_torch import crf_batch_torch

    rng = np.random.default_rng(9)
    items = [_blobs(rng, 20, 24), _blobs(rng, 16, 16, n_classes=3), _blobs(rng, 20, 24)]
    images = [i for i, _, _ in items]
    probs = [items[0][2][1], items[1][2], items[2][2][1]]  # fg maps and one 3-label distribution
    out = crf_batch_torch(images, probs, device="cpu")
    ref = crf_batch(images, probs, workers=1)
    assert [o.shape for o in out] == [r.shape for r in ref] == [(20, 24), (3, 16, 16), (20, 24)]
    for o, r in zip(out, ref):
        assert _iou(o > 0.5, r > 0.5) >= 0.9
    with pytest.raises(InvalidInputError):
        crf_batch_torch(images[:2], probs)
