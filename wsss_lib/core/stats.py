"""Paired differences over seeds and test images with bootstrap confidence intervals.

A claim of this project is a *paired difference*: two methods scored on the same images with the
same network and post-processing, repeated over training seeds. Its uncertainty has two sources,
the seeds (training noise) and the test images (which images happen to be in the test set), so
the interval comes from a two-way bootstrap: seeds and images are resampled independently
(``scipy.stats.bootstrap`` with ``paired=False`` over the index arrays), and the statistic is
recomputed from per-image confusion matrices (:func:`~wsss_lib.core.metrics.per_image_confusion`),
so a resampled dataset's mIoU is computed exactly as the real one's (pooled counts, not a mean of
per-image IoUs).

* :func:`bootstrap_ci` — point value + percentile interval of any ``statistic(seed_idx, item_idx)``.
* :func:`paired_difference` — ``mean_seeds(mIoU(A) - mIoU(B))`` (or the ratio of the means) of two
  stacks of per-image confusion matrices ``(S, N, C, C)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import stats

from .errors import InvalidInputError
from .metrics import miou_from_confusion


def bootstrap_ci(statistic: Callable[..., float], sizes: Sequence[int], confidence: float = 0.95,
                 n_resamples: int = 2000, seed: int = 0) -> dict:
    """Point value and percentile bootstrap interval of ``statistic(*index_arrays)``.

    ``sizes``: the length of each resampled dimension (e.g. ``(n_seeds, n_images)``); the statistic
    receives one integer index array per dimension (``np.arange(n)`` for the point value, resampled
    with replacement, each dimension independently, for the interval). A dimension of size 1 is
    kept as is (one seed has no seed-to-seed spread: the interval then covers the images only).
    Returns ``{"value", "low", "high", "confidence", "n_resamples", "sizes"}``.
    """
    sizes = [int(n) for n in sizes]
    if not sizes or min(sizes) < 1:
        raise InvalidInputError(f"every resampled dimension needs >= 1 element, got sizes {sizes}")
    if not 0 < confidence < 1:
        raise InvalidInputError(f"confidence must lie in (0, 1), got {confidence}")
    full = [np.arange(n) for n in sizes]
    value = float(statistic(*full))
    free = [i for i, n in enumerate(sizes) if n > 1]
    low = high = value
    if free:
        def stat(*resampled):
            idx = list(full)
            for i, r in zip(free, resampled):
                idx[i] = np.asarray(r, dtype=np.int64)
            return statistic(*idx)

        res = stats.bootstrap(tuple(full[i] for i in free), stat, paired=False, vectorized=False,
                              n_resamples=int(n_resamples), confidence_level=confidence, method="percentile",
                              rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"value": value, "low": low, "high": high, "confidence": confidence, "n_resamples": int(n_resamples),
            "sizes": sizes}


def _stack(conf, name: str) -> np.ndarray:
    c = np.asarray(conf)
    if c.ndim != 4 or c.shape[-1] != c.shape[-2]:
        raise InvalidInputError(f"{name} must be per-seed, per-image confusion matrices (S, N, C, C), got {c.shape}")
    return c


def seed_mious(conf, classes: Sequence[int] | None = None, items=None) -> np.ndarray:
    """mIoU per seed ``(S,)`` of ``conf`` ``(S, N, C, C)`` pooled over the images ``items`` (default all)."""
    c = _stack(conf, "conf")
    if items is not None:
        c = c[:, np.asarray(items)]
    return miou_from_confusion(c.sum(1), classes)


def paired_difference(a, b, classes: Sequence[int] | None = None, kind: str = "diff", **kw) -> dict:
    """Paired comparison of methods A and B scored on the same images over the same seeds.

    ``a``, ``b``: per-seed, per-image confusion matrices ``(S, N, C, C)`` (seed s of A and B share
    the data, classifier and post-processing). ``kind="diff"``: mean over seeds of
    ``mIoU_A - mIoU_B``; ``"ratio"``: ``mean_s mIoU_A / mean_s mIoU_B``. ``classes``: the classes
    averaged (default all). ``kw`` goes to :func:`bootstrap_ci`. Returns its dict plus
    ``"a"``/``"b"`` (mean mIoU of each) and ``"per_seed"`` (A - B, or A / B, per seed).
    """
    a, b = _stack(a, "a"), _stack(b, "b")
    if a.shape[:2] != b.shape[:2]:
        raise InvalidInputError(f"a and b must cover the same seeds and images; got {a.shape[:2]} and {b.shape[:2]}")
    if kind not in ("diff", "ratio"):
        raise InvalidInputError(f"kind must be 'diff' or 'ratio', got {kind!r}")

    def statistic(si, ii):
        ma, mb = seed_mious(a[si], classes, ii), seed_mious(b[si], classes, ii)
        return float(np.mean(ma - mb)) if kind == "diff" else float(np.mean(ma) / np.mean(mb))

    out = bootstrap_ci(statistic, a.shape[:2], **kw)
    ma, mb = seed_mious(a, classes), seed_mious(b, classes)
    out.update(kind=kind, a=float(ma.mean()), b=float(mb.mean()),
               per_seed=[float(v) for v in (ma - mb if kind == "diff" else ma / mb)])
    return out


def mean_ci(conf, classes: Sequence[int] | None = None, **kw) -> dict:
    """Mean mIoU over seeds of one method ``(S, N, C, C)`` with its two-way bootstrap interval."""
    c = _stack(conf, "conf")
    out = bootstrap_ci(lambda si, ii: float(seed_mious(c[si], classes, ii).mean()), c.shape[:2], **kw)
    out["per_seed"] = [float(v) for v in seed_mious(c, classes)]
    return out
