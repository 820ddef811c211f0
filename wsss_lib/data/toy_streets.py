"""ToyStreets: procedurally generated street-scene video clips (Cityscapes/CamVid-like, paper 2 on a CPU).

Classes (index: name)::

    0 sky | 1 building | 2 vegetation | 3 road | 4 sidewalk      <- background (stuff) classes
    5 car | 6 person | 7 bicycle                                   <- foreground, moving on their own

No void class; every pixel has a class (255 is never written, but loaders accept it).
A "bicycle" is the bicycle *with its rider* (as CamVid's Bicyclist).

How a clip is made (ToyStreets v2, ``GENERATOR_VERSION`` 3)
----------------------------------------------------------
* A scene canvas about 1.6x taller and 3x wider than a frame is drawn once per clip. Its kind:
  *street* (42 %; a row of facades of random heights/colours with window grids, sometimes with
  gaps to the sky; 30 % of streets are "canyons" of tall facades with little or no sky), *tunnel*
  (8 %; walls and lights, no sky), *open* road (15 %; a tree line, no buildings), *plaza* (15 %;
  facades, paving everywhere below, no road) or *park* (20 %; tree line, grass labelled
  vegetation, a paved path in 60 %, low facades behind the trees in 30 %, no road). Sky: blue
  gradient with clouds or overcast grey; trees (leafy crowns + trunks, vegetation); on roads a
  sidewalk band with tile joints (absent in some clips, a second band at the bottom in others)
  and asphalt with grain and lane dashes.
* Independently moving objects are drawn on the canvas per frame, as filled silhouettes: cars on
  the road lanes (~15 % parked at the kerb), persons walking on sidewalks / paving / grass / paths
  (head, torso with swinging arms, two legs), bicycles *with their riders* near the kerb or on
  paths (filled wheels, filled frame, rider's torso, head, arm and pedalling leg). Sizes grow
  with depth (the lower the feet on the canvas, the nearer: up to x1.45) and vary per object;
  speeds scale with size (same motion relative to an object's size as v1: cars 2-5, persons
  0.5-1.5, bicycles 1.5-3.5 px/frame at v1 sizes). At 96x128 persons are ~45 px tall and ~20 px
  wide, bicycles ~40 px, cars ~65 x 30 px (medians): every class spans at least two cells of
  a stride-8 score map (:func:`oracle_stride_iou` measures it). ~30 % of objects enter or leave
  the view during a clip. Depth order = foot position.
* A moving camera: each frame is a window of the canvas that pans (3-9 px/frame), drifts
  vertically and zooms (x0.9-1.12 over the clip), resampled to the frame size (bilinear image,
  nearest labels). Its pitch per clip: *level* (64 %), *up* (14 %; a shorter window above the
  road: no road, often no sidewalk) or *down* (22 %; a shorter window at the bottom: ground and
  objects, rarely sky). So every background class is missing from a good share of the frames
  (its tag has negatives); panning makes trees, gaps, objects enter and leave, so tags vary per
  frame too.
* Texture/colour families overlap on purpose: building and sidewalk are both grey/beige (windows vs
  tile joints), overcast sky is grey too, ~30 % of cars have the road's colour and ~25 % of
  persons wear the building/sidewalk colours: for those, motion is the main cue. Co-occurrences
  stay ambiguous: cars always come with road, persons with sidewalk, bicycles with road or paths.

On-disk layout::

    <root>/frames/{clip}/{frame:04d}.jpg       quality 92, H x W = 96 x 128 by default
    <root>/labels/{clip}/{frame:04d}.png       palette PNG, class indices 0..7
    <root>/ImageSets/{train,val,test}.txt      clip names, one per line
    <root>/tags.json       {"clip/0000": [class names present in that frame]}
    <root>/clips.json      per clip: layout (scene kind, flags, camera pitch), camera windows
                           [x, y, w, h] per frame (canvas px), object tracks [{"class", "parked",
                           "camouflaged", "rgb" (body/clothes colour), "size" (canvas px),
                           "xy": [[x, y] per frame]}] (canvas px)
    <root>/classes.json    DatasetInfo.to_json()
    <root>/manifest.json   generator parameters + version

Clip names are ``{split}_{index:04d}``; clip ``index`` of ``split`` is drawn from
``rng_for(seed, "toy_streets", split, index)`` alone.

Measurability: :func:`oracle_stride_iou` is the per-class IoU of a *perfect* stride-``s`` score
map (true class fractions per cell, bilinear upsampling, argmax); :func:`instance_sizes` gives
the visible size of every object per frame. ``benchmarks/toy_streets_stats.py`` reports both
(data/README.md has the numbers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..core.config import PRESETS
from ..core.errors import InvalidInputError, dataset_layout_error
from ..core.io import write_image, write_label
from ..core.parallel import num_threads_hint, run_pool
from .base import DatasetInfo, Sample, read_list_file, read_tags_json, safe_join, tags_from_label
from .textures import blend, ensure_generated, hsv_to_rgb, random_colors, rng_for, smooth_noise, texture_pattern

GENERATOR_VERSION = 3
_DEF = PRESETS["toy_streets"]["default"]  # sizes and seed: the one place they live
CLASSES = ["sky", "building", "vegetation", "road", "sidewalk", "car", "person", "bicycle"]
BACKGROUND = [0, 1, 2, 3, 4]
MOVING = [5, 6, 7]
SKY, BUILDING, VEGETATION, ROAD, SIDEWALK, CAR, PERSON, BICYCLE = range(8)
# display colours (Cityscapes-like), index = class; 255 -> light cream
PALETTE = np.zeros((256, 3), np.uint8)
PALETTE[:8] = [(70, 130, 180), (70, 70, 70), (107, 142, 35), (128, 64, 128), (244, 35, 232), (0, 0, 142),
               (220, 20, 60), (119, 11, 32)]
PALETTE[255] = (224, 224, 192)

TOY_STREETS_TREE = """<root>/
    frames/{clip}/{frame:04d}.jpg
    labels/{clip}/{frame:04d}.png
    ImageSets/{train,val,test}.txt      (clip names)
    tags.json, clips.json, classes.json, manifest.json"""
TOY_STREETS_SOURCE = "generated locally: wsss_lib.data.toy_streets.ensure_toy_streets(root)"


def toy_streets_info() -> DatasetInfo:
    """ToyStreets label space: 8 classes, background = sky..sidewalk, moving = car, person, bicycle."""
    return DatasetInfo(name="toy_streets", classes=list(CLASSES), background=list(BACKGROUND), palette=PALETTE.copy(),
                       moving=list(MOVING))


# ------------------------------------------------------------------------------------------ colours
def _hsv(rng, h, s, v, n=1) -> np.ndarray:
    return hsv_to_rgb(np.stack([rng.uniform(*h, n), rng.uniform(*s, n), rng.uniform(*v, n)], -1))


def _greyish(rng, n=1, v=(0.45, 0.85)) -> np.ndarray:
    """Grey / beige / light-brick family shared by buildings, sidewalks and overcast skies."""
    return _hsv(rng, (0.0, 0.14), (0.02, 0.3), v, n)


def _road_color(rng) -> np.ndarray:
    return _hsv(rng, (0.0, 1.0), (0.0, 0.12), (0.22, 0.5))[0]


# ------------------------------------------------------------------------------------------ scene
SCENE_KINDS = ("street", "tunnel", "open", "plaza", "park")
SCENE_P = (0.42, 0.08, 0.15, 0.15, 0.2)
PITCHES = ("level", "up", "down")
PITCH_P = (0.64, 0.14, 0.22)


def _paint(img, lab, mask, fill, cls):
    img[mask] = fill[mask] if fill.ndim == 3 else fill
    lab[mask] = cls


def _buildings(rng, img, lab, xs, ys, y_ground, top_range=(0.04, 0.4), gap_p=0.15):
    """A row of facades (random widths, heights, colours, window grids) standing on ``y_ground``."""
    hc, wc = lab.shape
    x = int(-rng.integers(0, 20))
    while x < wc:
        bw = int(wc * rng.uniform(0.09, 0.26))
        if rng.random() < gap_p:  # gap: sky visible down to the ground
            x += bw // 2
            continue
        top_y = int(hc * rng.uniform(*top_range)) if rng.random() < 0.8 else int(hc * top_range[0] * 0.5)
        col = _greyish(rng)[0] if rng.random() < 0.75 else _hsv(rng, (0.0, 0.1), (0.35, 0.6), (0.4, 0.7))[0]
        win = _hsv(rng, (0.5, 0.7), (0.1, 0.4), (0.15, 0.45))[0] if rng.random() < 0.7 else col * 0.55
        region = (xs >= x) & (xs < x + bw) & (ys >= top_y) & (ys < y_ground)
        pat = texture_pattern("windows", (hc, wc), rng)
        fill = blend(pat, col, win) * (0.9 + 0.2 * smooth_noise(rng, (hc, wc), 20)[..., None])
        _paint(img, lab, region, fill, BUILDING)
        x += bw


def render_scene(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Static scene canvas: ``image float32 (Hc, Wc, 3)``, ``label uint8 (Hc, Wc)``, layout dict.

    The layout dict holds the scene ``kind`` (street, tunnel, open road, plaza, park) and flags
    (``canyon``: a street of tall facades, ``road``, ``sidewalk``, ``lower_sidewalk``, ``trees``,
    ``overcast``), the ground line
    ``y_ground`` (where facades / tree lines stand), the road band ``y_road`` .. ``y_road_end``
    (empty, both = Hc, without a road), the park path ``y_path`` ([top, bottom], or None) and the
    road / sidewalk colours ``road_rgb`` / ``sidewalk_rgb``.
    """
    hc, wc = shape
    img = np.zeros((hc, wc, 3), np.float32)
    lab = np.zeros((hc, wc), np.uint8)
    ys, xs = np.mgrid[0:hc, 0:wc]
    kind = str(rng.choice(SCENE_KINDS, p=SCENE_P))
    has_road = kind in ("street", "tunnel", "open")
    if kind == "plaza":
        has_sidewalk = True
    elif kind == "park":
        has_sidewalk = rng.random() < 0.6  # a paved path across the grass
    else:
        has_sidewalk = rng.random() < (0.65 if kind == "street" else 0.5)
    lower_sidewalk = has_road and has_sidewalk and rng.random() < 0.4
    has_trees = kind != "tunnel" and rng.random() < (0.8 if kind == "park" else 0.55)
    overcast = rng.random() < 0.35
    canyon = kind == "street" and rng.random() < 0.3
    y_ground = int(hc * rng.uniform(0.48, 0.62))
    y_path = None
    if has_road:
        sw_h = int(hc * rng.uniform(0.07, 0.13)) if has_sidewalk else 0
        y_road = y_ground + sw_h
        y_road_end = hc - (int(hc * rng.uniform(0.06, 0.1)) if lower_sidewalk else 0)
    else:
        sw_h = 0
        y_road = y_road_end = hc
        if kind == "park" and has_sidewalk:
            ph = (hc - y_ground) * rng.uniform(0.15, 0.3)
            top = rng.uniform(y_ground + 0.1 * (hc - y_ground), hc - ph)
            y_path = [int(top), int(top + ph)]

    # sky
    if overcast:
        top, bottom = _greyish(rng, 1, (0.65, 0.9))[0], _greyish(rng, 1, (0.75, 0.95))[0]
    else:
        top, bottom = _hsv(rng, (0.55, 0.64), (0.35, 0.7), (0.6, 0.9))[0], _hsv(rng, (0.5, 0.62), (0.05, 0.3), (0.85, 1.0))[0]
    grad = np.clip(ys / max(1, y_ground), 0, 1).astype(np.float32)
    sky = blend(grad, top, bottom)
    clouds = texture_pattern("clouds", (hc, wc), rng)
    sky = sky * (1 - clouds[..., None] * 0.8) + np.float32(245) * clouds[..., None] * 0.8
    _paint(img, lab, ys < y_ground, sky, SKY)

    # buildings / tunnel / tree line
    if kind == "tunnel":
        wall = _greyish(rng, 1, (0.25, 0.5))[0]
        fill = blend(texture_pattern("blotch", (hc, wc), rng), wall, wall * 0.75)
        lights = (((xs + rng.integers(0, 20)) % int(rng.integers(18, 30))) < 5) & (np.abs(ys - hc * 0.12) < 2)
        fill[lights] = (250, 240, 190)
        _paint(img, lab, ys < y_ground, fill, BUILDING)
    elif kind == "street":
        if canyon:  # tall facades side by side: little or no sky in view
            _buildings(rng, img, lab, xs, ys, y_ground, top_range=(0.0, 0.08), gap_p=0.03)
        else:
            _buildings(rng, img, lab, xs, ys, y_ground)
    elif kind == "plaza":  # a square: facades further apart (more gaps), paving everywhere below
        _buildings(rng, img, lab, xs, ys, y_ground, gap_p=0.3)
    elif kind == "park" and rng.random() < 0.3:  # city park: low facades behind the trees
        _buildings(rng, img, lab, xs, ys, y_ground, top_range=(0.2, 0.42), gap_p=0.3)
    trees = []
    if kind in ("open", "park"):  # tree line on the horizon
        line = (y_ground - hc * rng.uniform(0.08, 0.25) + 6 * smooth_noise(rng, (1, wc), 6)[0]).astype(np.float32)
        trees.append(("line", ys >= line[None, :]))
    trunk_end = y_ground + (sw_h * 0.6 if has_road else (hc - y_ground) * 0.08)
    if has_trees:
        for _ in range(int(rng.integers(1, 6))):
            cx = rng.uniform(0, wc)
            r = hc * rng.uniform(0.08, 0.18)
            cy = y_ground - r * rng.uniform(1.2, 2.0)
            blobs = np.zeros((hc, wc), bool)
            for _ in range(int(rng.integers(3, 7))):
                bx, by = cx + rng.normal(0, r * 0.45), cy + rng.normal(0, r * 0.35)
                br = r * rng.uniform(0.45, 0.8)
                blobs |= (xs - bx) ** 2 + (ys - by) ** 2 < br * br
            trunk = (np.abs(xs - cx) < max(1.5, r * 0.12)) & (ys >= cy) & (ys < trunk_end)
            trees.append(("tree", blobs | trunk, trunk))
    for t in trees:
        green = _hsv(rng, (0.17, 0.4) if rng.random() < 0.85 else (0.08, 0.17), (0.35, 0.8), (0.2, 0.6))[0]
        fill = blend(texture_pattern("leaves", (hc, wc), rng), green * 0.6, np.minimum(green * 1.35, 255))
        m = t[1] & (ys < y_ground) if t[0] == "line" else t[1]
        _paint(img, lab, m, fill, VEGETATION)
        if t[0] == "tree":
            img[t[2]] = _hsv(rng, (0.05, 0.1), (0.4, 0.6), (0.2, 0.35))[0]

    # ground: sidewalk(s) / road, paving (plaza), grass + path (park)
    sw_col = _greyish(rng)[0]
    tiles = blend(texture_pattern("tiles", (hc, wc), rng), sw_col, sw_col * 0.7)
    free = lab != VEGETATION  # tree trunks stay in front
    if kind == "plaza":
        _paint(img, lab, (ys >= y_ground) & free, tiles, SIDEWALK)
    elif kind == "park":
        grass = _hsv(rng, (0.18, 0.33), (0.35, 0.75), (0.3, 0.65))[0]
        fill = blend(texture_pattern("grain", (hc, wc), rng), grass * 0.8, np.minimum(grass * 1.2, 255))
        fill *= 0.85 + 0.3 * smooth_noise(rng, (hc, wc), 16)[..., None]
        _paint(img, lab, ys >= y_ground, fill, VEGETATION)
        if y_path is not None:
            _paint(img, lab, (ys >= y_path[0]) & (ys < y_path[1]) & free, tiles, SIDEWALK)
    road = _road_color(rng)  # drawn for every scene (recorded in the layout)
    if has_road:
        if has_sidewalk:
            _paint(img, lab, (ys >= y_ground) & (ys < y_road) & free, tiles, SIDEWALK)
        asphalt = blend(texture_pattern("grain", (hc, wc), rng), road * 0.85, np.minimum(road * 1.15, 255))
        _paint(img, lab, (ys >= y_road) & (ys < y_road_end), asphalt, ROAD)
        lane_y = (y_road + y_road_end) / 2
        dash = (np.abs(ys - lane_y) < 1.0) & (((xs + rng.integers(0, 30)) % 24) < 12)
        img[dash] = (235, 235, 225)  # markings are road
        if lower_sidewalk:
            _paint(img, lab, ys >= y_road_end, tiles, SIDEWALK)
    layout = {"kind": kind, "canyon": bool(canyon), "road": bool(has_road), "sidewalk": bool(has_sidewalk),
              "lower_sidewalk": bool(lower_sidewalk),
              "trees": bool(has_trees), "overcast": bool(overcast), "y_ground": int(y_ground), "y_road": int(y_road),
              "y_road_end": int(y_road_end), "y_path": y_path, "road_rgb": [round(float(v), 1) for v in road],
              "sidewalk_rgb": [round(float(v), 1) for v in sw_col]}
    return img, lab, layout


# ------------------------------------------------------------------------------------------ objects
# Object sizes are in canvas px at depth scale 1 (the far edge of the ground, where facades stand),
# as fractions of the canvas height Hc; an object standing ``d`` of the way from there to the
# canvas bottom is ``1 + DEPTH_GAIN * d`` times larger (and moves that much faster). With the
# camera's canvas->frame scale (0.7-1.5) this makes persons ~35-75 frame px tall, bicycles with
# riders ~30-60 px long and cars ~45-100 px long at 96x128: every foreground object is at least two
# stride-8 score-map cells wide where it is widest, never a 1-px line.
PERSON_H = (0.3, 0.38)      # height / Hc
BICYCLE_L = (0.24, 0.3)     # length (wheel to wheel, outer) / Hc
CAR_L = (0.34, 0.46)        # length / Hc
DEPTH_GAIN = 0.45
ENTER_P = 0.3               # share of objects that enter or leave the view during a clip


def _pts(points, off) -> np.ndarray:
    """Float ``(x, y)`` canvas points -> int32 fixed-point (4 fractional bits) patch coordinates."""
    return np.round((np.asarray(points, np.float64) - off) * 16).astype(np.int32)


class _Sprite:
    """Parts of one object drawn on a small patch of the canvas, then painted front to back."""

    def __init__(self, shape, x0, y0, x1, y1):
        hc, wc = shape
        self.x0, self.y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        self.x1, self.y1 = min(wc, int(np.ceil(x1)) + 1), min(hc, int(np.ceil(y1)) + 1)
        self.off = np.array([self.x0, self.y0], np.float64)
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0

    def new(self) -> np.ndarray:
        return np.zeros((self.y1 - self.y0, self.x1 - self.x0), np.uint8)

    def poly(self, m, *polys):
        cv2.fillPoly(m, [_pts(p, self.off) for p in polys], 1, cv2.LINE_8, 4)
        return m

    def disc(self, m, c, r):
        cx, cy = _pts([c], self.off)[0]
        cv2.circle(m, (int(cx), int(cy)), max(16, int(round(r * 16))), 1, -1, cv2.LINE_8, 4)
        return m

    def limb(self, m, a, b, width):
        """A thick segment with round ends (a filled capsule) from ``a`` to ``b``."""
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        d = b - a
        n = np.array([-d[1], d[0]]) / max(1e-6, float(np.hypot(*d))) * width / 2
        self.poly(m, np.array([a + n, b + n, b - n, a - n]))
        self.disc(m, a, width / 2)
        self.disc(m, b, width / 2)
        return m

    def add(self, m, color):
        self.parts.append((m.astype(bool), np.asarray(color, np.float32)))

    def paint(self, img, lab, inst, cls, k) -> None:
        if self.empty or not self.parts:
            return
        sl = (slice(self.y0, self.y1), slice(self.x0, self.x1))
        sub_img, sub_lab, sub_inst = img[sl], lab[sl], inst[sl]
        union = np.zeros(sub_lab.shape, bool)
        for m, col in self.parts:
            sub_img[m] = col
            union |= m
        sub_lab[union] = cls
        sub_inst[union] = k + 1


def _draw_car(sp: _Sprite, x, y_bottom, length, direction, color, camouflaged=False):
    """Side view of a car, bottom-centre at ``(x, y_bottom)``, facing ``direction`` (+1 right)."""
    h = length * 0.42
    body_top = y_bottom - h * 0.62
    x0, x1 = x - length / 2, x + length / 2
    body = np.array([[x0, y_bottom - h * 0.12], [x0, body_top + h * 0.05], [x0 + length * 0.02, body_top],
                     [x1 - length * 0.02, body_top], [x1, body_top + h * 0.05], [x1, y_bottom - h * 0.12]])
    cab_l, cab_r = (x0 + length * 0.22, x1 - length * 0.12) if direction > 0 else (x0 + length * 0.12, x1 - length * 0.22)
    cabin = np.array([[cab_l, body_top], [cab_l + length * 0.12, y_bottom - h], [cab_r - length * 0.12, y_bottom - h],
                      [cab_r, body_top]])
    m_body = sp.poly(sp.new(), body, cabin)
    g = max(1.5, length * 0.03)
    inset = np.array([[cab_l + g, body_top], [cab_l + length * 0.12 + g * 0.5, y_bottom - h + g],
                      [cab_r - length * 0.12 - g * 0.5, y_bottom - h + g], [cab_r - g, body_top]])
    m_glass = sp.poly(sp.new(), inset)
    wr = max(2.0, h * 0.2)
    m_wheels = sp.new()
    for wx in (x0 + length * 0.2, x1 - length * 0.2):
        sp.disc(m_wheels, (wx, y_bottom - wr), wr)
    col = np.asarray(color, np.float32)
    sp.add(m_body, col)
    # camouflaged cars: windows and tyres are darker shades of the body (road) colour, not black
    sp.add(m_glass, col * 0.75 if camouflaged else (40, 50, 60))
    sp.add(m_wheels, col * 0.6 if camouflaged else (20, 20, 20))


def _draw_person(sp: _Sprite, x, y_bottom, height, phase, direction, clothes, skin, pants):
    """A walking person, feet at ``(x, y_bottom)``: head, torso with arms, two legs (filled shapes)."""
    H, d = height, direction
    y_sh, y_hip = y_bottom - 0.8 * H, y_bottom - 0.47 * H
    sw, hw = 0.32 * H, 0.27 * H  # shoulder / hip width
    swing = np.sin(phase) * 0.11 * H
    legs = sp.new()
    for s, o in ((swing, -0.065 * H), (-swing, 0.065 * H)):
        sp.limb(legs, (x + o, y_hip), (x + o * 0.5 + s, y_bottom - 0.04 * H), 0.14 * H)
    torso = sp.poly(sp.new(), np.array([[x - sw / 2, y_sh + 0.05 * H], [x - sw / 2 + 0.05 * H, y_sh],
                                        [x + sw / 2 - 0.05 * H, y_sh], [x + sw / 2, y_sh + 0.05 * H],
                                        [x + hw / 2, y_hip + 0.05 * H], [x - hw / 2, y_hip + 0.05 * H]]))
    arms = sp.new()
    for side, s in ((-1, swing), (1, -swing)):
        sp.limb(arms, (x + side * (sw / 2 - 0.04 * H), y_sh + 0.05 * H),
                (x + side * (sw / 2 - 0.01 * H) - 0.5 * s, y_hip + 0.03 * H), 0.085 * H)
    head = sp.disc(sp.new(), (x + d * 0.015 * H, y_sh - 0.095 * H), 0.09 * H)
    sp.limb(head, (x, y_sh - 0.03 * H), (x, y_sh + 0.02 * H), 0.08 * H)  # neck
    clothes = np.asarray(clothes, np.float32)
    sp.add(legs, pants)
    sp.add(torso, clothes)
    sp.add(arms, clothes * 0.85)
    sp.add(head, skin)


def _draw_bicycle(sp: _Sprite, x, y_bottom, size, phase, direction, frame_col, clothes, skin, pants):
    """A bicycle with its rider as one filled silhouette, wheels touching ``y_bottom``, ``size`` = outer length."""
    L, d = size, direction
    r = 0.2 * L
    rear, front = np.array([x - d * 0.3 * L, y_bottom - r]), np.array([x + d * 0.3 * L, y_bottom - r])
    bb = np.array([x - d * 0.02 * L, y_bottom - 0.85 * r])           # bottom bracket (pedals)
    seat = np.array([x - d * 0.1 * L, y_bottom - 2.25 * r])
    bar = np.array([x + d * 0.22 * L, y_bottom - 2.45 * r])
    tyres, hubs = sp.new(), sp.new()
    for c in (rear, front):
        sp.disc(tyres, c, r)
        sp.disc(hubs, c, r * 0.72)  # rim + spokes: a lighter disc inside the tyre
    frame = sp.poly(sp.new(), np.array([rear, seat, bar, front, bb]))
    frame_col = np.asarray(frame_col, np.float32)
    shoulder = np.array([x + d * 0.07 * L, seat[1] - 0.36 * L])
    rider = sp.limb(sp.new(), seat, shoulder, 0.18 * L)
    arm = sp.limb(sp.new(), shoulder, bar, 0.08 * L)
    pedal = bb + 0.09 * L * np.array([np.cos(phase), np.sin(phase)])
    knee = (seat + pedal) / 2 + d * np.array([0.12 * L, -0.04 * L])
    leg = sp.limb(sp.new(), seat, knee, 0.11 * L)
    sp.limb(leg, knee, pedal, 0.09 * L)
    head = sp.disc(sp.new(), shoulder + np.array([d * 0.05 * L, -0.12 * L]), 0.08 * L)
    clothes = np.asarray(clothes, np.float32)
    sp.add(tyres, (25, 25, 25))
    sp.add(hubs, frame_col * 0.5 + 60)
    sp.add(frame, frame_col)
    sp.add(leg, pants)
    sp.add(rider, clothes)
    sp.add(arm, clothes * 0.85)
    sp.add(head, skin)


def _plan_objects(rng, layout, shape, cams, frames) -> list[dict]:
    """Object tracks in canvas coordinates (positions per frame) and their appearance parameters.

    ``cams``: the camera windows ``(T, 4)``. Most objects are inside the window's x range at
    mid-clip; ``ENTER_P`` of them just touch a window edge from outside at a random time, so they
    enter or leave the view during the clip (per-frame tags change within a clip).
    """
    hc, wc = shape
    max_w = float(cams[:, 2].max())
    lo, hi = cams[:, 0].min() + 0.15 * max_w, cams[:, 0].max() + 0.85 * max_w
    objs = []
    y_ground, y_road, y_end = layout["y_ground"], layout["y_road"], layout["y_road_end"]
    road_rgb = np.asarray(layout["road_rgb"], np.float32)
    sw_rgb = np.asarray(layout["sidewalk_rgb"], np.float32)
    kind = layout["kind"]

    def depth(y):  # size (and speed) factor of an object whose feet are at canvas row y
        return 1.0 + DEPTH_GAIN * float(np.clip((y - y_ground) / max(1.0, hc - y_ground), 0.0, 1.0))

    def start_x(v, half_width):
        if rng.random() < ENTER_P:  # touching a window edge from outside at time tc: in view before or after
            tc = rng.uniform(0.5, frames - 1.5)
            i = min(int(tc), frames - 2)
            side = 1.0 if rng.random() < 0.5 else -1.0  # right / left edge
            edge = cams[:, 0] + (cams[:, 2] if side > 0 else 0.0)
            e_tc = edge[i] + (edge[i + 1] - edge[i]) * (tc - i)
            if abs(v - (edge[-1] - edge[0]) / (frames - 1)) > 0.5:  # it must move relative to that edge
                return e_tc + side * half_width - v * tc
        # else: inside the camera's x range at mid-clip
        mid = rng.uniform(lo, hi)
        return mid - v * (frames - 1) / 2

    def ground_y():  # where a pedestrian / cyclist may be: sidewalks, paving, grass, a path
        if kind == "plaza":
            return rng.uniform(y_ground + 2, hc - 1)
        if kind == "park":
            path = layout["y_path"]
            if path is not None and rng.random() < 0.6:
                return rng.uniform(path[0] + 1, path[1])
            return rng.uniform(y_ground + 2, hc - 1)
        bands = []
        if layout["sidewalk"]:
            bands.append((y_ground + 2, y_road))
        if layout["lower_sidewalk"]:
            bands.append((y_end + 2, hc - 1))
        if not bands:
            bands.append((y_road + 1, y_road + 4))  # no sidewalk: at the road's edge
        a, b = bands[int(rng.integers(0, len(bands)))]
        return rng.uniform(a, max(a + 0.5, b))

    if layout["road"]:
        for _ in range(int(rng.choice([0, 1, 2, 2, 3]))):
            parked = rng.random() < 0.15
            d = 1 if rng.random() < 0.5 else -1
            nominal = hc * rng.uniform(*CAR_L)
            if parked:
                y = y_road + 0.25 * nominal * 0.42 + 2
            else:
                y = rng.uniform(y_road + nominal * 0.3, max(y_road + nominal * 0.31, y_end - 1))
            s = depth(y)
            length = nominal * s
            v = 0.0 if parked else d * rng.uniform(2.0, 5.0) * length / (0.25 * hc)
            camo = rng.random() < 0.3
            if camo:  # road colour: only motion (and wheels/windows) gives it away
                color = np.clip(road_rgb * rng.uniform(0.9, 1.1) + rng.normal(0, 4, 3), 0, 255)
            else:
                color = random_colors(rng, 1, sat=(0.0, 0.9), val=(0.15, 0.95))[0]
            objs.append({"class": "car", "cls": CAR, "parked": bool(parked), "v": v, "x0": start_x(v, length / 2),
                         "y": float(y), "size": float(length), "dir": d, "color": color, "camouflaged": bool(camo)})
    n_person = [0, 1, 1, 2, 3] if layout["road"] else [0, 1, 2, 2, 3]
    for _ in range(int(rng.choice(n_person))):
        d = 1 if rng.random() < 0.5 else -1
        y = ground_y()
        height = hc * rng.uniform(*PERSON_H) * depth(y)
        v = d * rng.uniform(0.5, 1.5) * height / (0.17 * hc)
        camo = rng.random() < 0.25
        clothes = np.clip(sw_rgb * rng.uniform(0.85, 1.1), 0, 255) if camo else random_colors(rng, 1)[0]
        objs.append({"class": "person", "cls": PERSON, "parked": False, "v": v, "x0": start_x(v, 0.22 * height),
                     "y": float(y), "size": float(height), "dir": d, "color": clothes, "phase0": rng.uniform(0, 2 * np.pi),
                     "camouflaged": bool(camo),
                     "skin": _hsv(rng, (0.03, 0.1), (0.25, 0.6), (0.35, 0.95))[0],
                     "pants": random_colors(rng, 1, val=(0.15, 0.6))[0]})
    n_bike = [0, 0, 1, 1, 2] if layout["road"] else [0, 1, 1, 2]
    for _ in range(int(rng.choice(n_bike))):
        d = 1 if rng.random() < 0.5 else -1
        nominal = hc * rng.uniform(*BICYCLE_L)
        if layout["road"]:  # near the kerb
            y = min(y_road + rng.uniform(nominal * 0.1, nominal * 0.4), y_end - 1)
        else:
            y = ground_y()
        size = nominal * depth(y)
        v = d * rng.uniform(1.5, 3.5) * size / (0.17 * hc)
        objs.append({"class": "bicycle", "cls": BICYCLE, "parked": False, "v": v, "x0": start_x(v, 0.5 * size),
                     "y": float(y), "size": float(size), "dir": d, "color": random_colors(rng, 1)[0],
                     "phase0": rng.uniform(0, 2 * np.pi), "frame_col": random_colors(rng, 1)[0],
                     "skin": _hsv(rng, (0.03, 0.1), (0.25, 0.6), (0.35, 0.95))[0],
                     "pants": random_colors(rng, 1, val=(0.15, 0.6))[0], "camouflaged": False})
    return objs


def _draw_objects(img, lab, inst, objs, t):
    """Draw every object at time ``t`` (far to near); ``inst`` gets ``k + 1`` where object ``k`` is visible."""
    shape = lab.shape
    for k in sorted(range(len(objs)), key=lambda k: objs[k]["y"]):
        o = objs[k]
        x, y, size = o["x0"] + o["v"] * t, o["y"], o["size"]
        if o["cls"] == CAR:
            sp = _Sprite(shape, x - size / 2 - 1, y - size * 0.42 - 1, x + size / 2 + 1, y + 1)
            if not sp.empty:
                _draw_car(sp, x, y, size, o["dir"], o["color"], o["camouflaged"])
        elif o["cls"] == PERSON:
            sp = _Sprite(shape, x - size * 0.35, y - size * 1.02, x + size * 0.35, y + 1)
            if not sp.empty:
                _draw_person(sp, x, y, size, o["phase0"] + 0.9 * t * abs(o["v"]) * 0.17 * shape[0] / size, o["dir"],
                             o["color"], o["skin"], o["pants"])
        else:
            sp = _Sprite(shape, x - size * 0.6, y - size * 1.15, x + size * 0.6, y + 1)
            if not sp.empty:
                _draw_bicycle(sp, x, y, size, o["phase0"] + 0.6 * t, o["dir"], o["frame_col"], o["color"],
                              o["skin"], o["pants"])
        sp.paint(img, lab, inst, o["cls"], k)


def generate_clip(seed: int, split: str, index: int, frames: int = 8, size: Sequence[int] = (96, 128),
                  noise: float = 2.0, **_ignored) -> dict:
    """Render one clip (pure function of ``(seed, split, index)`` and the parameters).

    Returns ``{"images": uint8 (T, H, W, 3), "labels": uint8 (T, H, W), "instances": uint8 (T, H, W)
    (0 = scene, k = ``objects[k - 1]``; not written to disk), "cameras": float (T, 4)
    [x, y, w, h] canvas windows, "objects": [{"class", "parked", "camouflaged", "rgb", "xy": (T, 2) canvas positions}],
    "layout": dict (scene layout + ``camera`` pitch), "canvas_shape": (Hc, Wc)}``. Canvas -> frame:
    ``u = (x - cx) * W / cw``, ``v = (y - cy) * H / ch`` for window ``(cx, cy, cw, ch)``.
    """
    h, w = int(size[0]), int(size[1])
    if frames < 2:
        raise InvalidInputError(f"a clip needs at least 2 frames, got {frames}")
    rng = rng_for(seed, "toy_streets", split, index)
    hc, wc = int(round(h * 1.6)), int(round(w * 3.0))
    scene, scene_lab, layout = render_scene(rng, (hc, wc))
    # camera: pitch (vertical placement + window height), zoom, pan
    pitch = str(rng.choice(PITCHES, p=PITCH_P))
    layout["camera"] = pitch
    y_ground = layout["y_ground"]
    if pitch == "level":  # the window's bottom lies in the lower part of the ground
        ch0 = hc * rng.uniform(0.62, 0.85)
        bottom = rng.uniform(y_ground + 0.45 * (hc - y_ground), hc)
    elif pitch == "up":  # shorter window whose bottom lies above the road (or near the horizon)
        ch0 = hc * rng.uniform(0.42, 0.55)
        limit = layout["y_road"] - 2 if layout["road"] else y_ground + 0.2 * (hc - y_ground)
        bottom = rng.uniform(min(ch0 + 1, limit), limit)
    else:  # "down": a short window at the bottom of the canvas: ground, objects, the foot of facades
        ch0 = hc * rng.uniform(0.42, 0.55)
        bottom = rng.uniform(hc - 0.04 * hc, hc)
    zoom = np.exp(rng.uniform(np.log(0.9), np.log(1.12)))
    chs = ch0 * zoom ** (np.arange(frames) / (frames - 1))
    cws = chs * w / h
    cy_base = float(np.clip(bottom - chs.max(), 0, hc - chs.max()))
    pan = rng.uniform(3.0, 9.0) * (1 if rng.random() < 0.5 else -1)
    total = pan * (frames - 1)
    max_w = float(cws.max())
    x_lo = max(0.0, -total)
    x_hi = wc - max_w - max(0.0, total)
    if x_hi < x_lo:  # pan too long for the canvas: shorten it
        pan *= 0.5
        total = pan * (frames - 1)
        x_lo, x_hi = max(0.0, -total), max(max(0.0, -total), wc - max_w - max(0.0, total))
    cx0 = rng.uniform(x_lo, x_hi)
    drift = rng.uniform(-1.0, 1.0)
    cams = []
    for t in range(frames):
        cy = float(np.clip(cy_base + drift * t - (chs[t] - chs[-1]) / 2, 0, hc - chs[t]))
        cx = float(np.clip(cx0 + pan * t - (cws[t] - cws[0]) / 2, 0, wc - cws[t]))
        cams.append([cx, cy, float(cws[t]), float(chs[t])])
    cams = np.asarray(cams)
    objs = _plan_objects(rng, layout, (hc, wc), cams, frames)
    images = np.zeros((frames, h, w, 3), np.uint8)
    labels = np.zeros((frames, h, w), np.uint8)
    instances = np.zeros((frames, h, w), np.uint8)
    for t in range(frames):
        img, lab = scene.copy(), scene_lab.copy()
        inst = np.zeros(lab.shape, np.uint8)
        _draw_objects(img, lab, inst, objs, t)
        cx, cy, cw, ch = cams[t]
        s = w / cw
        m = np.array([[s, 0, -cx * s], [0, s, -cy * s]], np.float64)
        # minification: low-pass first (warpAffine has no INTER_AREA), then bilinear sampling
        src = cv2.GaussianBlur(img, (0, 0), 0.5 / s) if s < 0.95 else img
        fr = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        lb = cv2.warpAffine(lab, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
        if noise > 0:
            fr = fr + rng.normal(0, noise, fr.shape).astype(np.float32)
        images[t] = np.clip(fr + 0.5, 0, 255).astype(np.uint8)
        labels[t] = lb
        instances[t] = cv2.warpAffine(inst, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    tracks = [{"class": o["class"], "parked": o["parked"], "camouflaged": o.get("camouflaged", False),
               "rgb": [round(float(v), 1) for v in o["color"]], "size": round(float(o["size"]), 2),
               "xy": [[round(float(o["x0"] + o["v"] * t), 2), round(float(o["y"]), 2)] for t in range(frames)]}
              for o in objs]
    return {"images": images, "labels": labels, "instances": instances, "cameras": cams, "objects": tracks, "layout": layout,
            "canvas_shape": (hc, wc)}

# ------------------------------------------------------------------------------------------ measurability
def oracle_stride_prediction(label: np.ndarray, num_classes: int, stride: int = 8,
                             ignore_index: int = 255) -> np.ndarray:
    """What a *perfect* stride-``stride`` score map predicts: ``int64 (H, W)``.

    The score of class ``c`` in each ``stride x stride`` cell is the true fraction of the cell's
    labelled pixels that are ``c`` (cells at a ragged border are partial, as a padded network's
    would be); the ``ceil(H/s) x ceil(W/s)`` maps are upsampled bilinearly (half-pixel centres, as
    ``F.interpolate(..., align_corners=False)``) to ``(H, W)`` and the argmax is taken.
    """
    lab = np.asarray(label)
    if lab.ndim != 2:
        raise InvalidInputError(f"label must be (H, W), got shape {lab.shape}")
    s = int(stride)
    if s < 1:
        raise InvalidInputError(f"stride must be >= 1, got {stride}")
    h, w = lab.shape
    hs, ws = -(-h // s), -(-w // s)
    pad = np.full((hs * s, ws * s), ignore_index, np.int64)
    pad[:h, :w] = lab
    valid = (pad != ignore_index) & (pad >= 0) & (pad < num_classes)
    cells = np.where(valid, pad, num_classes).reshape(hs, s, ws, s).transpose(0, 2, 1, 3).reshape(hs, ws, s * s)
    counts = np.stack([(cells == c).sum(-1) for c in range(num_classes)], -1).astype(np.float32)
    frac = counts / np.maximum(counts.sum(-1, keepdims=True), 1.0)
    up = np.stack([cv2.resize(np.ascontiguousarray(frac[..., c]), (ws * s, hs * s), interpolation=cv2.INTER_LINEAR)
                   for c in range(num_classes)], -1)
    return up[:h, :w].argmax(-1)


def oracle_stride_iou(labels, num_classes: int = len(CLASSES), stride: int = 8, ignore_index: int = 255) -> np.ndarray:
    """Per-class IoU ``float64 (C,)`` of :func:`oracle_stride_prediction` over ``labels`` (an
    iterable of ``(H, W)`` maps or a ``(N, H, W)`` array; intersections and unions pooled over all
    of them). NaN for a class absent from both. The upper bound of any model whose class scores
    live on a stride-``stride`` grid and are bilinearly upsampled (no CRF)."""
    inter = np.zeros(num_classes, np.int64)
    union = np.zeros(num_classes, np.int64)
    for lab in labels:
        lab = np.asarray(lab)
        pred = oracle_stride_prediction(lab, num_classes, stride, ignore_index)
        ok = (lab != ignore_index) & (lab >= 0) & (lab < num_classes)
        t, p = lab[ok].astype(np.int64), pred[ok]
        cm = np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
        tp = np.diag(cm)
        inter += tp
        union += cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def instance_sizes(clip: dict) -> list[dict]:
    """Visible size of every object in every frame of a :func:`generate_clip` result.

    One dict per (frame, visible object): ``class``, ``frame``, ``w`` / ``h`` (bounding box of its
    visible pixels, frame px), ``area`` (px), ``thickness`` (diameter of the largest disc inside
    the visible mask, i.e. how wide it is where it is widest: a 1-px line gives 1) and ``cut``
    (True when it touches the frame border, i.e. may be cut off).
    """
    out = []
    for t, inst in enumerate(np.asarray(clip["instances"])):
        h, w = inst.shape
        for k in np.unique(inst):
            if k == 0:
                continue
            m = inst == k
            ys, xs = np.nonzero(m)
            dist = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 5)
            out.append({"class": clip["objects"][int(k) - 1]["class"], "frame": t,
                        "w": int(xs.max() - xs.min() + 1), "h": int(ys.max() - ys.min() + 1), "area": int(m.sum()),
                        "thickness": round(float(2 * dist.max() - 1), 2),
                        "cut": bool(xs.min() == 0 or ys.min() == 0 or xs.max() == w - 1 or ys.max() == h - 1)})
    return out


# ------------------------------------------------------------------------------------------ disk
def _params(size=(_DEF["height"], _DEF["width"]), frames=_DEF["frames"], n_train=_DEF["n_train"], n_val=_DEF["n_val"],
            n_test=_DEF["n_test"], seed=_DEF["seed"], jpeg_quality=92) -> dict:
    if isinstance(size, (int, np.integer)):
        raise InvalidInputError("ToyStreets size must be (H, W)")
    size = [int(size[0]), int(size[1])]
    if min(size) < 32:
        raise InvalidInputError(f"frame size must be at least 32x32, got {size}")
    if int(frames) < 2:
        raise InvalidInputError(f"frames must be >= 2, got {frames}")
    return {"size": size, "frames": int(frames), "splits": {"train": int(n_train), "val": int(n_val), "test": int(n_test)},
            "seed": int(seed), "jpeg_quality": int(jpeg_quality)}


def _work(args) -> tuple[str, dict, dict]:
    root, split, index, p = args
    cv2.setNumThreads(1)
    clip = f"{split}_{index:04d}"
    out = generate_clip(p["seed"], split, index, frames=p["frames"], size=p["size"])
    tags = {}
    for t in range(p["frames"]):
        write_image(Path(root) / "frames" / clip / f"{t:04d}.jpg", out["images"][t], quality=p["jpeg_quality"])
        write_label(Path(root) / "labels" / clip / f"{t:04d}.png", out["labels"][t], PALETTE)
        tags[f"{clip}/{t:04d}"] = [CLASSES[c] for c in tags_from_label(out["labels"][t], len(CLASSES))]
    meta = {"layout": out["layout"], "canvas_shape": list(out["canvas_shape"]),
            "cameras": [[round(float(v), 2) for v in c] for c in out["cameras"]], "objects": out["objects"]}
    return clip, tags, meta


def write_toy_streets(root: str | os.PathLike, params: dict, workers: int = 2) -> None:
    """Generate every split of ToyStreets into ``root`` (no manifest; see :func:`ensure_toy_streets`)."""

    root = Path(root)
    (root / "ImageSets").mkdir(parents=True, exist_ok=True)
    tasks = [(str(root), split, i, params) for split, n in params["splits"].items() for i in range(n)]
    tags, clips = {}, {}
    for clip, t, meta in run_pool(_work, tasks, workers if len(tasks) >= 4 else 1, min_tasks=16, start_method="fork", in_process_without_fork=True):
        tags.update(t)
        clips[clip] = meta
    for split, n in params["splits"].items():
        (root / "ImageSets" / f"{split}.txt").write_text("".join(f"{split}_{i:04d}\n" for i in range(n)), encoding="utf-8")
    (root / "tags.json").write_text(json.dumps(tags, indent=0, sort_keys=True), encoding="utf-8")
    (root / "clips.json").write_text(json.dumps(clips, sort_keys=True), encoding="utf-8")
    (root / "classes.json").write_text(json.dumps(toy_streets_info().to_json(), indent=1), encoding="utf-8")


def _files_ok(root: Path, p: dict) -> bool:
    for f in ("tags.json", "clips.json", "classes.json"):
        if not (root / f).is_file():
            return False
    for split, n in p["splits"].items():
        if not (root / "ImageSets" / f"{split}.txt").is_file():
            return False
        for i in range(n):
            clip = f"{split}_{i:04d}"
            for t in range(p["frames"]):
                if not (root / "frames" / clip / f"{t:04d}.jpg").is_file() or not (root / "labels" / clip / f"{t:04d}.png").is_file():
                    return False
    return True


def toy_streets_manifest(**params) -> dict:
    """The manifest dict that :func:`ensure_toy_streets` writes for these parameters."""
    return {"generator": "toy_streets", "version": GENERATOR_VERSION, "params": _params(**params)}


def ensure_toy_streets(root: str | os.PathLike = "data/toy/streets", *,
                       size: Sequence[int] = (_DEF["height"], _DEF["width"]), frames: int = _DEF["frames"],
                       n_train: int = _DEF["n_train"], n_val: int = _DEF["n_val"], n_test: int = _DEF["n_test"],
                       seed: int = _DEF["seed"],
                       jpeg_quality: int = 92, workers: int | None = None, height: int | None = None,
                       width: int | None = None) -> Path:
    """Generate ToyStreets under ``root`` unless an identical one (same manifest, all files) is there.

    ``size`` is the frame ``(H, W)`` (``height``/``width``, when given, override its parts); ``n_*``
    count clips of ``frames`` frames each. Returns the root.
    """
    size = (int(height if height is not None else size[0]), int(width if width is not None else size[1]))
    manifest = toy_streets_manifest(size=size, frames=frames, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed,
                                    jpeg_quality=jpeg_quality)
    p = manifest["params"]
    if workers is None:
        workers = min(2, num_threads_hint())
    return ensure_generated(root, manifest, lambda tmp: write_toy_streets(tmp, p, workers), lambda r: _files_ok(r, p))


def load_toy_streets(root: str | os.PathLike = "data/toy/streets", split: str = "train") -> tuple[DatasetInfo, list[Sample]]:
    """Index one split: ``(info, samples)`` ordered by clip then frame, with ``Sample.clip``,
    ``Sample.frame`` and ``Sample.tags`` (per-frame, background classes included) filled."""
    root = Path(root)
    info = toy_streets_info()
    if not root.is_dir() or not (root / "tags.json").is_file():
        raise dataset_layout_error("toy_streets", root, "not a generated ToyStreets folder (no tags.json)",
                                   TOY_STREETS_TREE, TOY_STREETS_SOURCE)
    list_path = root / "ImageSets" / f"{split}.txt"
    if not list_path.is_file():
        raise dataset_layout_error("toy_streets", root, f"no split list ImageSets/{split}.txt", TOY_STREETS_TREE,
                                   TOY_STREETS_SOURCE)
    tags = read_tags_json(root / "tags.json", info.classes)
    samples, missing = [], []
    for clip in read_list_file(list_path):
        fdir = safe_join(root / "frames", clip)
        ldir = safe_join(root / "labels", clip)
        frames = sorted(fdir.glob("*.jpg")) if fdir.is_dir() else []
        if not frames:
            missing.append(str(fdir))
            continue
        for f in frames:
            sid = f"{clip}/{f.stem}"
            lab = ldir / f"{f.stem}.png"
            if not lab.is_file():
                missing.append(str(lab))
                continue
            samples.append(Sample(id=sid, image=f, label=lab, tags=tags.get(sid), clip=clip, frame=int(f.stem)))
    if missing:
        raise dataset_layout_error("toy_streets", root, f"{len(missing)} missing file(s)/folder(s), e.g. {missing[:3]}",
                                   TOY_STREETS_TREE, TOY_STREETS_SOURCE)
    samples.sort(key=lambda s: (s.clip, s.frame))
    return info, samples


def read_clips_json(root: str | os.PathLike) -> dict:
    """``clips.json`` of a generated ToyStreets folder (``{}`` when absent)."""
    p = Path(root) / "clips.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def frame_pairs(samples: Sequence[Sample], max_gap: int | None = 1) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` of consecutive frames of the same clip (``samples[j]`` follows ``samples[i]``).

    Samples are grouped by ``clip`` and sorted by ``frame``; a pair is kept when the frame numbers
    differ by at most ``max_gap`` (``None``: any gap, e.g. CamVid's labelled frames every 30).
    Still images (``clip == ""``) never pair.
    """
    by_clip: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.clip:
            by_clip.setdefault(s.clip, []).append(i)
    pairs = []
    for idx in by_clip.values():
        idx.sort(key=lambda i: samples[i].frame)
        for a, b in zip(idx[:-1], idx[1:]):
            gap = samples[b].frame - samples[a].frame
            if gap > 0 and (max_gap is None or gap <= max_gap):
                pairs.append((a, b))
    return sorted(pairs)
