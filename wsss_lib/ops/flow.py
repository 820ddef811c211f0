"""Optical flow between consecutive video frames: compute, encode as an image, cache to disk.

Paper 2's motion stream takes optical flow as its input ([summary]); which flow method and how
it is encoded are our choices ([ours]), each a parameter:

* :func:`compute_flow` — dense flow ``(H, W, 2)`` (dx, dy in pixels, from frame 1 to frame 2) with
  OpenCV Farnebäck (default), OpenCV DIS, or torchvision RAFT (only when its weights are already
  on this machine: nothing is ever downloaded; ``method="auto"`` picks RAFT when they are,
  Farnebäck otherwise).
* :func:`encode_flow` — flow -> 3-channel image ``(3, H, W)`` in [0, 1]: channel 0 = dx, channel
  1 = dy (0.5 = no motion), channel 2 = magnitude; normalised by a fixed ``max_flow`` (default:
  8% of the image width, so a static pixel always looks the same) or per image.
* :func:`compute_dataset_flow` / :class:`FlowCache` — flow for every frame of a dataset (each
  frame paired with the next frame of its clip; the last frame with the previous one, negated),
  computed once with a progress bar and stored as compressed ``.npz`` (float16) files under a
  folder whose name encodes the method and its settings; a second call only checks the files
  exist (fast cache-hit path).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import cv2

from ..core.errors import InvalidInputError
from ..core.io import to_uint8

METHODS = ("farneback", "dis", "raft", "auto")
SUBTRACTS = ("none", "median", "affine")


# --------------------------------------------------------------------------------------------
# flow between two frames
# --------------------------------------------------------------------------------------------
@dataclass
class FlowParams:
    """Settings of a flow method (defaults suit 96x128 - 512x1024 frames with a few px motion).

    Farnebäck: ``pyr_scale, levels, winsize, iterations, poly_n, poly_sigma``; DIS: ``dis_preset``
    (0 ultrafast, 1 fast, 2 medium); RAFT: ``raft_iters`` refinement iterations.
    """

    method: str = "farneback"
    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 11
    iterations: int = 4
    poly_n: int = 5
    poly_sigma: float = 1.1
    dis_preset: int = 2
    raft_iters: int = 12

    def key(self) -> str:
        """Short stable name for a cache folder: ``<method>-<hash of the settings>``."""
        d = asdict(self)
        h = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.method}-{h}"


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    elif img.ndim != 2:
        raise InvalidInputError(f"expected a uint8 (H, W, 3) RGB or (H, W) gray frame, got shape {img.shape}")
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.size and float(np.nanmax(img)) <= 1.0:
            img = img * 255.0
        img = np.clip(np.nan_to_num(img) + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def raft_weights_path(small: bool = True) -> Path | None:
    """Path of torchvision's RAFT weights if already in the torch hub cache, else ``None``."""
    try:
        from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights  # lazy: torchvision only for the VGG-16 / RAFT paths
    except ImportError:  # pragma: no cover - old torchvision
        return None
    w = Raft_Small_Weights.DEFAULT if small else Raft_Large_Weights.DEFAULT
    p = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
    return p if p.is_file() else None


def resolve_method(method: str) -> str:
    """``"auto"`` -> ``"raft"`` when local RAFT weights exist, else ``"farneback"``; others checked."""
    if method not in METHODS:
        raise InvalidInputError(f"unknown flow method {method!r}; use one of {METHODS}")
    if method == "auto":
        return "raft" if raft_weights_path() is not None else "farneback"
    return method


_RAFT_CACHE: dict = {}


def _raft_model(device: torch.device):
    key = str(device)
    if key not in _RAFT_CACHE:
        from torchvision.models.optical_flow import raft_small  # lazy: torchvision only for the VGG-16 / RAFT paths

        p = raft_weights_path(small=True)
        if p is None:
            raise InvalidInputError(
                "flow method 'raft' needs torchvision's raft_small weights in the torch hub cache "
                f"({Path(torch.hub.get_dir()) / 'checkpoints'}); they are never downloaded here. "
                "Use --flow-method farneback or dis.")
        model = raft_small(weights=None)
        model.load_state_dict(torch.load(p, map_location="cpu", weights_only=True))
        _RAFT_CACHE[key] = model.eval().to(device)
    return _RAFT_CACHE[key]


def _raft_flow(img1: np.ndarray, img2: np.ndarray, iters: int, device: torch.device) -> np.ndarray:
    model = _raft_model(device)

    def prep(im):
        im = np.asarray(im)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        t = torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float()[None] / 127.5 - 1.0
        return t.to(device)

    a, b = prep(img1), prep(img2)
    h, w = a.shape[-2:]
    H, W = (h + 7) // 8 * 8, (w + 7) // 8 * 8
    if (H, W) != (h, w):
        a = F.pad(a, (0, W - w, 0, H - h), mode="replicate")
        b = F.pad(b, (0, W - w, 0, H - h), mode="replicate")
    with torch.no_grad():
        flow = model(a, b, num_flow_updates=iters)[-1][0, :, :h, :w]
    return flow.permute(1, 2, 0).cpu().numpy().astype(np.float32)


def compute_flow(img1: np.ndarray, img2: np.ndarray, params: FlowParams | None = None,
                 device: str | torch.device = "cpu", **overrides) -> np.ndarray:
    """Dense optical flow from ``img1`` to ``img2``.

    Parameters
    ----------
    img1, img2: uint8 ``(H, W, 3)`` RGB (or ``(H, W)`` gray, or float in [0, 1]) of the same size.
    params: a :class:`FlowParams` (``overrides`` such as ``method="dis"`` are applied on top).
    device: used by RAFT only.

    Returns
    -------
    float32 ``(H, W, 2)``: ``flow[y, x] = (dx, dy)`` such that ``img1[y, x] ~ img2[y + dy, x + dx]``.
    """
    p = FlowParams(**{**asdict(params or FlowParams()), **overrides})
    method = resolve_method(p.method)
    a, b = np.asarray(img1), np.asarray(img2)
    if a.shape[:2] != b.shape[:2]:
        raise InvalidInputError(f"frames differ in size: {a.shape[:2]} vs {b.shape[:2]}")
    if a.shape[0] < 8 or a.shape[1] < 8:
        raise InvalidInputError(f"frames must be at least 8x8 pixels, got {a.shape[:2]}")
    if method == "raft":
        if a.ndim == 2 or a.dtype != np.uint8:
            a, b = np.repeat(_gray(a)[..., None], 3, 2), np.repeat(_gray(b)[..., None], 3, 2)
        dev = torch.device(device) if not isinstance(device, torch.device) else device
        return _raft_flow(a, b, p.raft_iters, dev)
    g1, g2 = _gray(a), _gray(b)
    if method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(g1, g2, None, p.pyr_scale, p.levels, p.winsize, p.iterations,
                                            p.poly_n, p.poly_sigma, 0)
    else:  # dis
        dis = cv2.DISOpticalFlow_create(int(p.dis_preset))
        flow = dis.calc(g1, g2, None)
    return np.ascontiguousarray(flow, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# encoding flow as an image for the motion stream
# --------------------------------------------------------------------------------------------
def default_max_flow(width: int) -> float:
    """Fixed normalisation scale in pixels: 8% of the image width (~10 px at 128 px)."""
    return max(1.0, 0.08 * float(width))


def camera_motion(flow: torch.Tensor, keep: float = 0.8, step: int = 4) -> torch.Tensor:
    """Dominant (camera) motion of flow ``(B, 2, H, W)`` as a per-frame affine field ``(B, 2, H, W)``.

    [ours] A 6-parameter affine model ``(dx, dy) = A [x, y, 1]`` (pan, zoom, small rotation) is
    fitted by least squares on a ``step``-strided pixel grid, then refitted on the ``keep`` share
    of pixels it explains best (trimmed least squares: independently moving objects are left
    out of the second fit). Subtracting it leaves the motion relative to the static scene.
    """
    b, _, h, w = flow.shape
    ys = torch.linspace(-1, 1, h, device=flow.device)
    xs = torch.linspace(-1, 1, w, device=flow.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    full = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(-1, 3)  # (H*W, 3)
    sub = torch.stack([gx, gy, torch.ones_like(gx)], -1)[::step, ::step].reshape(-1, 3)  # (n, 3)
    target = flow[:, :, ::step, ::step].flatten(2).transpose(1, 2).double()  # (B, n, 2)
    design = sub.double().expand(b, -1, -1)
    weights = torch.ones(target.shape[:2], dtype=torch.float64, device=flow.device)
    for _ in range(2):
        sw = weights.sqrt()[..., None]
        params = torch.linalg.lstsq(design * sw, target * sw).solution  # (B, 3, 2)
        resid = (design @ params - target).norm(dim=-1)  # (B, n)
        cut = torch.quantile(resid, float(keep), dim=1, keepdim=True)
        weights = (resid <= cut).double()
    field = full.double() @ params  # (B, H*W, 2)
    return field.transpose(1, 2).reshape(b, 2, h, w).to(flow.dtype)


def encode_flow(flow, max_flow: float | None = None, normalisation: str = "fixed",
                subtract: str = "none") -> torch.Tensor:
    """Flow ``(H, W, 2)`` or ``(B, 2, H, W)`` / ``(2, H, W)`` -> flow image in [0, 1].

    Channels: ``0.5 + 0.5 * dx / s``, ``0.5 + 0.5 * dy / s`` (clipped to [0, 1]) and
    ``|flow| / s`` (clipped), with ``s = max_flow`` (``"fixed"``, default
    :func:`default_max_flow`) or the image's own 99th-percentile magnitude (``"per_image"``).
    ``subtract="median"`` [ours] first removes each frame's median flow (a crude camera-motion
    compensation: what is left is motion relative to the dominant, mostly static, scene);
    ``"affine"`` [ours] removes a robustly fitted affine camera motion (:func:`camera_motion`:
    pan and zoom); ``"none"`` keeps the raw flow.

    Returns float32 ``(3, H, W)`` for an ``(H, W, 2)``/``(2, H, W)`` input, ``(B, 3, H, W)`` for a batch.
    """
    if normalisation not in ("fixed", "per_image"):
        raise InvalidInputError(f"flow normalisation must be 'fixed' or 'per_image', got {normalisation!r}")
    if subtract not in SUBTRACTS:
        raise InvalidInputError(f"flow subtract must be one of {SUBTRACTS}, got {subtract!r}")
    f = torch.as_tensor(np.asarray(flow) if not torch.is_tensor(flow) else flow).float()
    single = False
    if f.ndim == 3 and f.shape[-1] == 2 and f.shape[0] != 2:
        f = f.permute(2, 0, 1)
    if f.ndim == 3:
        f, single = f[None], True
    if f.ndim != 4 or f.shape[1] != 2:
        raise InvalidInputError(f"flow must be (H, W, 2), (2, H, W) or (B, 2, H, W); got {tuple(f.shape)}")
    f = torch.nan_to_num(f)
    if subtract == "median":
        f = f - f.flatten(2).median(dim=2).values[:, :, None, None]
    elif subtract == "affine":
        f = f - camera_motion(f)
    mag = f.norm(dim=1, keepdim=True)
    if normalisation == "fixed":
        s = torch.full((f.shape[0], 1, 1, 1), float(max_flow or default_max_flow(f.shape[-1])))
    else:
        q = torch.quantile(mag.flatten(1), 0.99, dim=1).clamp(min=0.5)
        s = q.view(-1, 1, 1, 1)
    s = s.to(f.device)
    out = torch.cat([(0.5 + 0.5 * f / s).clamp(0, 1), (mag / s).clamp(0, 1)], dim=1)
    return out[0] if single else out


# --------------------------------------------------------------------------------------------
# which frame each frame is paired with
# --------------------------------------------------------------------------------------------
def flow_partners(samples: Sequence) -> list[tuple[int | str, float]]:
    """For each sample: ``(partner, sign)``, the frame its flow is computed to.

    A sample with a ``neighbor`` frame (Cityscapes ``leftImg8bit_sequence``, see
    :class:`~wsss_lib.data.base.Sample`) is paired with that file (a path; sign -1 for a previous
    frame, ``neighbor_offset < 0``): the adjacent video frame beats another labelled frame of the clip.
    Otherwise frame t of a clip is paired with the index of frame t+1 (sign +1); the last frame of a
    clip with frame t-1 and its flow negated (sign -1, a first-order forward-flow estimate). A still
    image or a one-frame clip gets ``(-1, 0)``: zero flow.
    """
    by_clip: dict[str, list[tuple[int, int]]] = {}
    for i, s in enumerate(samples):
        if getattr(s, "clip", "") and getattr(s, "frame", -1) >= 0:
            by_clip.setdefault(s.clip, []).append((s.frame, i))
    out: list[tuple[int, float]] = [(-1, 0.0)] * len(samples)
    for frames in by_clip.values():
        frames.sort()
        for k, (_, i) in enumerate(frames):
            if k + 1 < len(frames):
                out[i] = (frames[k + 1][1], 1.0)
            elif k > 0:
                out[i] = (frames[k - 1][1], -1.0)
    for i, s in enumerate(samples):
        nb = getattr(s, "neighbor", None)
        if nb is not None:
            out[i] = (nb, 1.0 if getattr(s, "neighbor_offset", 1) > 0 else -1.0)
    return out


# --------------------------------------------------------------------------------------------
# a known-answer check
# --------------------------------------------------------------------------------------------
def textured_pair(dx: float, dy: float, size: tuple[int, int] = (96, 128), seed: int = 0,
                  blur: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Two uint8 ``(H, W, 3)`` frames of a smooth random texture; the second is the first moved by
    ``(+dx, +dy)`` pixels (sub-pixel shifts by bilinear resampling), so the true flow is ``(dx, dy)``."""
    h, w = int(size[0]), int(size[1])
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((2 * h, 2 * w, 3)).astype(np.float32), (0, 0), blur)
    big = (big - big.min()) / max(float(big.max() - big.min()), 1e-6)
    ox, oy = w // 2, h // 2
    a = cv2.warpAffine(big, np.float32([[1, 0, -ox], [0, 1, -oy]]), (w, h), flags=cv2.INTER_LINEAR)
    b = cv2.warpAffine(big, np.float32([[1, 0, -ox + dx], [0, 1, -oy + dy]]), (w, h), flags=cv2.INTER_LINEAR)
    return to_uint8(torch.from_numpy(a)).numpy(), to_uint8(torch.from_numpy(b)).numpy()


def translation_error(method: str = "farneback", shifts: Sequence[tuple[float, float]] = ((2.5, -1.5), (0.4, 0.7),
                                                                                        (-4.0, 3.0)),
                      size: tuple[int, int] = (96, 128), seed: int = 0) -> dict:
    """Median end-point error (px) of ``method`` on :func:`textured_pair` for each shift, and the worst."""
    errs = {}
    for dx, dy in shifts:
        a, b = textured_pair(dx, dy, size, seed)
        f = compute_flow(a, b, method=method)
        errs[f"{dx:+.1f},{dy:+.1f}"] = float(np.median(np.linalg.norm(f - np.array([dx, dy], np.float32), axis=-1)))
    return {"per_shift": errs, "max_median_error": max(errs.values())}
