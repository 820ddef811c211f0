"""Palettes, overlays and figure helpers (matplotlib, Agg when headless)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import cv2

from .core.io import voc_palette

def use_headless_backend_if_needed() -> None:
    """Switch matplotlib to Agg when there is no display and no notebook backend was chosen."""
    import matplotlib  # lazy: matplotlib is heavy and only needed when drawing

    if os.environ.get("MPLBACKEND"):
        return
    if not os.environ.get("DISPLAY") and "ipykernel" not in os.environ.get("JPY_PARENT_PID", "") and not _in_notebook():
        matplotlib.use("Agg")


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # lazy: IPython is present only inside a kernel

        ip = get_ipython()
        return ip is not None and "IPKernelApp" in ip.config
    except Exception:
        return False


def colorize(label: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Class indices ``(H, W)`` -> RGB ``uint8 (H, W, 3)`` using ``palette`` (VOC by default)."""
    pal = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    lab = np.asarray(label).astype(np.int64)
    return pal[np.clip(lab, 0, len(pal) - 1)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, cmap: str = "jet",
            palette: np.ndarray | None = None) -> np.ndarray:
    """Blend ``image`` (uint8 (H, W, 3)) with a map.

    ``mask`` float ``(H, W)`` in [0, 1] is drawn with ``cmap``; an integer ``(H, W)`` map is drawn
    with the palette. Returns uint8 ``(H, W, 3)``.
    """
    import matplotlib  # lazy: matplotlib is heavy and only needed when drawing

    image = np.asarray(image)
    mask = np.asarray(mask)
    if np.issubdtype(mask.dtype, np.floating):
        col = (matplotlib.colormaps[cmap](np.clip(mask, 0, 1))[..., :3] * 255).astype(np.float32)
    else:
        col = colorize(mask, palette).astype(np.float32)
    out = (1 - alpha) * image.astype(np.float32) + alpha * col
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def show_grid(images: list[np.ndarray], titles: list[str] | None = None, ncols: int = 4,
              size: float = 2.6, cmap: str | None = None, suptitle: str | None = None):
    """Plot a grid of images / maps; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is heavy and only needed when drawing

    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            im = images[i]
            ax.imshow(im, cmap=cmap if np.asarray(im).ndim == 2 else None, vmin=0 if np.asarray(im).ndim == 2 and np.issubdtype(np.asarray(im).dtype, np.floating) else None,
                      vmax=1 if np.asarray(im).ndim == 2 and np.issubdtype(np.asarray(im).dtype, np.floating) else None)
            if titles and i < len(titles):
                ax.set_title(titles[i], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a Figure as PNG (creating folders) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def flow_to_color(flow: np.ndarray, max_mag: float | None = None) -> np.ndarray:
    """Optical flow ``(H, W, 2)`` (dx, dy in pixels) -> RGB ``uint8 (H, W, 3)`` (HSV colour wheel)."""
    flow = np.asarray(flow, dtype=np.float32)
    mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1])
    m = float(max_mag) if max_mag else float(np.percentile(mag, 99) + 1e-6)
    hsv = np.zeros(flow.shape[:2] + (3,), dtype=np.uint8)
    hsv[..., 0] = (ang * 180 / np.pi / 2).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / m * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
