"""Paired differences with two-way (seeds x images) bootstrap intervals (wsss_lib.core.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from wsss_lib.core.errors import InvalidInputError
from wsss_lib.core.metrics import ConfusionMatrix, miou_from_confusion, per_image_confusion
from wsss_lib.core.stats import bootstrap_ci, mean_ci, paired_difference, seed_mious


def _labels(rng, n=40, c=3, hw=(8, 8)):
    return rng.integers(0, c, size=(n, *hw))


def _noisy(rng, lab, p, c=3):
    """Predictions equal to ``lab`` except a fraction ``p`` of pixels set at random."""
    pred = lab.copy()
    flip = rng.random(lab.shape) < p
    pred[flip] = rng.integers(0, c, size=int(flip.sum()))
    return pred


class TestPerImageConfusion:
    def test_sums_to_the_dataset_matrix(self):
        rng = np.random.default_rng(0)
        lab = _labels(rng)
        lab[0, 0, :4] = 255
        pred = _noisy(rng, np.where(lab == 255, 0, lab), 0.3)
        per = per_image_confusion(lab, pred, 3)
        assert per.shape == (40, 3, 3)
        cm = ConfusionMatrix(3).update(lab, pred)
        np.testing.assert_array_equal(per.sum(0), cm.mat.numpy())
        assert miou_from_confusion(per.sum(0)) == pytest.approx(cm.miou())

    def test_bad_input(self):
        with pytest.raises(InvalidInputError):
            per_image_confusion(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), 3)
        with pytest.raises(InvalidInputError):
            per_image_confusion(np.full((1, 2, 2), 7), np.zeros((1, 2, 2)), 3)
        with pytest.raises(InvalidInputError):
            miou_from_confusion(np.zeros((3, 4)))

    def test_absent_class_is_ignored(self):
        m = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 0]])
        assert miou_from_confusion(m) == pytest.approx(1.0)


class TestBootstrap:
    def test_interval_covers_the_value_and_shrinks_with_more_items(self):
        rng = np.random.default_rng(1)
        widths = []
        for n in (20, 320):
            x = rng.normal(1.0, 1.0, size=n)
            r = bootstrap_ci(lambda i: x[i].mean(), (n,), n_resamples=1000)
            assert r["low"] <= r["value"] <= r["high"]
            widths.append(r["high"] - r["low"])
        assert widths[1] < widths[0] / 2.5  # ~ 1/sqrt(16) = 1/4

    def test_one_seed_keeps_the_seed_dimension_fixed(self):
        x = np.arange(30, dtype=float).reshape(1, 30)
        r = bootstrap_ci(lambda si, ii: x[np.ix_(si, ii)].mean(), (1, 30), n_resamples=500)
        assert r["low"] < r["value"] < r["high"]

    def test_bad_input(self):
        with pytest.raises(InvalidInputError):
            bootstrap_ci(lambda i: 0.0, (0,))
        with pytest.raises(InvalidInputError):
            bootstrap_ci(lambda i: 0.0, (3,), confidence=1.5)


class TestPairedDifference:
    def _methods(self, gap, seeds=4, n=60):
        rng = np.random.default_rng(2)
        lab = _labels(rng, n)
        a = np.stack([per_image_confusion(lab, _noisy(rng, lab, 0.2), 3) for _ in range(seeds)])
        b = np.stack([per_image_confusion(lab, _noisy(rng, lab, 0.2 + gap), 3) for _ in range(seeds)])
        return a, b

    def test_a_real_gap_has_an_interval_above_zero(self):
        a, b = self._methods(0.3)
        r = paired_difference(a, b, n_resamples=500)
        assert r["value"] == pytest.approx(np.mean(seed_mious(a) - seed_mious(b)))
        assert r["value"] == pytest.approx(r["a"] - r["b"])
        assert 0 < r["low"] <= r["value"] <= r["high"]
        assert len(r["per_seed"]) == 4

    def test_no_gap_has_an_interval_around_zero(self):
        a, b = self._methods(0.0)
        r = paired_difference(a, b, n_resamples=500)
        assert r["low"] < 0 < r["high"]

    def test_ratio_and_classes(self):
        a, b = self._methods(0.3)
        r = paired_difference(a, b, classes=[1, 2], kind="ratio", n_resamples=200)
        assert r["value"] == pytest.approx(seed_mious(a, [1, 2]).mean() / seed_mious(b, [1, 2]).mean())
        assert r["value"] > 1
        m = mean_ci(a, n_resamples=200)
        assert m["low"] <= m["value"] <= m["high"] and m["value"] == pytest.approx(seed_mious(a).mean())

    def test_mismatched_stacks_raise(self):
        a, b = self._methods(0.1)
        with pytest.raises(InvalidInputError):
            paired_difference(a, b[:, :10])
        with pytest.raises(InvalidInputError):
            paired_difference(a[0], b[0])
        with pytest.raises(InvalidInputError):
            paired_difference(a, b, kind="other")
