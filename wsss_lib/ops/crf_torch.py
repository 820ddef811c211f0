"""A batched, torch-native dense CRF (mean field) that runs on CPU or GPU [ours].

Same model and parameter meaning as pydensecrf's ``DenseCRF2D`` as called by
:func:`wsss_lib.ops.crf.dense_crf` (the reference; see :class:`wsss_lib.ops.crf.CRFParams`):

* unary ``-log p`` (``p`` clipped to ``[eps, 1]``);
* a Gaussian kernel ``exp(-|p_i - p_j|^2 / (2 gauss_sxy^2))`` over pixel positions, weight
  ``gauss_compat``; a bilateral kernel ``exp(-|p_i - p_j|^2 / (2 sxy^2) - |I_i - I_j|^2 / (2 srgb^2))``
  over positions and 0-255 RGB, weight ``bilateral_compat``; Potts compatibility;
* symmetric kernel normalisation ``D^-1/2 K D^-1/2`` with ``D = K 1`` (pydensecrf's default
  ``NORMALIZE_SYMMETRIC``), the self-pair included;
* ``iterations`` mean-field steps ``Q <- softmax(log p + sum_k w_k D_k^-1/2 K_k D_k^-1/2 Q)``.

Both kernels are filtered, like in pydensecrf, with the permutohedral lattice (Adams, Baek & Davis
2010; :mod:`wsss_lib.ops.permutohedral`), an *approximation* of these Gaussians, with pydensecrf's
conventions (feature scaling, ``[1/2 1 1/2]`` blur in direction order 0..d, ``alpha``), so the
messages equal pydensecrf's up to float rounding and the two CRFs agree on practically every
pixel (``benchmarks/bench_crf.py``). The lattice (vertex keys, barycentric weights, blur
neighbours) depends only on the image, so it is built once per image, the normalisation and the
compatibility weight are folded into its sparse splat/slice matrices, and every iteration filters
all C labels at once: per iteration one sparse matmul to splat, ``2 (d + 1)`` row gathers to blur
and one sparse matmul to slice, O(N C). Images of a batch share one lattice (disjoint vertices).
The position-only lattice depends only on the image size and is cached for a few sizes.
``gaussian="exact"`` computes the Gaussian term exactly instead (separable, truncated at
``truncate * gauss_sxy`` px: two banded matmuls up to 512 px sides, 1-D convolutions beyond).

Cost: linear in pixels and labels. On CPU the lattice construction (two sorts of O(N (d + 1))
int64 keys) dominates with few labels; see ``benchmarks/README.md`` for the measured ratio to
pydensecrf. :func:`crf_batch_torch` is a drop-in for :func:`wsss_lib.ops.crf.crf_batch` (e.g. on
CUDA), and :mod:`wsss_lib.ops.crf` falls back to this module when pydensecrf cannot be imported.
Everything runs under ``torch.no_grad``.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import InvalidInputError
from ..core.runtime import select_device
from . import permutohedral
from .crf_params import as_params

# pixels whose lattices are built and filtered together (images are grouped under it)
GROUP_MAX_ELEMENTS = {"cpu": 2**21, "cuda": 2**23}
# keyword arguments of the former Monte-Carlo bilateral term, accepted (ignored) with a warning
_DEPRECATED = ("stride", "max_sources", "kernel_dtype")


def _params(params: Any):
    """Accept what :func:`wsss_lib.ops.crf.as_params` accepts (CRFParams, dict, None)."""
    return as_params(params)


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch tensor (or numpy array), got {type(x).__name__}")
    return x


def _check_inputs(images, probs, tol: float) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate shapes/dtypes/ranges; returns float32 images in 0-255, float32 probs, batched flag."""
    images = _as_tensor(images, "images")
    probs = _as_tensor(probs, "probs")
    unbatched = images.dim() == 3 and probs.dim() == 3
    if unbatched:
        images, probs = images.unsqueeze(0), probs.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise InvalidInputError(f"images must be (B, 3, H, W) (or (3, H, W)), got shape {tuple(images.shape)}")
    if probs.dim() != 4 or probs.shape[1] < 2:
        raise InvalidInputError(f"probs must be (B, C, H, W) with C >= 2, got shape {tuple(probs.shape)}")
    if images.shape[0] != probs.shape[0] or images.shape[2:] != probs.shape[2:]:
        raise InvalidInputError(f"images {tuple(images.shape)} and probs {tuple(probs.shape)} differ in batch or H, W")
    if images.shape[2] < 1 or images.shape[3] < 1 or images.shape[0] < 1:
        raise InvalidInputError(f"empty input: images {tuple(images.shape)}")
    if not probs.is_floating_point():
        raise InvalidInputError(f"probs must be float, got dtype {probs.dtype}")
    dev = probs.device
    probs = probs.to(torch.float32)
    s = probs.sum(1)
    if not bool(torch.isfinite(s).all()):
        raise InvalidInputError("probs contain non-finite values")
    if float(probs.min()) < -tol or float((s - 1).abs().max()) > tol:
        raise InvalidInputError(f"probs must be a distribution over C at every pixel (tol {tol}); sums lie in "
                                f"[{float(s.min()):.4f}, {float(s.max()):.4f}], min value {float(probs.min()):.4f}")
    if images.dtype == torch.uint8:
        images = images.to(dev, torch.float32)
    elif images.is_floating_point():
        images = images.to(dev, torch.float32)
        if not bool(torch.isfinite(images).all()) or float(images.min()) < -1e-3 or float(images.max()) > 1 + 1e-3:
            raise InvalidInputError("float images must be finite RGB in [0, 1] (or pass uint8 0-255)")
        images = images.clamp(0, 1) * 255.0
    else:
        raise InvalidInputError(f"images must be uint8 0-255 or float [0, 1], got dtype {images.dtype}")
    return images, probs, unbatched


def _band_matrix(n: int, sigma: float, radius: int, device) -> torch.Tensor:
    """``G[i, j] = exp(-(i - j)^2 / (2 sigma^2))`` for ``|i - j| <= radius``, else 0; (n, n)."""
    i = torch.arange(n, device=device, dtype=torch.float32)
    d = i[:, None] - i[None, :]
    return torch.where(d.abs() <= radius, torch.exp(-0.5 * (d / sigma) ** 2), torch.zeros((), device=device))


# up to this side length the separable Gaussian is two small matmuls (fast BLAS); beyond, 1-D convs
_MATMUL_MAX_SIDE = 512


def _gauss_filter(x: torch.Tensor, sigma: float, truncate: float) -> torch.Tensor:
    """Unnormalised separable Gaussian sum over pixels, zero outside the image. ``x`` (B, C, H, W)."""
    b, c, h, w = x.shape
    ry = min(h - 1, int(math.ceil(truncate * sigma)))
    rx = min(w - 1, int(math.ceil(truncate * sigma)))
    if max(h, w) <= _MATMUL_MAX_SIDE:
        y = x.reshape(b * c, h, w) @ _band_matrix(w, sigma, rx, x.device)  # symmetric: G^T = G
        y = _band_matrix(h, sigma, ry, x.device) @ y
        return y.reshape(b, c, h, w)
    kx = torch.exp(-0.5 * (torch.arange(-rx, rx + 1, device=x.device, dtype=torch.float32) / sigma) ** 2)
    ky = torch.exp(-0.5 * (torch.arange(-ry, ry + 1, device=x.device, dtype=torch.float32) / sigma) ** 2)
    y = F.conv1d(x.reshape(-1, 1, w), kx.view(1, 1, -1), padding=rx).reshape(b * c, h, w)
    y = F.conv1d(y.transpose(1, 2).reshape(-1, 1, h), ky.view(1, 1, -1), padding=ry)
    return y.reshape(b * c, w, h).transpose(1, 2).reshape(b, c, h, w)


def _positions(h: int, w: int, device) -> torch.Tensor:
    """``(H*W, 2)`` float32 pixel coordinates ``(x, y)`` in row-major order (pydensecrf's order)."""
    yy, xx = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2)


class _LatticeKernel:
    """``weight * D^-1/2 K D^-1/2`` with ``K`` a permutohedral-lattice Gaussian and ``D = K 1``
    (the same lattice), folded into the lattice's splat/slice matrices. ``shared``: one lattice for
    every image (position-only features), the images' channels filtered side by side."""

    def __init__(self, features: torch.Tensor, weight: float, shared: bool = False):
        lat = permutohedral.build_lattice(features)
        ones = torch.ones(features.shape[0], features.shape[1], 1, device=features.device)
        norm = (permutohedral.lattice_filter(lat, ones)[..., 0] + 1e-20).rsqrt()  # (B or 1, N)
        self.lattice = permutohedral.rescale(lat, before=norm, after=norm * weight)
        self.shared = shared

    def add_message(self, energy: torch.Tensor, q: torch.Tensor) -> None:
        """``energy += message(q)`` for contiguous ``(G, N, C)`` tensors."""
        g, n, c = q.shape
        lat = self.lattice
        if self.shared and g > 1:  # (G, N, C) -> (1, N, G*C) and back
            x = q.permute(1, 0, 2).reshape(1, n, g * c)
            y = permutohedral.slice_values(lat, permutohedral.blur(lat, permutohedral.splat(lat, x)))
            energy.add_(y.view(n, g, c).permute(1, 0, 2))
        else:
            permutohedral.slice_values(lat, permutohedral.blur(lat, permutohedral.splat(lat, q)), add_to=energy)


@functools.lru_cache(maxsize=4)
def _position_kernel(h: int, w: int, sxy: float, compat: float, device: str) -> _LatticeKernel:
    """The Gaussian (position-only) kernel depends only on the image size: built once per size
    and reused by later calls (a few recent sizes are kept)."""
    return _LatticeKernel((_positions(h, w, torch.device(device)) / sxy)[None], compat, shared=True)


def _crf_group(images: torch.Tensor, probs: torch.Tensor, p, gaussian: str, truncate: float) -> torch.Tensor:
    g, c, h, w = probs.shape
    n = h * w
    logp = probs.clamp(min=p.eps, max=1.0).log().reshape(g, c, n).transpose(1, 2).contiguous()  # (G, N, C)
    q = torch.softmax(logp, -1)
    iters = int(p.iterations)
    if iters > 0:
        pos = _positions(h, w, probs.device)
        kernels = []
        if p.gauss_compat > 0 and gaussian == "lattice":
            kernels.append(_position_kernel(h, w, float(p.gauss_sxy), float(p.gauss_compat), str(probs.device)))
        elif p.gauss_compat > 0:
            ones = torch.ones(1, 1, h, w, device=probs.device)
            norm_g = _gauss_filter(ones, p.gauss_sxy, truncate).clamp_min(1e-20).rsqrt().reshape(1, n, 1)
        if p.bilateral_compat > 0:
            col = images.reshape(g, 3, n).transpose(1, 2) / p.bilateral_srgb
            kernels.append(_LatticeKernel(torch.cat([(pos / p.bilateral_sxy).expand(g, n, 2), col], -1),
                                          p.bilateral_compat))
        energy = torch.empty_like(logp)
        for _ in range(iters):
            energy.copy_(logp)
            for k in kernels:
                k.add_message(energy, q)
            if p.gauss_compat > 0 and gaussian == "exact":
                x = (q * norm_g).transpose(1, 2).reshape(g, c, h, w)
                y = _gauss_filter(x, p.gauss_sxy, truncate).reshape(g, c, n).transpose(1, 2)
                energy.add_(y * norm_g, alpha=p.gauss_compat)
            if c >= 8:  # torch's fused softmax wins with many labels, the in-place one with few (measured)
                torch.softmax(energy, -1, out=q)
            else:  # in place, into the buffer q held (the new q)
                q, energy = energy, q
                q.sub_(q.amax(-1, keepdim=True)).exp_()
                q.div_(q.sum(-1, keepdim=True))
    return q.transpose(1, 2).reshape(g, c, h, w)


@torch.no_grad()
def dense_crf_torch(images, probs, params=None, *, gaussian: str = "lattice", group_max_elements: int | None = None,
                    truncate: float = 4.0, tol: float = 1e-3, cpu_threads: int | None = 1,
                    **deprecated) -> torch.Tensor:
    """Batched dense CRF on the device of ``probs``.

    ``images``: uint8 ``(B, 3, H, W)`` in 0-255 or float in [0, 1] (``(3, H, W)`` also accepted);
    ``probs``: float ``(B, C, H, W)``, C >= 2, a distribution over C at each pixel (within ``tol``).
    ``params``: :class:`wsss_lib.ops.crf.CRFParams`, a dict of its fields, or None (defaults).
    ``gaussian``: how the position-only kernel is filtered: ``"lattice"`` (default; the
    permutohedral lattice, as pydensecrf) or ``"exact"`` (the separable Gaussian, truncated at
    ``truncate`` sigmas, zero outside the image).
    ``group_max_elements``: pixels filtered together (default by device: 2**21 on CPU, 2**23 on
    CUDA); the batch is processed in groups of whole images under it (an image is never split).
    ``cpu_threads``: torch threads on CPU during the call (restored afterwards; None = leave
    torch's setting). Default 1, like pydensecrf: the many small ops of the lattice lost 2-6x to
    thread hand-offs at 2 threads on our shared 2-core machine (``benchmarks/bench_crf.py``).
    ``stride``, ``max_sources``, ``kernel_dtype`` (the former sampled bilateral term) are deprecated:
    accepted and ignored with a ``DeprecationWarning``.
    Returns float32 ``(B, C, H, W)`` marginals that sum to 1 over C (same rank as the input).
    Non-contiguous inputs are fine. Raises :class:`InvalidInputError` on bad input.
    """
    unknown = sorted(set(deprecated) - set(_DEPRECATED))
    if unknown:
        raise TypeError(f"dense_crf_torch() got unexpected keyword arguments {unknown}")
    if deprecated:
        warnings.warn(f"dense_crf_torch: {sorted(deprecated)} belonged to the removed sampled bilateral term and "
                      "are ignored (the permutohedral lattice needs no stride)", DeprecationWarning, stacklevel=3)
    p = _params(params)
    if gaussian not in ("lattice", "exact"):
        raise InvalidInputError(f"gaussian must be 'lattice' or 'exact', got {gaussian!r}")
    if truncate <= 0:
        raise InvalidInputError(f"truncate must be > 0, got {truncate}")
    if group_max_elements is not None and group_max_elements < 1:
        raise InvalidInputError(f"group_max_elements must be >= 1, got {group_max_elements}")
    if cpu_threads is not None and int(cpu_threads) < 1:
        raise InvalidInputError(f"cpu_threads must be >= 1 or None, got {cpu_threads}")
    old_threads = torch.get_num_threads()
    on_cpu = isinstance(probs, np.ndarray) or (isinstance(probs, torch.Tensor) and probs.device.type == "cpu")
    if cpu_threads is not None and on_cpu:
        torch.set_num_threads(int(cpu_threads))
    try:
        images, probs, unbatched = _check_inputs(images, probs, tol)
        b, c, h, w = probs.shape
        budget = group_max_elements or GROUP_MAX_ELEMENTS.get(probs.device.type, 2**21)
        group = max(1, int(budget // (h * w)))
        out = torch.empty_like(probs)
        for s0 in range(0, b, group):
            sl = slice(s0, min(b, s0 + group))
            out[sl] = _crf_group(images[sl], probs[sl], p, gaussian, truncate)
    finally:
        torch.set_num_threads(old_threads)
    return out[0] if unbatched else out


@torch.no_grad()
def crf_fgbg_torch(images, fg_prob, params=None, **kwargs) -> torch.Tensor:
    """Two-label CRF on a batch: ``fg_prob`` float ``(B, H, W)`` in [0, 1] -> refined fg probability ``(B, H, W)``.

    Same unaries as :func:`wsss_lib.ops.crf.crf_fgbg` (``-log(1-p)`` background, ``-log p`` foreground).
    ``kwargs`` go to :func:`dense_crf_torch`. ``(H, W)`` with a ``(3, H, W)`` image is accepted too.
    """
    fg = _as_tensor(fg_prob, "fg_prob")
    if not fg.is_floating_point():
        raise InvalidInputError(f"fg_prob must be float in [0, 1], got dtype {fg.dtype}")
    if fg.dim() not in (2, 3):
        raise InvalidInputError(f"fg_prob must be (B, H, W) or (H, W), got shape {tuple(fg.shape)}")
    if not bool(torch.isfinite(fg).all()) or float(fg.min()) < -1e-4 or float(fg.max()) > 1 + 1e-4:
        raise InvalidInputError("fg_prob must be finite and lie in [0, 1]")
    fg = fg.to(torch.float32).clamp(0, 1)
    probs = torch.stack([1 - fg, fg], dim=-3)
    return dense_crf_torch(images, probs, params, **kwargs)[..., 1, :, :]


def crf_batch_torch(images, probs, params=None, device="auto", batch_size: int = 64, **kwargs) -> list[np.ndarray]:
    """Drop-in for :func:`wsss_lib.ops.crf.crf_batch` running :func:`dense_crf_torch` on ``device``.

    ``images``: N uint8 ``(H, W, 3)`` arrays; ``probs``: N float ``(C, H, W)`` distributions or N
    float ``(H, W)`` fg probabilities (2-label CRF; the output is then ``(H, W)``). Images of the
    same size and label count are batched (``batch_size`` at a time). Returns float32 numpy arrays
    in input order. ``kwargs`` go to :func:`dense_crf_torch`.
    """
    if len(images) != len(probs):
        raise InvalidInputError(f"crf_batch_torch got {len(images)} images but {len(probs)} probability maps")
    dev = select_device(device)
    groups: dict[tuple, list[int]] = {}
    for i, (im, pr) in enumerate(zip(images, probs)):
        im, pr = np.asarray(im), np.asarray(pr)
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            raise InvalidInputError(f"item {i}: image must be uint8 (H, W, 3), got {im.dtype} {im.shape}")
        if pr.shape[-2:] != im.shape[:2] or pr.ndim not in (2, 3):
            raise InvalidInputError(f"item {i}: probabilities {pr.shape} do not match the image {im.shape[:2]}")
        groups.setdefault((im.shape, pr.shape), []).append(i)
    out: list = [None] * len(images)
    for (_, pshape), idx in groups.items():
        for s0 in range(0, len(idx), max(1, int(batch_size))):
            part = idx[s0:s0 + max(1, int(batch_size))]
            ims = torch.from_numpy(np.stack([np.asarray(images[i]) for i in part])).permute(0, 3, 1, 2).to(dev)
            prs = torch.from_numpy(np.stack([np.asarray(probs[i], dtype=np.float32) for i in part])).to(dev)
            if len(pshape) == 2:
                res = crf_fgbg_torch(ims, prs, params, **kwargs)
            else:
                res = dense_crf_torch(ims, prs, params, **kwargs)
            for j, r in zip(part, res.cpu().numpy()):
                out[j] = r
    return out


@torch.no_grad()
def pairwise_kernels(image, y: int, x: int, params=None) -> dict[str, torch.Tensor]:
    """The CRF's two pairwise kernels seen from ONE pixel ``(y, x)``, computed exactly (no lattice),
    for pictures: how strongly that pixel's label is pulled towards every other pixel's label.

    ``image``: uint8 ``(H, W, 3)`` or ``(3, H, W)`` RGB. Returns float32 ``(H, W)`` maps
    ``{"gaussian": gauss_compat * exp(-|p - p0|^2 / (2 gauss_sxy^2)),
    "bilateral": bilateral_compat * exp(-|p - p0|^2 / (2 sxy^2) - |I - I0|^2 / (2 srgb^2))}``
    (before the symmetric normalisation that :func:`dense_crf_torch` applies).
    """
    p = _params(params)
    img = _as_tensor(image, "image")
    if img.dim() == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.permute(1, 2, 0)
    if img.dim() != 3 or img.shape[-1] != 3 or img.dtype != torch.uint8:
        raise InvalidInputError(f"image must be uint8 (H, W, 3) or (3, H, W), got {img.dtype} {tuple(img.shape)}")
    h, w = img.shape[:2]
    if not (0 <= int(y) < h and 0 <= int(x) < w):
        raise InvalidInputError(f"pixel ({y}, {x}) lies outside the {h}x{w} image")
    rgb = img.float()
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    d2 = (yy - int(y)) ** 2 + (xx - int(x)) ** 2
    c2 = (rgb - rgb[int(y), int(x)]).pow(2).sum(-1)
    return {"gaussian": float(p.gauss_compat) * torch.exp(-d2 / (2 * float(p.gauss_sxy) ** 2)),
            "bilateral": float(p.bilateral_compat) * torch.exp(-d2 / (2 * float(p.bilateral_sxy) ** 2)
                                                               - c2 / (2 * float(p.bilateral_srgb) ** 2))}


class DenseCRF(torch.nn.Module):
    """``nn.Module`` wrapper: ``DenseCRF(params)(images (B,3,H,W), probs (B,C,H,W)) -> (B,C,H,W)``."""

    def __init__(self, params=None, **kwargs):
        super().__init__()
        self.params = _params(params)
        self.kwargs = kwargs

    def forward(self, images: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return dense_crf_torch(images, probs, self.params, **self.kwargs)

    def extra_repr(self) -> str:
        return f"params={self.params}"
