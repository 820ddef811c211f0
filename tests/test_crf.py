"""Dense CRF wrapper: known-answer synthetic images, 2 and C labels, batches, PNG output, input checks.

Every test runs twice: on pydensecrf and on the torch fallback (:mod:`wsss_lib.ops.crf_torch`) that
:mod:`wsss_lib.ops.crf` uses when pydensecrf cannot be imported."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from wsss_lib.ops import crf
from wsss_lib.core.io import write_masks
from wsss_lib.ops.crf import CRFParams, as_params, crf_batch, crf_fgbg, dense_crf
from wsss_lib.core.errors import InvalidInputError
from wsss_lib.core.io import read_label


@pytest.fixture(autouse=True, params=["pydensecrf", "torch"])
def backend(request, monkeypatch):
    """Run the test with each CRF implementation."""
    monkeypatch.setattr(crf, "_BACKEND", request.param)
    return request.param


def _square_scene(size=48, noise=0.35, seed=0):
    """A bright square on a dark background, and a noisy fg probability map of it."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((size, size), bool)
    gt[12:36, 14:38] = True
    img = np.where(gt[..., None], 200, 40).astype(np.float32) + rng.normal(0, 6, (size, size, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    p = np.clip(np.where(gt, 0.65, 0.35) + rng.normal(0, noise, gt.shape), 0.02, 0.98).astype(np.float32)
    return img, gt, p


@pytest.mark.parametrize("params", [CRFParams(), CRFParams.deeplab()])
def test_fgbg_crf_recovers_the_square(params):
    img, gt, p = _square_scene()
    before = ((p > 0.5) == gt).mean()
    q = crf_fgbg(img, p, params)
    after = ((q > 0.5) == gt).mean()
    assert q.shape == gt.shape and q.dtype == np.float32
    assert 0 <= q.min() and q.max() <= 1
    assert before < 0.85 and after > 0.97


def test_multilabel_crf_three_regions():
    rng = np.random.default_rng(1)
    lab = np.zeros((40, 60), np.int64)
    lab[:, 20:40] = 1
    lab[:, 40:] = 2
    colors = np.array([[30, 30, 30], [200, 40, 40], [40, 40, 200]], np.float32)
    img = np.clip(colors[lab] + rng.normal(0, 5, (40, 60, 3)), 0, 255).astype(np.uint8)
    logits = np.eye(3)[lab].transpose(2, 0, 1) * 1.0 + rng.normal(0, 0.9, (3, 40, 60))
    probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    q = dense_crf(img, probs.astype(np.float32))
    assert q.shape == (3, 40, 60)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    assert (probs.argmax(0) == lab).mean() < 0.9
    assert (q.argmax(0) == lab).mean() > 0.98


def test_zero_iterations_keeps_the_unary_argmax():
    img, _, p = _square_scene()
    q = crf_fgbg(img, p, CRFParams(iterations=0))
    np.testing.assert_array_equal(q > 0.5, p > 0.5)


def test_non_contiguous_and_float64_inputs_are_copied():
    img, gt, p = _square_scene()
    ref = crf_fgbg(img, p)
    img_f = np.asfortranarray(img)
    assert not img_f.flags.c_contiguous
    np.testing.assert_allclose(crf_fgbg(img_f, p.astype(np.float64)), ref, atol=1e-6)
    probs = np.stack([1 - p, p]).astype(np.float64)[:, :, ::-1][:, :, ::-1]
    np.testing.assert_allclose(dense_crf(img, probs)[1], ref, atol=1e-5)


@pytest.mark.parametrize("bad_image", [
    np.zeros((48, 48, 3), np.float32),          # float image
    np.zeros((48, 48), np.uint8),               # gray
    np.zeros((48, 48, 4), np.uint8),            # RGBA
    [[0, 0, 0]],                                # not an array
])
def test_bad_images_raise(bad_image):
    _, _, p = _square_scene()
    with pytest.raises(InvalidInputError):
        crf_fgbg(bad_image, p)


def test_bad_probabilities_raise():
    img, _, p = _square_scene()
    with pytest.raises(InvalidInputError, match="distribution"):
        dense_crf(img, np.stack([p, p]))                  # does not sum to 1
    with pytest.raises(InvalidInputError, match="HxW"):
        dense_crf(img, np.full((2, 10, 10), 0.5, np.float32))
    with pytest.raises(InvalidInputError):
        dense_crf(img, np.ones((1, 48, 48), np.float32))  # one label
    nan = np.stack([1 - p, p])
    nan[0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="non-finite"):
        dense_crf(img, nan)
    with pytest.raises(InvalidInputError):
        crf_fgbg(img, p + 0.5)                            # outside [0, 1]
    with pytest.raises(InvalidInputError):
        crf_fgbg(img, (p > 0.5))                          # not float
    with pytest.raises(InvalidInputError):
        as_params({"gauss_sxy": -1})
    with pytest.raises(InvalidInputError):
        as_params({"nonsense": 1})


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_matches_single_calls(workers):
    scenes = [_square_scene(seed=s) for s in range(5)]
    imgs = [s[0] for s in scenes]
    ps = [s[2] for s in scenes]
    out = crf_batch(imgs, ps, workers=workers)
    for o, im, p in zip(out, imgs, ps):
        np.testing.assert_allclose(o, crf_fgbg(im, p), atol=1e-6)
    multi = crf_batch(imgs[:2], [np.stack([1 - p, p]) for p in ps[:2]], workers=workers)
    assert multi[0].shape == (2, 48, 48)
    with pytest.raises(InvalidInputError):
        crf_batch(imgs, ps[:2])


def test_pool_start_method_forks_outside_kernels_only(monkeypatch):
    """Scripts/CLI/tests fork (cheap; an unguarded user script is not re-imported); inside a
    Jupyter kernel the pool must not fork the kernel (it hung notebook runs)."""
    import multiprocessing as mp
    import sys

    from wsss_lib.core.parallel import pool_context as _pool_context

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert _pool_context().get_start_method() == "fork"
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    expected = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    assert _pool_context().get_start_method() == expected


def test_write_masks_roundtrip(tmp_path):
    masks = [np.eye(8, dtype=bool), np.full((8, 8), 3, np.uint8)]
    paths = write_masks(tmp_path / "m", ["a", "b"], masks)
    np.testing.assert_array_equal(read_label(paths[0]), masks[0].astype(np.uint8))
    np.testing.assert_array_equal(read_label(paths[1]), masks[1])
    with pytest.raises(InvalidInputError):
        write_masks(tmp_path, ["../x"], masks[:1])
    with pytest.raises(InvalidInputError):
        write_masks(tmp_path, ["f"], [np.zeros((8, 8), np.float32)])


def test_falls_back_to_torch_when_pydensecrf_cannot_be_imported(monkeypatch, caplog, backend):
    """A failed pydensecrf build: the CRF still runs (torch lattice), says so once, and gives
    pydensecrf's result (computed here first, with pydensecrf present)."""
    if backend != "pydensecrf":
        pytest.skip("one run is enough")
    img, gt, p = _square_scene(seed=3)
    probs = np.stack([1 - p, p, np.zeros_like(p)])
    reference = dense_crf(img, probs, CRFParams.deeplab())
    ref_fg = crf_fgbg(img, p)
    monkeypatch.setattr(crf, "_BACKEND", None)
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # "import pydensecrf" now raises ImportError
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with caplog.at_level(logging.INFO, logger="wsss_lib.ops.crf"):
        out = dense_crf(img, probs, CRFParams.deeplab())
        fg = crf_batch([img, img], [p, p], workers=2)
    assert crf.backend() == "torch"
    lines = [r.getMessage() for r in caplog.records if r.name == "wsss_lib.ops.crf"]
    assert len(lines) == 1 and "torch" in lines[0] and "pydensecrf" in lines[0]
    assert out.shape == reference.shape and out.dtype == np.float32
    assert (out.argmax(0) == reference.argmax(0)).mean() >= 0.995
    assert np.abs(out - reference).max() < 1e-3
    np.testing.assert_allclose(fg[0], ref_fg, atol=1e-3)
    np.testing.assert_array_equal(fg[0], fg[1])


def test_backend_prefers_pydensecrf_when_importable(monkeypatch, caplog, backend):
    if backend != "pydensecrf":
        pytest.skip("one run is enough")
    monkeypatch.setattr(crf, "_BACKEND", None)
    with caplog.at_level(logging.INFO, logger="wsss_lib.ops.crf"):
        assert crf.backend() == "pydensecrf"
        assert crf.backend() == "pydensecrf"
    assert [r.getMessage() for r in caplog.records if r.name == "wsss_lib.ops.crf"] == ["dense CRF: pydensecrf"]


def test_crf_batch_on_a_cuda_device_runs_the_torch_lattice(monkeypatch):
    """On a GPU the CRF runs batched there through the lattice (pydensecrf is CPU-only): the
    device reaches crf_batch_torch, whatever this process's CPU backend is."""
    import wsss_lib.ops.crf_torch as ct

    seen = []
    real = ct.crf_batch_torch

    def spy(images, probs, params=None, device="auto", **kw):
        seen.append(str(device))
        return real(images, probs, params, device="cpu", **kw)  # no GPU needed to check the routing

    monkeypatch.setattr(ct, "crf_batch_torch", spy)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    fg = rng.uniform(0.2, 0.8, (20, 24)).astype(np.float32)
    out = crf_batch([image, image], [fg, fg], device="cuda:0")
    assert seen == ["cuda:0"] and [o.shape for o in out] == [(20, 24), (20, 24)]
    ref = crf_batch([image], [fg], device="cpu", workers=1)[0]  # CPU: the process's backend
    assert np.mean((out[0] > 0.5) == (ref > 0.5)) >= 0.995
