"""Simulated check-mask annotator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss_lib.ops.checkmask import accepted_mask_quality, checkmask_decisions, simulate_checkmask
from wsss_lib.ops.masks import per_image_iou
from wsss_lib.core.errors import InvalidInputError


def _data():
    labels = np.zeros((4, 10, 10), np.int64)
    labels[:, 2:8, 2:8] = 1
    labels[:, 2, 2] = 255
    masks = np.zeros((4, 10, 10), bool)
    masks[0, 2:8, 2:8] = True    # perfect
    masks[1, 2:8, 2:6] = True    # IoU ~ 0.66
    masks[2, 0:3, 0:3] = True    # poor
    masks[3] = True              # whole image: IoU 0.35
    return masks, labels


def test_accepts_by_iou_threshold():
    masks, labels = _data()
    r = simulate_checkmask(masks, labels, tau=0.5)
    assert r["accepted"].tolist() == [True, True, False, False]
    assert r["clicks"] == 4 and r["accept_rate"] == 0.5
    assert r["iou"][0] == pytest.approx(1.0)
    assert simulate_checkmask(masks, labels, tau=0.7)["accepted"].tolist() == [True, False, False, False]
    # float masks are thresholded at 0.5; tensors work too
    r2 = simulate_checkmask(torch.from_numpy(masks.astype(np.float32)), torch.from_numpy(labels))
    assert r2["accepted"].tolist() == r["accepted"].tolist()


def test_noisy_annotator_is_seeded():
    masks, labels = _data()
    a = simulate_checkmask(masks, labels, noise=0.5, seed=3)["accepted"]
    b = simulate_checkmask(masks, labels, noise=0.5, seed=3)["accepted"]
    assert (a == b).all()


def test_quality_of_accepted_masks():
    masks, labels = _data()
    r = simulate_checkmask(masks, labels)
    q = accepted_mask_quality(masks, labels, r["accepted"])
    assert q["accepted"] > q["all"] > q["rejected"]


def test_bad_input():
    masks, labels = _data()
    with pytest.raises(InvalidInputError):
        simulate_checkmask(masks[:2], labels)
    with pytest.raises(InvalidInputError):
        simulate_checkmask(masks, labels, tau=2)


def test_noise_flips_about_that_fraction_of_decisions():
    """noise p: each decision is flipped with probability p (1000 masks, p = 0.2 -> 15-25 % flipped,
    for several seeds); noise 0 is the deterministic IoU > tau rule whatever the seed; noise 1 flips all."""
    rng = np.random.default_rng(0)
    labels = (rng.random((1000, 6, 6)) < 0.5).astype(np.int64)
    masks = np.where(rng.random((1000, 1, 1)) < 0.5, labels > 0, rng.random((1000, 6, 6)) < 0.5)
    clean = simulate_checkmask(masks, labels, tau=0.5)["accepted"]
    np.testing.assert_array_equal(clean, per_image_iou(masks, labels) > 0.5)
    assert 0.3 < clean.mean() < 0.7  # both decisions are common
    for seed in (0, 1, 7):
        np.testing.assert_array_equal(simulate_checkmask(masks, labels, noise=0.0, seed=seed)["accepted"], clean)
        noisy = simulate_checkmask(masks, labels, noise=0.2, seed=seed)
        flipped = (noisy["accepted"] != clean).mean()
        assert 0.15 <= flipped <= 0.25, (seed, flipped)
        np.testing.assert_array_equal(noisy["iou"], per_image_iou(masks, labels))  # the IoU is not noised
    assert (simulate_checkmask(masks, labels, noise=1.0)["accepted"] != clean).all()
    with pytest.raises(InvalidInputError):
        simulate_checkmask(masks, labels, noise=1.5)


def test_decisions_from_per_image_iou_match_the_array_path():
    """Data of varying image sizes gives the annotator one IoU per image: the same clicks as the
    (N, H, W) path, the same noise for the same seed."""
    masks, labels = _data()
    iou = [per_image_iou(m[None], t[None])[0] for m, t in zip(masks, labels)]
    for kw in ({}, {"tau": 0.7}, {"noise": 0.5, "seed": 3}):
        a, b = simulate_checkmask(masks, labels, **kw), checkmask_decisions(iou, **kw)
        np.testing.assert_array_equal(a["accepted"], b["accepted"])
        np.testing.assert_allclose(a["iou"], b["iou"])
        assert a["clicks"] == b["clicks"] == 4
    with pytest.raises(InvalidInputError, match="tau"):
        checkmask_decisions(iou, tau=-0.1)
    assert checkmask_decisions([], tau=0.5)["clicks"] == 0
