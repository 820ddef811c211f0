"""Reading and writing images and label maps, with clear errors.

* :func:`read_image` returns ``uint8 (H, W, 3)`` RGB, C-contiguous, whatever the file's mode
  (grayscale, RGBA, palette, 16-bit are converted, not rejected).
* :func:`read_label` returns ``uint8``/``int64 (H, W)`` class indices as stored (palette PNGs keep
  their indices; RGB label images are refused with a message).
* :func:`write_label` writes a palette PNG (VOC palette by default, :func:`voc_palette`) so label
  maps never look black; :func:`label_png_array` is the one check of what a label PNG may hold.
* :func:`to_uint8_image` — the one float ``[0, 1]`` -> ``uint8`` image conversion.
* Atomic files: :func:`atomic_output` (``with atomic_output(p) as tmp: ...``) is the one atomic
  writer (temp file in the same folder + fsync + rename); :func:`atomic_write_bytes`,
  :func:`write_output` (by suffix) and :func:`write_masks` build on it.
* :func:`plain_config` / :func:`to_jsonable`: configs and metrics as plain JSON values.

Corrupt or truncated files raise :class:`~wsss_lib.core.errors.CorruptFileError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import secrets
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import CheckpointError, CorruptFileError, DatasetLayoutError, InvalidInputError

IGNORE_INDEX = 255


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``uint8 (n, 3)``; index 255 (ignore) is white-ish cream."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    if n > IGNORE_INDEX:
        pal[IGNORE_INDEX] = (224, 224, 192)
    return pal


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


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """The one float -> uint8 conversion: values in [0, 1] (clamped) -> ``round(255 x)``, same shape."""
    return (x.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def to_uint8_image(image) -> np.ndarray:
    """``(3, H, W)`` -> ``uint8 (H, W, 3)``, or a batch ``(N, 3, H, W)`` -> ``(N, H, W, 3)``,
    C-contiguous (for CRFs and plots). Float input (tensor or array) is in [0, 1]
    (:func:`to_uint8`); uint8 input is only transposed (an ``(H, W, 3)`` uint8 array passes through)."""
    x = image.detach().cpu() if torch.is_tensor(image) else torch.from_numpy(np.ascontiguousarray(image))
    if x.ndim == 3 and x.shape[0] != 3 and x.shape[-1] == 3 and x.dtype == torch.uint8:
        return np.ascontiguousarray(x.numpy())
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise InvalidInputError(f"expected (3, H, W) or (N, 3, H, W), got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        x = to_uint8(x)
    return np.ascontiguousarray(x.movedim(-3, -1).numpy())


# ----------------------------------------------------------------------------- atomic files

def temp_path(path: Path) -> Path:
    """Hidden, unique temporary name next to ``path``, with its suffix (PIL/numpy pick the format from it)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")


def fsync_path(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_output(p) as tmp: write(tmp)`` — ``tmp`` (same folder, same suffix) is
    fsynced and renamed to ``p`` when the block succeeds, deleted when it raises. An unwritable
    folder raises :class:`~wsss_lib.core.errors.CheckpointError` ("cannot write to ...")."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot write to {path.parent}: {exc.strerror or exc}") from exc
    tmp = temp_path(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise InvalidInputError(f"nothing was written for {path}")
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.\d+-[0-9a-f]{8}\.tmp(\.[^.]*)?$")


def remove_stale_temps(paths: Sequence[str | os.PathLike]) -> int:
    """Delete the temporary files that killed writers of ``paths`` left behind (one directory
    listing per folder); returns how many were removed."""
    by_dir: dict[Path, set[str]] = {}
    for p in paths:
        p = Path(p)
        by_dir.setdefault(p.parent, set()).add(p.name)
    n = 0
    for folder, names in by_dir.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            m = _TEMP_RE.match(entry.name)
            if m and m.group("name") in names:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    n += 1
    return n


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def label_png_array(label, where: str = "label") -> np.ndarray:
    """What a label PNG may hold: an integer ``(H, W)`` map (a bool mask becomes 0/1 uint8);
    float maps are refused (threshold probabilities first)."""
    arr = _as_numpy(label)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        raise InvalidInputError(f"{where}: a label PNG needs an integer label map or a bool mask; threshold "
                                "probabilities first")
    return arr


def _as_numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)


def write_output(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` to ``path`` (not atomically; :func:`run_sharded` passes a temp path).

    ``value``: a callable ``f(path)`` that writes the file itself; ``bytes``; ``str`` (text); or,
    by suffix: ``.png`` an int/bool label map ``(H, W)`` (palette PNG,
    :func:`write_label`) or a uint8 image ``(H, W, 3)``; ``.npy`` an array;
    ``.npz`` an array (key ``data``) or a dict of arrays (compressed); ``.pt`` tensors / plain
    values (``torch.save``); ``.json`` plain values.
    """
    path = Path(path)
    if callable(value):
        value(path)
        return path
    if isinstance(value, (bytes, bytearray, memoryview)):
        path.write_bytes(bytes(value))
        return path
    if isinstance(value, str):
        path.write_text(value)
        return path
    suffix = path.suffix.lower()
    if suffix == ".png":
        arr = _as_numpy(value)
        if arr.ndim == 2:
            write_label(path, label_png_array(arr, path.name))
        else:
            write_image(path, arr)
    elif suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, _as_numpy(value))
        path.write_bytes(buf.getvalue())
    elif suffix == ".npz":
        buf = io.BytesIO()
        if isinstance(value, dict):
            np.savez_compressed(buf, **{k: _as_numpy(v) for k, v in value.items()})
        else:
            np.savez_compressed(buf, data=_as_numpy(value))
        path.write_bytes(buf.getvalue())
    elif suffix == ".pt":
        buf = io.BytesIO()
        torch.save(value, buf)
        path.write_bytes(buf.getvalue())
    elif suffix == ".json":
        path.write_text(json.dumps(value, indent=2, sort_keys=True))
    else:
        raise InvalidInputError(f"don't know how to write {type(value).__name__} to {path.name}; return bytes or "
                                "a callable f(path), or use .png/.npy/.npz/.pt/.json")
    return path


def write_masks(out_dir: str | os.PathLike, ids: Sequence[str], masks: Sequence[np.ndarray],
                palette: np.ndarray | None = None) -> list[Path]:
    """Save label maps / binary masks ``(H, W)`` (ints in [0, 255], or bool) as palette PNGs
    ``<out_dir>/<id>.png``; returns the paths. Ids must be plain file names (no ``/`` or ``..``).
    Each file is written atomically (temp file + rename), so a crash never leaves a partial PNG."""
    if len(ids) != len(masks):
        raise InvalidInputError(f"write_masks got {len(ids)} ids but {len(masks)} masks")
    out_dir = Path(out_dir)
    paths = []
    for sid, m in zip(ids, masks):
        sid = str(sid)
        if not sid or "/" in sid or "\\" in sid or sid in (".", "..") or sid.startswith(".."):
            raise InvalidInputError(f"mask id {sid!r} is not a plain file name")
        m = label_png_array(m, "write_masks")
        with atomic_output(out_dir / f"{sid}.png") as tmp:
            write_label(tmp, m, palette)
        paths.append(out_dir / f"{sid}.png")
    return paths


# ----------------------------------------------------------------------------- plain values

def to_jsonable(x: Any) -> Any:
    """Convert numpy/torch scalars and arrays to JSON-safe plain values (NaN -> None)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return to_jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (bool, int, float, str)) or x is None:
        return x
    return str(x)



def plain_config(config: dict | None) -> dict:
    """A config as plain JSON values, keys sorted (what checkpoints store and compare)."""
    return json.loads(json.dumps(config or {}, sort_keys=True, default=str))
