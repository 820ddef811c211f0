"""Fully-connected (dense) CRF post-processing through pydensecrf (Krähenbühl & Koltun).

When ``pydensecrf`` cannot be imported (its build failed), every function here runs the same
model on :mod:`wsss_lib.ops.crf_torch` instead (a permutohedral lattice in torch, the algorithm
pydensecrf uses; its messages match pydensecrf's to float rounding): :func:`backend` says which
runs, and one log line says so. With the torch backend :func:`crf_batch` batches images in this
process instead of starting workers.

Paper 1 smooths its fused fg/bg activation map with a dense CRF "as in DeepLab" [summary] and
DeepLab-style methods refine segmentation outputs with it at test time. Unaries are ``-log p``
(probabilities clipped to ``[eps, 1]``); pairwise terms are a Gaussian (smoothness) kernel and a
bilateral (appearance) kernel, Potts compatibility.

* :func:`dense_crf` — C labels, one image; :func:`crf_fgbg` — 2 labels from a fg probability map.
* :func:`crf_batch` — many images with a process pool (pydensecrf is single-threaded).
* saving the results as palette PNGs: :func:`wsss_lib.core.io.write_masks`.

pydensecrf crashes the interpreter (segfault) on wrongly shaped or typed input, so every entry
point validates first: image ``uint8 (H, W, 3)`` (a non-contiguous view is copied), probabilities
``float (C, H, W)`` that sum to 1 over C (within ``tol``), finite, same H, W as the image.

Parameters: :meth:`CRFParams.deeplab` holds the common DeepLab values (Gaussian sxy 3 / compat 3,
bilateral sxy 80 / srgb 13 / compat 10, 10 iterations) from the papers notes [ours: common practice,
not the paper's own]. ``CRFParams()`` (the default) is the setting we measured best on the
ToyObjects VAL split for 96 px images (grid over bilateral sxy 15-60, srgb 5-16, compat 4-14 with
the default classifier's fused maps: Gaussian 3/3, bilateral sxy 45 / srgb 7 / compat 6, 10
iterations; VAL mask IoU 0.693 vs 0.665 with the DeepLab values; ``notebooks/03_dense_crf.ipynb``
shows a few of these settings). The toy images' colours are flat, so a tighter colour range helps.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..core.errors import InvalidInputError
from ..core.parallel import run_pool

# the settings and input checks both implementations share (re-exported: the public names stay here)
from .crf_params import CRFParams, as_params, check_image, check_probs  # noqa: E402,F401


# which implementation runs the CRF: chosen on first use (see backend())
_BACKEND: str | None = None
_log = logging.getLogger(__name__)


def select_backend() -> str:
    """``"pydensecrf"`` when it can be imported, else ``"torch"`` (:mod:`wsss_lib.ops.crf_torch`: the
    same model through a permutohedral lattice in torch, nothing to compile). Logs one line."""
    try:
        import pydensecrf.densecrf  # noqa: F401  # lazy: probing whether the compiled extension imports
    except ImportError as exc:
        _log.warning("dense CRF: pydensecrf cannot be imported (%s); using the torch permutohedral-lattice CRF "
                     "(wsss_lib.ops.crf_torch, same model and parameters)", exc)
        return "torch"
    _log.info("dense CRF: pydensecrf")
    return "pydensecrf"


def backend() -> str:
    """The CRF implementation of this process (:func:`select_backend`, chosen once)."""
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = select_backend()
    return _BACKEND


def _inference(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """The raw CRF call on validated, contiguous inputs (pydensecrf, or the torch fallback)."""
    if backend() == "torch":
        return _torch_inference([image], [probs], params)[0]
    import pydensecrf.densecrf as dcrf  # lazy: the compiled CRF extension is needed in the CRF workers only

    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    unary = -np.log(np.clip(probs, params.eps, 1.0)).reshape(c, -1)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    if params.gauss_compat > 0:
        d.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    if params.bilateral_compat > 0:
        d.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=image,
                               compat=params.bilateral_compat)
    q = d.inference(int(params.iterations))
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)


def _torch_inference(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], params: CRFParams,
                     device="cpu") -> list[np.ndarray]:
    """:func:`wsss_lib.ops.crf_torch.crf_batch_torch` on ``device`` for validated inputs (same-size images batched)."""
    from .crf_torch import crf_batch_torch  # lazy: torch is not imported by the pydensecrf CRF workers

    return crf_batch_torch(images, probs, params, device=device)


def _on_cuda(device) -> bool:
    return device is not None and str(device).startswith("cuda")


def dense_crf(image: np.ndarray, probs: np.ndarray, params: "CRFParams | dict | None" = None,
              tol: float = 1e-3) -> np.ndarray:
    """Dense CRF over C labels.

    ``image`` uint8 ``(H, W, 3)``; ``probs`` float ``(C, H, W)``, a distribution over C per pixel.
    Returns float32 ``(C, H, W)`` marginals (sum to 1 over C). Raises :class:`InvalidInputError`
    on bad input instead of letting pydensecrf crash.
    """
    params = as_params(params)
    image = check_image(image)
    probs = check_probs(probs, image.shape[:2], tol)
    return _inference(image, probs, params)


def crf_fgbg(image: np.ndarray, fg_prob: np.ndarray, params: "CRFParams | dict | None" = None) -> np.ndarray:
    """Two-label CRF: ``fg_prob`` float ``(H, W)`` in [0, 1] -> refined fg probability ``(H, W)``.

    Unaries ``-log(1 - p)`` (background) and ``-log p`` (foreground).
    """
    params = as_params(params)
    image = check_image(image)
    p = _check_fg(fg_prob, image.shape[:2])
    probs = np.stack([1.0 - p, p])
    return _inference(image, probs, params)[1]


# ----------------------------------------------------------------------------- batches

def _check_fg(p, shape, where: str = "fg_prob") -> np.ndarray:
    p = np.asarray(p)
    if p.ndim != 2 or tuple(p.shape) != tuple(shape):
        raise InvalidInputError(f"{where} must be (H, W) = {tuple(shape)}, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):
        raise InvalidInputError(f"{where} must be float in [0, 1], got dtype {p.dtype}")
    p = p.astype(np.float32, copy=False)
    lo, hi = p.min(), p.max()
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= -1e-4 and hi <= 1 + 1e-4):
        raise InvalidInputError(f"{where} must be finite and lie in [0, 1]")
    return np.clip(p, 0.0, 1.0)


def _work(args):
    kind, image, probs, params = args  # already validated
    if kind == "fgbg":
        return _inference(image, np.stack([1.0 - probs, probs]), params)[1]
    return _inference(image, probs, params)


def crf_batch(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], params: "CRFParams | dict | None" = None,
              workers: int | None = None, progress: bool = False, desc: str = "dense CRF",
              device=None) -> list[np.ndarray]:
    """Run the CRF on many images: in worker processes, or batched on a GPU.

    ``images``: N uint8 ``(H, W, 3)``; ``probs``: N float ``(C, H, W)`` distributions (C labels)
    *or* N float ``(H, W)`` fg probabilities (2-label fg/bg CRF; the output is then ``(H, W)``).
    ``workers``: processes (default :func:`~wsss_lib.core.parallel.num_threads_hint`; 1 = in process;
    :func:`~wsss_lib.core.parallel.run_pool`).
    ``device``: where the models run; a CUDA device runs the torch lattice CRF batched there (the
    default on GPUs: pydensecrf is CPU-only); ``None``/CPU: :func:`backend` on CPU workers.
    Returns a list in input order. Inputs are validated up front, in this process.
    """
    params = as_params(params)
    if len(images) != len(probs):
        raise InvalidInputError(f"crf_batch got {len(images)} images but {len(probs)} probability maps")
    jobs = []
    for i, (im, pr) in enumerate(zip(images, probs)):
        im = check_image(np.asarray(im) if not isinstance(im, np.ndarray) else im)
        pr = np.asarray(pr)
        if pr.ndim == 2:
            jobs.append(("fgbg", im, _check_fg(pr, im.shape[:2], f"item {i}: fg probability"), params))
        else:
            jobs.append(("multi", im, check_probs(pr, im.shape[:2]), params))
    if _on_cuda(device) or backend() == "torch":  # batched in this process (torch uses the cores itself)
        out = _torch_inference([j[1] for j in jobs], [j[2] for j in jobs], params,
                               device if _on_cuda(device) else "cpu")
        if progress:
            with tqdm(total=len(jobs), desc=desc, leave=False) as bar:
                bar.update(len(jobs))
        return out
    bar = tqdm(total=len(jobs), desc=desc, leave=False) if progress else None
    try:
        return run_pool(_work, jobs, workers, on_result=None if bar is None else (lambda _: bar.update(1)))
    finally:
        if bar is not None:
            bar.close()
