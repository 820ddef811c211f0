"""Reading and writing images and label maps, with clear errors.

* :func:`read_image` returns ``uint8 (H, W, 3)`` RGB, C-contiguous, whatever the file's mode
  (grayscale, RGBA, palette, 16-bit are converted, not rejected).
* :func:`read_label` returns ``uint8``/``int64 (H, W)`` class indices as stored (palette PNGs keep
  their indices; RGB label images are refused with a message).
* :func:`write_label` writes a palette PNG (VOC palette by default) so label maps never look black.

Corrupt or truncated files raise :class:`~wsss_lib.errors.CorruptFileError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import CorruptFileError, DatasetLayoutError, InvalidInputError


def _open(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(f"file not found: {path}")
    try:
        img = Image.open(path)
        img.load()  # force decoding now so truncation is detected here
        return img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptFileError(f"cannot decode image {path}: {exc}") from exc


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert any PIL image to ``uint8 (H, W, 3)`` RGB (16-bit scaled, alpha composited on black)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return np.ascontiguousarray(np.repeat(np.nan_to_num(arr).astype(np.uint8)[..., None], 3, axis=2))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        rgba = np.asarray(img, dtype=np.float32)
        rgb = rgba[..., :3] * (rgba[..., 3:4] / 255.0)
        return np.ascontiguousarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    return np.array(img.convert("RGB"), dtype=np.uint8, order="C")  # writable copy


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB ``uint8 (H, W, 3)``, C-contiguous."""
    img = _open(path)
    arr = to_rgb_uint8(img)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CorruptFileError(f"image {path} is empty (size {arr.shape[1]}x{arr.shape[0]})")
    return arr


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a label map PNG as class indices ``(H, W)``: uint8 for 'P'/'L' images, int64 for 16-bit."""
    img = _open(path)
    if img.mode in ("P", "L"):
        return np.array(img, dtype=np.uint8, order="C")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.ascontiguousarray(np.asarray(img, dtype=np.int64))
    raise CorruptFileError(
        f"label map {path} has mode {img.mode}; expected a single-channel (palette 'P' or gray 'L') PNG of class indices"
    )


def write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 92) -> Path:
    """Write ``uint8 (H, W, 3)`` RGB as JPEG/PNG (by extension)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidInputError(f"write_image expects uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(rgb).save(path, **kw)
    return path


def write_label(path: str | os.PathLike, label: np.ndarray, palette: np.ndarray | None = None) -> Path:
    """Write class indices ``(H, W)`` in [0, 255] as a palette PNG (VOC palette by default)."""
    from .viz import voc_palette

    label = np.asarray(label)
    if label.ndim != 2:
        raise InvalidInputError(f"label must be (H, W), got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise InvalidInputError(f"label values must lie in [0, 255], got [{label.min()}, {label.max()}]")
    pal = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(pal.reshape(-1).tolist())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
