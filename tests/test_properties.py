"""Property-based tests (hypothesis): invariants of mask fusion, the CRF wrapper and heatmap
normalisation over random shapes, dtypes and value ranges (metrics: see test_metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wsss_lib.ops.crf import CRFParams, crf_fgbg
from wsss_lib.core.errors import InvalidInputError
from wsss_lib.ops.heatmaps import normalise_maps
from wsss_lib.ops.masks import fuse_activations

FAST = CRFParams(iterations=3)


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 3), c4=st.integers(1, 8), c5=st.integers(1, 8), h=st.integers(2, 12), w=st.integers(2, 12),
       scale=st.sampled_from([1e-3, 1.0, 1e3]), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 10_000))
def test_fusion_in_unit_range_and_shape(b, c4, c5, h, w, scale, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    stages = {"conv4": (torch.randn(b, c4, h, w, generator=g) * scale).to(dtype),
              "conv5": (torch.randn(b, c5, max(1, h // 2), max(1, w // 2), generator=g) * scale).to(dtype)}
    out = fuse_activations(stages, out_size=(h * 2, w * 2))
    assert out.shape == (b, h * 2, w * 2)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1 + 1e-6
    # positive rescaling of every activation leaves the min-max-normalised map unchanged
    out2 = fuse_activations({k: v * 7.5 for k, v in stages.items()}, out_size=(h * 2, w * 2))
    assert torch.allclose(out, out2, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 2), k=st.integers(1, 6), h=st.integers(1, 10), w=st.integers(1, 10),
       method=st.sampled_from(["minmax", "max", "sigmoid", "softmax", "none"]), scale=st.sampled_from([1e-2, 1.0, 50.0]),
       seed=st.integers(0, 10_000))
def test_heatmap_normalisation_in_unit_range(b, k, h, w, method, scale, seed):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(b, k, h, w, generator=g) * scale
    out = normalise_maps(maps, method)
    assert out.shape == maps.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    if method in ("minmax", "max") and h * w > 1:
        peak = out.flatten(2).amax(-1)
        nonconst = maps.flatten(2).amax(-1) > maps.flatten(2).amin(-1) + 1e-3
        if method == "max":
            nonconst &= maps.flatten(2).amax(-1) > 1e-3
        assert torch.allclose(peak[nonconst], torch.ones_like(peak[nonconst]), atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(h=st.integers(1, 24), w=st.integers(1, 24), seed=st.integers(0, 10_000),
       transpose=st.booleans())
def test_crf_wrapper_probability_and_shape(h, w, seed, transpose):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(w, h, 3) if transpose else (h, w, 3), dtype=np.uint8)
    if transpose:
        img = img.transpose(1, 0, 2)  # non-contiguous view
    p = rng.random((h, w)).astype(np.float32)
    out = crf_fgbg(img, p, FAST)
    assert out.shape == (h, w) and np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    # certain inputs stay certain
    assert crf_fgbg(np.ascontiguousarray(img), np.ones((h, w), np.float32), FAST).min() > 0.99


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_are_refused(bad):
    img = np.zeros((8, 8, 3), np.uint8)
    p = np.full((8, 8), 0.5, np.float32)
    p[0, 0] = bad
    with pytest.raises(InvalidInputError):
        crf_fgbg(img, p, FAST)
    with pytest.raises(InvalidInputError):
        crf_fgbg(img.astype(np.float32), np.full((8, 8), 0.5, np.float32), FAST)
    maps = torch.zeros(1, 2, 4, 4)
    maps[0, 0, 0, 0] = bad
    with pytest.raises(InvalidInputError):
        normalise_maps(maps)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_activations_are_refused(bad):
    stages = {"conv4": torch.zeros(1, 2, 4, 4), "conv5": torch.zeros(1, 2, 4, 4)}
    stages["conv5"][0, 1, 2, 2] = bad
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        fuse_activations(stages)
