"""Dense-CRF settings and input checks, shared by both CRF implementations (:mod:`.crf`, the
pydensecrf one, and :mod:`.crf_torch`, the permutohedral lattice in torch): :class:`CRFParams`,
:func:`as_params`, :func:`check_image`, :func:`check_probs`. No torch, no pydensecrf.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..core.config import PRESETS
from ..core.errors import InvalidInputError

_DEFAULTS = PRESETS["crf"]["default"]


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF settings (pixel units; ``srgb`` in 0-255 intensity units).

    Defaults = ``config.PRESETS["crf"]`` (the one place they live): our VAL-chosen values for
    96 px ToyObjects images [ours]; :meth:`deeplab` = the common DeepLab values [ours: common practice].
    """

    gauss_sxy: float = _DEFAULTS["gauss_sxy"]
    gauss_compat: float = _DEFAULTS["gauss_compat"]
    bilateral_sxy: float = _DEFAULTS["bilateral_sxy"]
    bilateral_srgb: float = _DEFAULTS["bilateral_srgb"]
    bilateral_compat: float = _DEFAULTS["bilateral_compat"]
    iterations: int = _DEFAULTS["iterations"]
    eps: float = _DEFAULTS["eps"]  # probability clip for the unary -log p

    @classmethod
    def deeplab(cls) -> "CRFParams":
        """DeepLab's common setting: Gaussian 3/3, bilateral 80/13/10, 10 iterations."""
        return cls(gauss_sxy=3.0, gauss_compat=3.0, bilateral_sxy=80.0, bilateral_srgb=13.0, bilateral_compat=10.0,
                   iterations=10)

    def replace(self, **kw) -> "CRFParams":
        return replace(self, **kw)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "CRFParams":
        for k in ("gauss_sxy", "bilateral_sxy", "bilateral_srgb"):
            if not getattr(self, k) > 0:
                raise InvalidInputError(f"CRFParams.{k} must be > 0, got {getattr(self, k)}")
        for k in ("gauss_compat", "bilateral_compat"):
            if not getattr(self, k) >= 0:
                raise InvalidInputError(f"CRFParams.{k} must be >= 0, got {getattr(self, k)}")
        if int(self.iterations) < 0:
            raise InvalidInputError(f"CRFParams.iterations must be >= 0, got {self.iterations}")
        if not 0 < self.eps < 0.5:
            raise InvalidInputError(f"CRFParams.eps must lie in (0, 0.5), got {self.eps}")
        return self


def as_params(params: "CRFParams | dict | None") -> CRFParams:
    """``None`` -> defaults; a dict -> ``CRFParams(**dict)`` (unknown keys raise)."""
    if params is None:
        return CRFParams()
    if isinstance(params, CRFParams):
        return params.validate()
    if isinstance(params, dict):
        try:
            return CRFParams(**params).validate()
        except TypeError as exc:
            raise InvalidInputError(f"bad CRF parameters {params}: {exc}") from exc
    raise InvalidInputError(f"CRF params must be CRFParams, dict or None, got {type(params).__name__}")


def check_image(image) -> np.ndarray:
    """Validate ``uint8 (H, W, 3)``; returns a C-contiguous array (copied only if needed)."""
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"CRF image must be a numpy uint8 (H, W, 3) array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidInputError(f"CRF image must be uint8 (H, W, 3) in 0-255, got dtype {image.dtype} "
                                "(convert float [0, 1] images with wsss_lib.core.io.to_uint8_image)")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(f"CRF image must be (H, W, 3), got shape {image.shape}")
    return image if image.flags.c_contiguous else np.ascontiguousarray(image)


def check_probs(probs, shape: tuple[int, int], tol: float = 1e-3) -> np.ndarray:
    """Validate ``float (C, H, W)`` probabilities summing to 1 over C; returns float32 C-contiguous."""
    if not isinstance(probs, np.ndarray):
        raise InvalidInputError(f"CRF probabilities must be a numpy (C, H, W) array, got {type(probs).__name__}")
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise InvalidInputError(f"CRF probabilities must be (C, H, W) with C >= 2, got shape {probs.shape}")
    if tuple(probs.shape[1:]) != tuple(shape):
        raise InvalidInputError(f"CRF probabilities are {probs.shape[1]}x{probs.shape[2]} (HxW) but the image is "
                                f"{shape[0]}x{shape[1]}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise InvalidInputError(f"CRF probabilities must be float, got dtype {probs.dtype}")
    ok = probs.dtype == np.float32 and probs.flags.c_contiguous
    p = probs if ok else np.ascontiguousarray(probs, dtype=np.float32)
    s = p.sum(0)
    # one cheap pass: NaN/inf make the sum non-finite; the min check catches negatives
    if not (np.isfinite(s).all() and np.abs(s - 1.0).max() <= tol and p.min() >= -tol):
        bad = "non-finite values" if not np.isfinite(s).all() else (
            "negative values" if p.min() < -tol else f"sums over C in [{s.min():.4f}, {s.max():.4f}]")
        raise InvalidInputError(f"CRF probabilities must be a distribution over C at every pixel (tol {tol}); "
                                f"found {bad}")
    return p
