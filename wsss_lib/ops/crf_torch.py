"""A batched, torch-native dense CRF (mean field) that runs on CPU or GPU [ours].

Same model and parameter meaning as pydensecrf's ``DenseCRF2D`` as called by
:func:`wsss_lib.crf.dense_crf` (the reference; see :class:`wsss_lib.crf.CRFParams`):

* unary ``-log p`` (``p`` clipped to ``[eps, 1]``);
* a Gaussian kernel ``exp(-|p_i - p_j|^2 / (2 gauss_sxy^2))`` over pixel positions, weight
  ``gauss_compat``; a bilateral kernel ``exp(-|p_i - p_j|^2 / (2 sxy^2) - |I_i - I_j|^2 / (2 srgb^2))``
  over positions and 0-255 RGB, weight ``bilateral_compat``; Potts compatibility;
* symmetric kernel normalisation ``D^-1/2 K D^-1/2`` with ``D = K 1`` (pydensecrf's default
  ``NORMALIZE_SYMMETRIC``), the self-pair included (the permutohedral lattice includes it too);
* ``iterations`` mean-field steps ``Q <- softmax(log p + sum_k w_k D_k^-1/2 K_k D_k^-1/2 Q)``.

pydensecrf filters with a permutohedral lattice, an *approximation* of these Gaussians (its
effective kernel has the nominal standard deviation; we measured it with a point probe). Here the
kernels are computed as written, which is why the two agree closely but not bit for bit.

How the two kernels are computed (chosen automatically; documented choices [ours]):

* Gaussian (positions only): separable, so it is computed exactly (truncated at
  ``truncate * gauss_sxy`` px, zero outside the image) as two small banded matmuls for sides up to
  512 px, as two 1-D convolutions beyond. Cost O(N sxy).
* Bilateral: the spatial range is large (DeepLab's 80 px spans a whole 96 px image), so a local
  window as in ConvCRF (Teichmann & Cipolla 2018) cannot reproduce it. We compute messages
  *densely* from a set of source pixels to every pixel: one pixel per ``s x s`` block (a fixed
  pseudo-random pixel of the block, so periodic textures are not sampled on one phase only;
  weight = block size). ``s = 1`` is the exact dense sum; by default ``s`` is the smallest stride
  whose grid has at most ``MAX_SOURCES`` (2500) pixels, so the cost is linear in N (96x96 -> s=2,
  321x321 -> s=7, 512x1024 -> s=15). Sources keep their own colours (no colour averaging across
  edges); with ``s`` well below ``bilateral_sxy`` the spatial sum is well approximated. The
  ``N' x N`` kernel is built once per image and reused by every iteration (one batched matmul per
  iteration); when it exceeds the memory budget it is rebuilt in chunks at each iteration
  instead. The stride depends only on the image size, never on the device, so CPU and GPU give
  the same numbers up to float rounding (CUDA stores the kernel in bfloat16 by default).

Agreement with pydensecrf (fg/bg masks thresholded at 0.5, pooled IoU over the ToyObjects TEST
split, see ``benchmarks/bench_crf.py``): >= 0.99 for GT-derived noisy probabilities and ~0.97 for
fused-activation masks, at both :class:`~wsss_lib.crf.CRFParams` defaults and ``deeplab()``.
Differences concentrate on small objects near the survive/vanish tipping point of mean field.

Cost: per image and iteration one ``(C x N') @ (N' x N)`` matmul, the kind of work accelerators
are built for. On a 2-core CPU pydensecrf (permutohedral lattice, O(N)) is 15-60x faster, so
:mod:`wsss_lib.crf` stays the CPU default; use this module on CUDA (:func:`crf_batch_torch` is a
drop-in for :func:`wsss_lib.crf.crf_batch`). Everything runs under ``torch.no_grad``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import InvalidInputError
from ..core.runtime import select_device
from .crf import as_params

# automatic bilateral stride: the smallest whose source grid has at most this many pixels, so the
# cost per image is O(N * MAX_SOURCES) = linear in N (96x96 -> stride 2, 321x321 -> 7, 512x1024 -> 15)
MAX_SOURCES = 2500
# memory budget for the kernels of one group of images processed together
GROUP_MAX_ELEMENTS = {"cpu": 2**27, "cuda": 2**30}


def _params(params: Any):
    """Accept what :func:`wsss_lib.crf.as_params` accepts (CRFParams, dict, None)."""
    return as_params(params)


def bilateral_stride(height: int, width: int, max_sources: int = MAX_SOURCES) -> int:
    """The source-grid stride the bilateral term uses for an ``height x width`` image (1 = exact):
    the smallest with at most ``max_sources`` grid pixels."""
    if max_sources < 1:
        raise InvalidInputError(f"max_sources must be >= 1, got {max_sources}")
    s = 1
    while math.ceil(height / s) * math.ceil(width / s) > max_sources:
        s += 1
    return s


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


def _grid_sources(h: int, w: int, s: int, device, jitter: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of one source pixel per ``s x s`` block and the block sizes (weights).

    ``jitter``: a fixed pseudo-random pixel of each block (seed 0, same for every call) instead of
    the block centre, so periodic textures with a period near ``s`` are not sampled on one phase only.
    """
    ys = torch.arange(0, h, s)
    xs = torch.arange(0, w, s)
    hy = torch.clamp(h - ys, max=s)
    wx = torch.clamp(w - xs, max=s)
    if jitter and s > 1:
        g = torch.Generator().manual_seed(0)
        oy = (torch.rand(len(ys), len(xs), generator=g) * hy[:, None]).long()
        ox = (torch.rand(len(ys), len(xs), generator=g) * wx[None, :]).long()
        cy, cx = ys[:, None] + oy, xs[None, :] + ox
    else:
        cy, cx = (ys + (hy - 1) // 2)[:, None], (xs + (wx - 1) // 2)[None, :]
    idx = (cy * w + cx).reshape(-1)
    weight = (hy[:, None] * wx[None, :]).reshape(-1).to(torch.float32)
    return idx.to(device), weight.to(device)


class _Bilateral:
    """Bilateral message passing from the source pixels ``idx`` to every pixel, for a group of images.

    The ``(G, N', N)`` kernel is built once and kept when it has at most ``budget`` elements;
    otherwise it is rebuilt chunk by chunk (over target pixels) at every use, so memory stays
    bounded for any image size (slower: the exps are recomputed each iteration).
    """

    def __init__(self, images: torch.Tensor, sxy: float, srgb: float, idx: torch.Tensor, wgt: torch.Tensor,
                 dtype: torch.dtype, budget: int):
        g, _, h, w = images.shape
        dev = images.device
        yy, xx = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                                torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
        pos = torch.stack([xx, yy]).reshape(2, -1) / sxy  # (2, N)
        col = images.reshape(g, 3, -1) / srgb  # (G, 3, N)
        self.f = torch.cat([pos.unsqueeze(0).expand(g, -1, -1), col], 1)  # (G, 5, N)
        self.fs = self.f[:, :, idx].transpose(1, 2).contiguous()  # (G, N', 5)
        self.sq = (self.f * self.f).sum(1, keepdim=True)  # (G, 1, N)
        self.sq_s = (self.fs * self.fs).sum(-1, keepdim=True)  # (G, N', 1)
        self.idx, self.dtype = idx, dtype
        n, m = h * w, idx.numel()
        self.n = n
        self.k = self._kernel(slice(0, n)) if g * n * m <= budget else None
        self.chunk = max(1, budget // (g * m))
        self.norm = self._apply(wgt.view(1, 1, -1).expand(g, 1, -1)).clamp_min(1e-20).rsqrt()  # (G, 1, N)
        self.src_scale = self.norm[:, :, idx] * wgt.view(1, 1, -1)  # (G, 1, N')

    def _kernel(self, sl: slice) -> torch.Tensor:
        """``K[b, j, i] = exp(-|f_j - f_i|^2 / 2)``, sources j x targets i in ``sl``; (G, N', n_sl)."""
        d2 = torch.baddbmm(self.sq_s, self.fs, self.f[:, :, sl], alpha=-2.0).add_(self.sq[:, :, sl])
        # exp(-80) ~ 2e-35 is 0 for our purpose; larger arguments hit exp's slow underflow path on CPUs
        k = d2.clamp_(0.0, 160.0).mul_(-0.5).exp_()
        return k if self.dtype == torch.float32 else k.to(self.dtype)

    def _apply(self, src: torch.Tensor) -> torch.Tensor:
        """``(G, C, N')`` source values -> ``(G, C, N)`` kernel-weighted sums (float32)."""
        src = src.to(self.dtype)
        if self.k is not None:
            return torch.bmm(src, self.k).float()
        out = torch.empty(src.shape[0], src.shape[1], self.n, device=src.device)
        for s0 in range(0, self.n, self.chunk):
            sl = slice(s0, min(self.n, s0 + self.chunk))
            out[:, :, sl] = torch.bmm(src, self._kernel(sl)).float()
        return out

    def message(self, q: torch.Tensor) -> torch.Tensor:
        """``D^-1/2 K D^-1/2 q`` for ``q`` ``(G, C, N)``."""
        return self._apply(q[:, :, self.idx] * self.src_scale) * self.norm


def _crf_group(images: torch.Tensor, probs: torch.Tensor, p, stride: int, truncate: float,
               kernel_dtype: torch.dtype, budget: int) -> torch.Tensor:
    g, c, h, w = probs.shape
    n = h * w
    logp = probs.clamp(min=p.eps, max=1.0).log()
    q = torch.softmax(logp, 1)
    iters = int(p.iterations)
    if iters == 0:
        return q
    use_g = p.gauss_compat > 0
    use_b = p.bilateral_compat > 0
    if use_g:
        ones = torch.ones(1, 1, h, w, device=probs.device)
        norm_g = _gauss_filter(ones, p.gauss_sxy, truncate).clamp_min(1e-20).rsqrt()  # (1, 1, H, W)
    if use_b:
        idx, wgt = _grid_sources(h, w, stride, probs.device)
        bil = _Bilateral(images, p.bilateral_sxy, p.bilateral_srgb, idx, wgt, kernel_dtype, budget)
    for _ in range(iters):
        energy = logp.clone()
        if use_g:
            energy += p.gauss_compat * norm_g * _gauss_filter(q * norm_g, p.gauss_sxy, truncate)
        if use_b:
            energy += p.bilateral_compat * bil.message(q.reshape(g, c, n)).reshape(g, c, h, w)
        q = torch.softmax(energy, 1)
    return q


@torch.no_grad()
def dense_crf_torch(images, probs, params=None, *, stride: int | None = None,
                    max_sources: int = MAX_SOURCES, group_max_elements: int | None = None,
                    truncate: float = 4.0, kernel_dtype: torch.dtype | None = None,
                    tol: float = 1e-3) -> torch.Tensor:
    """Batched dense CRF on the device of ``probs``.

    ``images``: uint8 ``(B, 3, H, W)`` in 0-255 or float in [0, 1] (``(3, H, W)`` also accepted);
    ``probs``: float ``(B, C, H, W)``, C >= 2, a distribution over C at each pixel (within ``tol``).
    ``params``: :class:`wsss_lib.crf.CRFParams`, a dict of its fields, or None (defaults).
    ``stride``: bilateral source-grid stride (1 = exact; None = the smallest with at most
    ``max_sources`` source pixels, see :func:`bilateral_stride`).
    ``group_max_elements``: bilateral-kernel elements held at once (default by device: 2**27 on CPU,
    2**30 on CUDA); images are processed in groups under it, and an image whose kernel alone is
    larger has it rebuilt in chunks at every iteration instead of stored (bounded memory, slower).
    ``truncate``: Gaussian-term radius in sigmas.
    ``kernel_dtype``: storage of the bilateral kernel (None: bfloat16 on CUDA, which halves its
    memory traffic, float32 elsewhere); messages are accumulated and normalised in float32.
    Returns float32 ``(B, C, H, W)`` marginals that sum to 1 over C (same rank as the input).
    Non-contiguous inputs are fine. Raises :class:`InvalidInputError` on bad input.
    """
    p = _params(params)
    images, probs, unbatched = _check_inputs(images, probs, tol)
    b, c, h, w = probs.shape
    if stride is None:
        stride = bilateral_stride(h, w, max_sources)
    if int(stride) < 1:
        raise InvalidInputError(f"stride must be >= 1, got {stride}")
    stride = int(stride)
    if truncate <= 0:
        raise InvalidInputError(f"truncate must be > 0, got {truncate}")
    n = h * w
    n_src = math.ceil(h / stride) * math.ceil(w / stride)
    budget = group_max_elements or GROUP_MAX_ELEMENTS.get(probs.device.type, 2**27)
    group = max(1, int(budget // (n * n_src * 2)))  # x2: distance matrix + kernel coexist briefly
    if kernel_dtype is None:
        kernel_dtype = torch.bfloat16 if probs.device.type == "cuda" else torch.float32
    if kernel_dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise InvalidInputError(f"kernel_dtype must be float32, bfloat16 or float16, got {kernel_dtype}")
    out = torch.empty_like(probs)
    for s0 in range(0, b, group):
        sl = slice(s0, min(b, s0 + group))
        out[sl] = _crf_group(images[sl], probs[sl], p, stride, truncate, kernel_dtype, budget)
    return out[0] if unbatched else out


@torch.no_grad()
def crf_fgbg_torch(images, fg_prob, params=None, **kwargs) -> torch.Tensor:
    """Two-label CRF on a batch: ``fg_prob`` float ``(B, H, W)`` in [0, 1] -> refined fg probability ``(B, H, W)``.

    Same unaries as :func:`wsss_lib.crf.crf_fgbg` (``-log(1-p)`` background, ``-log p`` foreground).
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
    """Drop-in for :func:`wsss_lib.crf.crf_batch` running :func:`dense_crf_torch` on ``device``.

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
