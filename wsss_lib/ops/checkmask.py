"""Simulated "check mask" annotation (paper 1's extra, cheap supervision [summary: recalled, unconfirmed]).

An annotator looks at each generated fg/bg mask and accepts or rejects it with ONE click. We
simulate the annotator with the ground truth: a mask is accepted when its IoU with the true
foreground exceeds ``tau`` (default 0.5 [ours]). Training then uses the mask term only on accepted
images; rejected images keep the tag term only (:func:`wsss_lib.ops.losses.fgbg_prior_loss` with
``accepted=``). The cost is reported as the number of clicks (one per checked image).
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import InvalidInputError
from .masks import evaluate_masks, per_image_iou


def simulate_checkmask(masks, labels, tau: float = 0.5, ignore_index: int = 255, noise: float = 0.0,
                       seed: int = 0) -> dict:
    """Accept/reject each mask like an annotator who accepts masks with IoU > ``tau``.

    ``masks``: bool/float ``(N, H, W)`` (float masks are thresholded at 0.5); ``labels`` int
    ``(N, H, W)`` (non-zero = foreground, ``ignore_index`` skipped). ``noise``: probability that the
    annotator clicks the wrong button (0 = perfect annotator).
    Returns ``{"accepted": bool (N,), "iou": float (N,), "clicks": int, "accept_rate": float}``.
    """
    m = masks.cpu().numpy() if torch.is_tensor(masks) else np.asarray(masks)
    t = labels.cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    if m.shape != t.shape or m.ndim != 3:
        raise InvalidInputError(f"masks and labels must both be (N, H, W); got {m.shape} and {t.shape}")
    if np.issubdtype(m.dtype, np.floating):
        m = m >= 0.5
    return checkmask_decisions(per_image_iou(m.astype(bool), t, ignore_index), tau, noise, seed)


def checkmask_decisions(iou, tau: float = 0.5, noise: float = 0.0, seed: int = 0) -> dict:
    """The annotator's clicks given each mask's IoU with the true foreground ``iou`` float ``(N,)``
    in [0, 1] (computed image by image for data of varying sizes): accept when ``iou > tau``, a wrong
    click with probability ``noise``. Returns the dict of :func:`simulate_checkmask`."""
    if not 0.0 <= float(tau) <= 1.0:
        raise InvalidInputError(f"tau must lie in [0, 1], got {tau}")
    if not 0.0 <= float(noise) <= 1.0:
        raise InvalidInputError(f"noise must lie in [0, 1], got {noise}")
    iou = np.asarray(iou, dtype=np.float64).reshape(-1)
    accepted = iou > float(tau)
    if noise > 0:
        flip = np.random.default_rng(seed).random(len(accepted)) < noise
        accepted = accepted ^ flip
    n = int(len(accepted))
    return {"accepted": accepted, "iou": iou, "clicks": n, "accept_rate": float(accepted.mean()) if n else float("nan")}


def accepted_mask_quality(masks, labels, accepted, ignore_index: int = 255) -> dict:
    """Pooled mask IoU over all images vs. over the accepted ones only (what the check buys)."""
    m = masks.cpu().numpy() if torch.is_tensor(masks) else np.asarray(masks)
    t = labels.cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    a = np.asarray(accepted, dtype=bool)
    if np.issubdtype(m.dtype, np.floating):
        m = m >= 0.5
    out = {"all": evaluate_masks(m, t, ignore_index)["iou"]}
    out["accepted"] = evaluate_masks(m[a], t[a], ignore_index)["iou"] if a.any() else float("nan")
    out["rejected"] = evaluate_masks(m[~a], t[~a], ignore_index)["iou"] if (~a).any() else float("nan")
    return out
