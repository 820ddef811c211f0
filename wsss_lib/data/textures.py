"""Shared procedural drawing helpers for the toy datasets (and their on-disk caching).

Everything here is plain numpy + OpenCV and deterministic given a :class:`numpy.random.Generator`.

Conventions
-----------
* Images are ``uint8 (H, W, 3)`` RGB or ``float32 (H, W, 3)`` RGB in [0, 255] while composing.
* Masks are ``bool (H, W)``; texture *patterns* are ``float32 (H, W)`` in [0, 1] that blend two
  colours (``colour_a * (1 - p) + colour_b * p``).
* Polygons are ``float64 (N, 2)`` arrays of ``(x, y)`` pixel coordinates.

:func:`rng_for` seeds one generator per ``(seed, split, index)`` so each image/clip is reproducible
on its own (and generation can run in any order, in parallel).
:func:`ensure_generated` implements the "regenerate only when the manifest differs or files are
missing" logic shared by :mod:`.toy_objects` and :mod:`.toy_streets` (atomic, process-safe).
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..core.errors import DatasetLayoutError, InvalidInputError

__all__ = [
    "rng_for", "random_colors", "hsv_to_rgb", "smooth_noise", "rotated_coords", "texture_pattern",
    "TEXTURES", "blend", "shape_polygons", "polygon_area", "fill_polygons", "ellipse_polygon",
    "regular_star", "shading", "place_polygons", "ensure_generated", "manifest_matches",
]


# --------------------------------------------------------------------------------------- seeding
def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator seeded from ``(seed, *keys)``; strings hashed with CRC32 (stable across runs).

    ``rng_for(0, "train", 17)`` always yields the same stream, independent of the order in which
    other images are generated.
    """
    ints = [int(seed) & 0xFFFFFFFF]
    for k in keys:
        ints.append(zlib.crc32(k.encode("utf-8")) if isinstance(k, str) else int(k) & 0xFFFFFFFF)
    return np.random.default_rng(np.random.SeedSequence(ints))


# --------------------------------------------------------------------------------------- colours
def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """``float (..., 3)`` HSV in [0, 1] -> ``float32 (..., 3)`` RGB in [0, 255]."""
    hsv = np.asarray(hsv, dtype=np.float64)
    h, s, v = hsv[..., 0] % 1.0, hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(hsv.shape, dtype=np.float64)
    for k, (r, g, b) in enumerate(choices):
        m = i == k
        out[..., 0] = np.where(m, r, out[..., 0])
        out[..., 1] = np.where(m, g, out[..., 1])
        out[..., 2] = np.where(m, b, out[..., 2])
    return (out * 255.0).astype(np.float32)


def random_colors(rng: np.random.Generator, n: int, sat: tuple[float, float] = (0.1, 0.85),
                  val: tuple[float, float] = (0.25, 0.95), hue: tuple[float, float] | None = None) -> np.ndarray:
    """``n`` colours from ONE fixed distribution (uniform hue, ``sat``/``val`` ranges) -> ``float32 (n, 3)``.

    ToyObjects draws object *and* background colours with this same call so that colour alone
    does not tell foreground from background.
    """
    h = rng.uniform(0, 1, n) if hue is None else rng.uniform(hue[0], hue[1], n)
    s = rng.uniform(sat[0], sat[1], n)
    v = rng.uniform(val[0], val[1], n)
    return hsv_to_rgb(np.stack([h, s, v], axis=-1))


# --------------------------------------------------------------------------------------- patterns
def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Smooth random field ``float32 (H, W)`` in [0, 1] with features of about ``scale`` pixels.

    A coarse uniform grid (one cell per ``scale`` px) upsampled bicubically, then min-max scaled.
    """
    h, w = shape
    gh, gw = max(2, int(np.ceil(h / scale)) + 2), max(2, int(np.ceil(w / scale)) + 2)
    coarse = rng.uniform(0, 1, (gh, gw)).astype(np.float32)
    big = cv2.resize(coarse, (int(gw * scale), int(gh * scale)), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, max(1, big.shape[0] - h + 1)))
    ox = int(rng.integers(0, max(1, big.shape[1] - w + 1)))
    out = big[oy:oy + h, ox:ox + w]
    if out.shape != (h, w):  # scale < 1 corner case
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(out.min()), float(out.max())
    return ((out - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def rotated_coords(shape: tuple[int, int], center: tuple[float, float], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(u, v)`` (``float32 (H, W)`` each) rotated by ``angle`` rad about ``center=(x, y)``."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x -= center[0]
    y -= center[1]
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return x * c + y * s, -x * s + y * c


def texture_pattern(kind: str, shape: tuple[int, int], rng: np.random.Generator,
                    center: tuple[float, float] | None = None) -> np.ndarray:
    """A two-colour texture pattern ``float32 (H, W)`` in [0, 1] (0 -> colour A, 1 -> colour B).

    Kinds (random period/angle/phase each call):
    ``stripes`` (period 4-8 px), ``checker`` (cell 3-6 px), ``dots`` (grid 5-8 px, radius 1.2-2.3),
    ``waves`` (stripes with a sinusoidal warp), ``camo`` (thresholded noise at 3-5 px),
    ``plain`` (all zeros), and background-only kinds ``grain`` (per-pixel noise),
    ``blotch`` (soft noise at 12-30 px), ``gradient`` (linear ramp), ``tiles`` (grout lines),
    ``windows`` (facade window grid), ``leaves`` (high-frequency blobs), ``clouds`` (soft large blobs).
    """
    h, w = shape
    if center is None:
        center = (rng.uniform(0, w), rng.uniform(0, h))
    angle = rng.uniform(0, np.pi)
    if kind == "plain":
        return np.zeros(shape, np.float32)
    if kind == "stripes":
        u, _ = rotated_coords(shape, center, angle)
        period = rng.uniform(4.0, 8.0)
        return (((u / period + rng.uniform(0, 1)) % 1.0) < 0.5).astype(np.float32)
    if kind == "checker":
        u, v = rotated_coords(shape, center, angle)
        cell = rng.uniform(3.0, 6.0)
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    if kind == "dots":
        u, v = rotated_coords(shape, center, angle)
        period = rng.uniform(5.0, 8.0)
        r = rng.uniform(1.2, min(2.3, period * 0.35))
        du = (u % period) - period / 2
        dv = (v % period) - period / 2
        return ((du * du + dv * dv) < r * r).astype(np.float32)
    if kind == "waves":
        u, v = rotated_coords(shape, center, angle)
        period = rng.uniform(4.0, 7.0)
        amp, lam = rng.uniform(1.5, 3.0), rng.uniform(8.0, 14.0)
        return ((((u + amp * np.sin(2 * np.pi * v / lam)) / period) % 1.0) < 0.5).astype(np.float32)
    if kind == "camo":
        return (smooth_noise(rng, shape, rng.uniform(3.0, 5.0)) > 0.5).astype(np.float32)
    if kind == "grain":
        return rng.uniform(0, 1, shape).astype(np.float32)
    if kind == "blotch":
        return smooth_noise(rng, shape, rng.uniform(12.0, 30.0))
    if kind == "gradient":
        u, _ = rotated_coords(shape, center, rng.uniform(0, 2 * np.pi))
        return np.clip(u / max(h, w) + 0.5, 0, 1).astype(np.float32)
    if kind == "tiles":
        u, v = rotated_coords(shape, (0.0, 0.0), 0.0)
        p = rng.uniform(5.0, 9.0)
        ox, oy = rng.uniform(0, p, 2)
        line = ((u + ox) % p < 1.0) | ((v + oy) % (p * rng.uniform(0.6, 1.0)) < 1.0)
        return line.astype(np.float32)
    if kind == "windows":
        u, v = rotated_coords(shape, (0.0, 0.0), 0.0)
        px, py = rng.uniform(6.0, 11.0), rng.uniform(7.0, 12.0)
        fx, fy = rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.6)
        ox, oy = rng.uniform(0, px), rng.uniform(0, py)
        return ((((u + ox) % px) < px * fx) & (((v + oy) % py) < py * fy)).astype(np.float32)
    if kind == "leaves":
        n = smooth_noise(rng, shape, rng.uniform(1.5, 2.5))
        return (n > rng.uniform(0.4, 0.6)).astype(np.float32) * 0.7 + 0.3 * rng.uniform(0, 1, shape).astype(np.float32)
    if kind == "clouds":
        return np.clip(smooth_noise(rng, shape, rng.uniform(15.0, 35.0)) * 1.6 - 0.6, 0, 1)
    raise InvalidInputError(f"unknown texture kind {kind!r}; known: {TEXTURES}")


TEXTURES = ("plain", "stripes", "checker", "dots", "waves", "camo", "grain", "blotch", "gradient",
            "tiles", "windows", "leaves", "clouds")


def blend(pattern: np.ndarray, color_a: np.ndarray, color_b: np.ndarray) -> np.ndarray:
    """``float32 (H, W, 3)``: ``color_a * (1 - pattern) + color_b * pattern``."""
    p = pattern[..., None]
    return (np.asarray(color_a, np.float32) * (1.0 - p) + np.asarray(color_b, np.float32) * p).astype(np.float32)


def shading(shape: tuple[int, int], rng: np.random.Generator, strength: float = 0.15) -> np.ndarray:
    """Multiplicative illumination ramp ``float32 (H, W, 1)`` around 1 (+-``strength``)."""
    h, w = shape
    u, _ = rotated_coords(shape, (w / 2, h / 2), rng.uniform(0, 2 * np.pi))
    return (1.0 + strength * rng.uniform(-1, 1) * u / max(h, w)).astype(np.float32)[..., None]


# --------------------------------------------------------------------------------------- shapes
def ellipse_polygon(center: tuple[float, float], axes: tuple[float, float], angle: float, n: int = 48) -> np.ndarray:
    """Polygon ``(n, 2)`` approximating an ellipse (``axes`` = semi-axes, ``angle`` rad)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = np.stack([axes[0] * np.cos(t), axes[1] * np.sin(t)], axis=1)
    return _place(pts, center, angle)


def regular_star(points: int, inner: float) -> np.ndarray:
    """Unit star polygon ``(2 * points, 2)``: outer radius 1, inner radius ``inner``."""
    t = np.arange(2 * points) * np.pi / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _place(pts: np.ndarray, center: tuple[float, float], angle: float, scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    pts = np.asarray(pts, np.float64) * np.asarray(scale, np.float64)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return pts @ rot.T + np.asarray(center, np.float64)


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a simple polygon ``(N, 2)``."""
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def shape_polygons(kind: str, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Unit-size shape (random aspect/proportions, centred at 0, not rotated).

    Returns ``(outer_polys, hole_polys, area)``; the filled region is union(outer) minus union(holes).
    Kinds: ``disc``, ``box``, ``triangle``, ``ring``, ``star``, ``cross``.
    """
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.0 / 0.6))))
    sx, sy = np.sqrt(aspect), 1.0 / np.sqrt(aspect)
    if kind == "disc":
        p = ellipse_polygon((0, 0), (sx, sy), 0.0)
        return [p], [], polygon_area(p)
    if kind == "box":
        p = np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]], np.float64)
        return [p], [], polygon_area(p)
    if kind == "triangle":
        apex = rng.uniform(-0.4, 0.4)
        p = np.array([[apex * sx, -sy * 1.15], [sx * 1.15, sy * 0.85], [-sx * 1.15, sy * 0.85]], np.float64)
        return [p], [], polygon_area(p)
    if kind == "ring":
        inner = rng.uniform(0.45, 0.62)
        po = ellipse_polygon((0, 0), (sx, sy), 0.0)
        pi = ellipse_polygon((0, 0), (sx * inner, sy * inner), 0.0)
        return [po], [pi], polygon_area(po) - polygon_area(pi)
    if kind == "star":
        p = regular_star(int(rng.integers(5, 7)), rng.uniform(0.42, 0.55)) * np.array([sx, sy])
        return [p], [], polygon_area(p)
    if kind == "cross":
        a = rng.uniform(0.28, 0.4)
        p = np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
                      [-1, -a], [-a, -a]], np.float64) * np.array([sx, sy])
        return [p], [], polygon_area(p)
    raise InvalidInputError(f"unknown shape {kind!r}; known: disc, box, triangle, ring, star, cross")


def fill_polygons(shape: tuple[int, int], outer: list[np.ndarray], holes: list[np.ndarray] = ()) -> np.ndarray:
    """Rasterise ``union(outer) - union(holes)`` -> ``bool (H, W)`` (sub-pixel accurate vertices)."""
    canvas = np.zeros(shape, np.uint8)
    shift = 4
    f = float(1 << shift)
    cv2.fillPoly(canvas, [np.round(p * f).astype(np.int32) for p in outer], 1, lineType=cv2.LINE_8, shift=shift)
    if holes:
        cv2.fillPoly(canvas, [np.round(p * f).astype(np.int32) for p in holes], 0, lineType=cv2.LINE_8, shift=shift)
    return canvas.astype(bool)


def place_polygons(polys: list[np.ndarray], center: tuple[float, float], angle: float, scale: float) -> list[np.ndarray]:
    """Scale, rotate (rad) and translate unit polygons."""
    return [_place(p, center, angle, (scale, scale)) for p in polys]


# --------------------------------------------------------------------------------------- caching
def manifest_matches(root: Path, manifest: dict) -> bool:
    """True when ``root/manifest.json`` equals ``manifest`` (after a JSON round trip)."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return False
    try:
        on_disk = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return on_disk == json.loads(json.dumps(manifest))


def ensure_generated(root: str | os.PathLike, manifest: dict, generate: Callable[[Path], None],
                     files_ok: Callable[[Path], bool]) -> Path:
    """Generate a toy dataset into ``root`` unless it is already there with the same ``manifest``.

    ``generate(tmp_dir)`` writes everything except ``manifest.json``; ``files_ok(root)`` checks
    that the files listed by the dataset's own index exist. Generation goes to a sibling
    temporary folder that replaces ``root`` atomically (a crash never leaves a half dataset), under
    an exclusive file lock (two processes asking at once generate once). A non-empty ``root``
    without a ``manifest.json`` is never deleted: a :class:`DatasetLayoutError` asks the user to
    move it.
    """
    root = Path(root).expanduser().resolve()
    if manifest_matches(root, manifest) and files_ok(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.lock"
    with open(lock_path, "a+") as lock:
        try:
            import fcntl  # lazy: POSIX-only module

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX
            pass
        if manifest_matches(root, manifest) and files_ok(root):  # someone else generated it meanwhile
            return root
        if root.exists() and any(root.iterdir()) and not (root / "manifest.json").is_file():
            raise DatasetLayoutError(
                f"{root} exists, is not empty and has no manifest.json, so it is not a generated toy dataset; "
                "refusing to overwrite it. Move it away or pass another root."
            )
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            generate(tmp)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
            if root.exists():
                old = root.parent / f".{root.name}.old-{os.getpid()}"
                root.rename(old)
                tmp.rename(root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root
