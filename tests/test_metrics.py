"""Confusion-matrix mIoU, mask scores and AP, cross-checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wsss_lib.core.errors import InvalidInputError
from wsss_lib.core.metrics import ConfusionMatrix, average_precision, mask_scores


def _iou_by_sets(t, p, n, ignore=255):
    """Independent per-class IoU with boolean masks (no confusion matrix)."""
    keep = t != ignore
    out = []
    for c in range(n):
        a, b = (t == c) & keep, (p == c) & keep
        union = (a | b).sum()
        out.append(np.nan if union == 0 else (a & b).sum() / union)
    return np.array(out)


@pytest.mark.parametrize("n", [2, 5, 21])
def test_confusion_matrix_matches_set_iou(n):
    rng = np.random.default_rng(n)
    t = rng.integers(0, n, size=(3, 17, 19))
    t[rng.random(t.shape) < 0.1] = 255
    p = np.where(rng.random(t.shape) < 0.7, np.where(t == 255, 0, t), rng.integers(0, n, size=t.shape))
    cm = ConfusionMatrix(n).update(torch.from_numpy(t), torch.from_numpy(p))
    np.testing.assert_allclose(cm.iou(), _iou_by_sets(t, p, n), equal_nan=True)
    assert cm.mat.sum() == (t != 255).sum()


def test_batches_add_up_and_noncontiguous_input():
    rng = np.random.default_rng(0)
    t = torch.from_numpy(rng.integers(0, 4, size=(8, 10, 12)))
    p = torch.from_numpy(rng.integers(0, 4, size=(8, 10, 12)))
    whole = ConfusionMatrix(4).update(t, p)
    parts = ConfusionMatrix(4)
    for i in range(0, 8, 3):
        parts += ConfusionMatrix(4).update(t[i:i + 3].transpose(1, 2), p[i:i + 3].transpose(1, 2))
    assert torch.equal(whole.mat, parts.mat)


def test_bad_labels_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(InvalidInputError, match="outside"):
        cm.update(np.array([0, 1, 7]), np.array([0, 1, 2]))
    with pytest.raises(InvalidInputError, match="differ"):
        cm.update(np.zeros(3, int), np.zeros(4, int))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 8), h=st.integers(1, 12), w=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_property_perfect_prediction_and_permutation(n, h, w, seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, n, size=(h, w))
    assert ConfusionMatrix(n).update(t, t).miou() == pytest.approx(1.0)
    p = rng.integers(0, n, size=(h, w))
    perm = rng.permutation(n)
    a = ConfusionMatrix(n).update(t, p).miou()
    b = ConfusionMatrix(n).update(perm[t], perm[p]).miou()
    assert a == pytest.approx(b)
    assert 0.0 <= a <= 1.0


def test_mask_scores():
    t = np.array([[0, 1, 1], [0, 255, 2]])
    p = np.array([[1, 1, 0], [0, 1, 1]])
    s = mask_scores(p, t)
    # fg gt at (0,1),(0,2),(1,2); pred fg at (0,0),(0,1),(1,2) [(1,1) ignored]
    assert s["iou"] == pytest.approx(2 / 4)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)


def test_average_precision_hand_case():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.1, 0.2]])
    targets = np.array([[1, 0], [0, 1], [1, 0]])
    out = average_precision(scores, targets)
    assert out["ap"][0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert out["ap"][1] == pytest.approx(1.0)
    assert out["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
