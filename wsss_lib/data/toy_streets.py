"""ToyStreets: procedurally generated street-scene video clips (Cityscapes/CamVid-like, paper 2 on a CPU).

Classes (index: name)::

    0 sky | 1 building | 2 vegetation | 3 road | 4 sidewalk      <- background (stuff) classes
    5 car | 6 person | 7 bicycle                                   <- foreground, moving on their own

No void class; every pixel has a class (255 is never written, but loaders accept it).
A "bicycle" is the bicycle *with its rider* (as CamVid's Bicyclist).

How a clip is made
------------------
* A scene canvas about 1.6x taller and 3x wider than a frame is drawn once per clip: sky (blue
  gradient with clouds, or overcast grey), a row of buildings of random heights/colours with
  window grids (sometimes with gaps to the sky; "tunnel" clips have no sky at all; "open" clips
  have no buildings but a tree line), trees (leafy crowns + trunks, labelled vegetation), a
  sidewalk band with tile joints (absent in some clips, a second band at the bottom in others)
  and a road with grain and lane dashes.
* Independently moving objects are drawn on the canvas per frame: cars on the road lanes
  (2-5 canvas px/frame, either direction; ~15 % parked), persons walking on the sidewalk
  (0.5-1.5 px/frame, swinging legs), bicycles near the kerb (1.5-3.5 px/frame). Depth order =
  foot position.
* A moving camera: each frame is a window of the canvas that pans (3-9 px/frame), drifts
  vertically and zooms (x0.9-1.12 over the clip), resampled to the frame size (bilinear image,
  nearest labels). The window's vertical placement varies per clip, so some clips see no road
  or no sky; panning makes trees, gaps, objects enter and leave, so tags vary per frame too.
* Texture/colour families overlap on purpose: building and sidewalk are both grey/beige (windows vs
  tile joints), overcast sky is grey too, ~30 % of cars have the road's colour and ~25 % of
  persons wear the building/sidewalk colours: for those, motion is the main cue.

On-disk layout::

    <root>/frames/{clip}/{frame:04d}.jpg       quality 92, H x W = 96 x 128 by default
    <root>/labels/{clip}/{frame:04d}.png       palette PNG, class indices 0..7
    <root>/ImageSets/{train,val,test}.txt      clip names, one per line
    <root>/tags.json       {"clip/0000": [class names present in that frame]}
    <root>/clips.json      per clip: layout flags, camera windows [x, y, w, h] per frame (canvas px),
                           object tracks [{"class", "parked", "camouflaged", "rgb" (body/clothes colour),
                           "xy": [[x, y] per frame]}] (canvas px)
    <root>/classes.json    DatasetInfo.to_json()
    <root>/manifest.json   generator parameters + version

Clip names are ``{split}_{index:04d}``; clip ``index`` of ``split`` is drawn from
``rng_for(seed, "toy_streets", split, index)`` alone.
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

GENERATOR_VERSION = 2
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
def _paint(img, lab, mask, fill, cls):
    img[mask] = fill[mask] if fill.ndim == 3 else fill
    lab[mask] = cls


def render_scene(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Static scene canvas: ``image float32 (Hc, Wc, 3)``, ``label uint8 (Hc, Wc)``, layout dict.

    The layout dict holds the flags (``tunnel``, ``open``, ``sidewalk``, ``lower_sidewalk``,
    ``trees``, ``overcast``), the ground line ``y_ground`` (top of the sidewalk), the road band
    ``y_road`` .. ``y_road_end`` and the road colour ``road_rgb``.
    """
    hc, wc = shape
    img = np.zeros((hc, wc, 3), np.float32)
    lab = np.zeros((hc, wc), np.uint8)
    ys, xs = np.mgrid[0:hc, 0:wc]
    kind = rng.choice(["street", "tunnel", "open"], p=[0.76, 0.1, 0.14])
    has_sidewalk = rng.random() < 0.75
    lower_sidewalk = has_sidewalk and rng.random() < 0.4
    has_trees = kind != "tunnel" and rng.random() < 0.6
    overcast = rng.random() < 0.35
    y_ground = int(hc * rng.uniform(0.52, 0.66))
    sw_h = int(hc * rng.uniform(0.07, 0.13)) if has_sidewalk else 0
    y_road = y_ground + sw_h
    y_road_end = hc - (int(hc * rng.uniform(0.06, 0.1)) if lower_sidewalk else 0)

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
        x = int(-rng.integers(0, 20))
        while x < wc:
            bw = int(wc * rng.uniform(0.09, 0.26))
            if rng.random() < 0.15:  # gap: sky visible down to the ground
                x += bw // 2
                continue
            top_y = int(hc * rng.uniform(0.04, 0.4)) if rng.random() < 0.8 else 0
            col = _greyish(rng)[0] if rng.random() < 0.75 else _hsv(rng, (0.0, 0.1), (0.35, 0.6), (0.4, 0.7))[0]
            win = _hsv(rng, (0.5, 0.7), (0.1, 0.4), (0.15, 0.45))[0] if rng.random() < 0.7 else col * 0.55
            region = (xs >= x) & (xs < x + bw) & (ys >= top_y) & (ys < y_ground)
            pat = texture_pattern("windows", (hc, wc), rng)
            fill = blend(pat, col, win) * (0.9 + 0.2 * smooth_noise(rng, (hc, wc), 20)[..., None])
            _paint(img, lab, region, fill, BUILDING)
            x += bw
    trees = []
    if kind == "open":  # tree line on the horizon instead of buildings
        line = (y_ground - hc * rng.uniform(0.08, 0.25) + 6 * smooth_noise(rng, (1, wc), 6)[0]).astype(np.float32)
        trees.append(("line", ys >= line[None, :]))
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
            trunk = (np.abs(xs - cx) < max(1.0, r * 0.1)) & (ys >= cy) & (ys < y_ground + sw_h * 0.6)
            trees.append(("tree", blobs | trunk, trunk))
    for t in trees:
        green = _hsv(rng, (0.17, 0.4) if rng.random() < 0.85 else (0.08, 0.17), (0.35, 0.8), (0.2, 0.6))[0]
        fill = blend(texture_pattern("leaves", (hc, wc), rng), green * 0.6, np.minimum(green * 1.35, 255))
        m = t[1] & (ys < y_ground) if t[0] == "line" else t[1]
        _paint(img, lab, m, fill, VEGETATION)
        if t[0] == "tree":
            img[t[2]] = _hsv(rng, (0.05, 0.1), (0.4, 0.6), (0.2, 0.35))[0]

    # sidewalk(s), road
    sw_col = _greyish(rng)[0]
    tiles = blend(texture_pattern("tiles", (hc, wc), rng), sw_col, sw_col * 0.7)
    if has_sidewalk:
        m = (ys >= y_ground) & (ys < y_road) & (lab != VEGETATION)
        _paint(img, lab, m, tiles, SIDEWALK)
    road = _road_color(rng)
    asphalt = blend(texture_pattern("grain", (hc, wc), rng), road * 0.85, np.minimum(road * 1.15, 255))
    _paint(img, lab, (ys >= y_road) & (ys < y_road_end), asphalt, ROAD)
    lane_y = (y_road + y_road_end) / 2
    dash = (np.abs(ys - lane_y) < 1.0) & (((xs + rng.integers(0, 30)) % 24) < 12)
    img[dash] = (235, 235, 225)  # markings are road
    if lower_sidewalk:
        _paint(img, lab, ys >= y_road_end, tiles, SIDEWALK)
    layout = {"kind": str(kind), "sidewalk": bool(has_sidewalk), "lower_sidewalk": bool(lower_sidewalk),
              "trees": bool(has_trees), "overcast": bool(overcast), "y_ground": int(y_ground), "y_road": int(y_road),
              "y_road_end": int(y_road_end), "road_rgb": [round(float(v), 1) for v in road],
              "sidewalk_rgb": [round(float(v), 1) for v in sw_col]}
    return img, lab, layout


# ------------------------------------------------------------------------------------------ objects
def _draw_car(img, lab, x, y_bottom, length, direction, color, camouflaged=False):
    """Side view of a car, bottom-centre at ``(x, y_bottom)``, facing ``direction`` (+1 right)."""
    h = length * 0.42
    body_top = y_bottom - h * 0.62
    x0, x1 = x - length / 2, x + length / 2
    body = np.array([[x0, y_bottom - h * 0.12], [x0, body_top], [x1, body_top], [x1, y_bottom - h * 0.12]])
    cab_l, cab_r = (x0 + length * 0.22, x1 - length * 0.12) if direction > 0 else (x0 + length * 0.12, x1 - length * 0.22)
    cabin = np.array([[cab_l, body_top], [cab_l + length * 0.12, y_bottom - h], [cab_r - length * 0.12, y_bottom - h],
                      [cab_r, body_top]])
    mask = np.zeros(lab.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(p * 16).astype(np.int32) for p in (body, cabin)], 1, cv2.LINE_8, 4)
    glass = np.zeros(lab.shape, np.uint8)
    inset = np.array([[cab_l + 2, body_top], [cab_l + length * 0.12 + 1, y_bottom - h + 2],
                      [cab_r - length * 0.12 - 1, y_bottom - h + 2], [cab_r - 2, body_top]])
    cv2.fillPoly(glass, [np.round(inset * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    wheels = np.zeros(lab.shape, np.uint8)
    wr = max(2, int(round(h * 0.2)))
    for wx in (x0 + length * 0.2, x1 - length * 0.2):
        cv2.circle(wheels, (int(round(wx)), int(round(y_bottom - wr))), wr, 1, -1)
    m = (mask | wheels).astype(bool)
    img[mask.astype(bool)] = color
    col = np.asarray(color, np.float32)
    # camouflaged cars: windows and tyres are darker shades of the body (road) colour, not black
    img[glass.astype(bool)] = col * 0.75 if camouflaged else (40, 50, 60)
    img[wheels.astype(bool)] = col * 0.6 if camouflaged else (20, 20, 20)
    lab[m] = CAR
    return m


def _draw_person(img, lab, x, y_bottom, height, phase, clothes, skin, pants):
    w = height * 0.26
    head_r = height * 0.09
    hip = y_bottom - height * 0.45
    sh = y_bottom - height * 0.8
    m = np.zeros(lab.shape, np.uint8)
    torso = np.zeros(lab.shape, np.uint8)
    cv2.ellipse(torso, (int(round(x)), int(round((hip + sh) / 2))), (max(1, int(w / 2)), max(2, int((hip - sh) / 2 + 1))),
                0, 0, 360, 1, -1)
    legs = np.zeros(lab.shape, np.uint8)
    swing = np.sin(phase) * height * 0.14
    th = max(1, int(round(height * 0.07)))
    for s in (swing, -swing):
        cv2.line(legs, (int(round(x)), int(round(hip))), (int(round(x + s)), int(round(y_bottom))), 1, th)
    head = np.zeros(lab.shape, np.uint8)
    cv2.circle(head, (int(round(x)), int(round(sh - head_r))), max(1, int(round(head_r))), 1, -1)
    m = (torso | legs | head).astype(bool)
    img[legs.astype(bool)] = pants
    img[torso.astype(bool)] = clothes
    img[head.astype(bool)] = skin
    lab[m] = PERSON
    return m


def _draw_bicycle(img, lab, x, y_bottom, size, phase, frame_col, clothes, skin):
    wr = size * 0.22
    m = np.zeros(lab.shape, np.uint8)
    th = max(1, int(round(size * 0.05)))
    c1 = (int(round(x - size * 0.32)), int(round(y_bottom - wr)))
    c2 = (int(round(x + size * 0.32)), int(round(y_bottom - wr)))
    for c in (c1, c2):
        cv2.circle(m, c, max(2, int(round(wr))), 1, th)
    seat = (int(round(x - size * 0.08)), int(round(y_bottom - wr * 2.3)))
    bars = np.zeros(lab.shape, np.uint8)
    for a, b in ((c1, seat), (seat, c2), (c1, (c2[0] - int(size * 0.1), int(round(y_bottom - wr * 2.1)))),
                 ((c2[0] - int(size * 0.1), int(round(y_bottom - wr * 2.1))), c2)):
        cv2.line(bars, a, b, 1, th)
    rider = np.zeros(lab.shape, np.uint8)
    hip_y = seat[1]
    sh = (seat[0] + int(size * 0.1), int(round(hip_y - size * 0.42)))
    cv2.line(rider, seat, sh, 1, max(2, int(round(size * 0.14))))
    cv2.circle(rider, (sh[0] + 1, int(round(sh[1] - size * 0.1))), max(1, int(round(size * 0.08))), 1, -1)
    knee = (seat[0] + int(size * 0.12 * (1 + np.sin(phase))), int(round(hip_y + size * 0.12)))
    cv2.line(rider, seat, knee, 1, th + 1)
    wheel_px = m.astype(bool)
    img[wheel_px] = (25, 25, 25)
    img[bars.astype(bool)] = frame_col
    img[rider.astype(bool)] = clothes
    m = wheel_px | bars.astype(bool) | rider.astype(bool)
    lab[m] = BICYCLE
    return m


def _plan_objects(rng, layout, shape, cam_x_range, frames) -> list[dict]:
    """Object tracks in canvas coordinates (positions per frame) and their appearance parameters."""
    hc, wc = shape
    lo, hi = cam_x_range
    objs = []
    y_road, y_end, y_ground = layout["y_road"], layout["y_road_end"], layout["y_ground"]
    road_rgb = np.asarray(layout["road_rgb"], np.float32)
    sw_rgb = np.asarray(layout["sidewalk_rgb"], np.float32)

    def start_x(v):
        # pick a start so that the object is inside the camera's x range at mid-clip
        mid = rng.uniform(lo, hi)
        return mid - v * (frames - 1) / 2

    for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
        parked = rng.random() < 0.15
        d = 1 if rng.random() < 0.5 else -1
        v = 0.0 if parked else d * rng.uniform(2.0, 5.0)
        length = hc * rng.uniform(0.2, 0.3)
        lane = y_road + 0.45 * length * 0.42 + 2 if parked else rng.uniform(y_road + length * 0.3, max(y_road + length * 0.31, y_end - 1))
        camo = rng.random() < 0.3
        if camo:  # road colour: only motion (and wheels/windows) gives it away
            color = np.clip(road_rgb * rng.uniform(0.9, 1.1) + rng.normal(0, 4, 3), 0, 255)
        else:
            color = random_colors(rng, 1, sat=(0.0, 0.9), val=(0.15, 0.95))[0]
        objs.append({"class": "car", "cls": CAR, "parked": bool(parked), "v": v, "x0": start_x(v), "y": float(lane),
                     "size": float(length), "dir": d, "color": color, "camouflaged": bool(camo)})
    for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):
        d = 1 if rng.random() < 0.5 else -1
        v = d * rng.uniform(0.5, 1.5)
        height = hc * rng.uniform(0.14, 0.2)
        if layout["sidewalk"]:
            y = rng.uniform(y_ground + 2, layout["y_road"])
        else:
            y = y_road + rng.uniform(1, 4)
        camo = rng.random() < 0.25
        clothes = np.clip(sw_rgb * rng.uniform(0.85, 1.1), 0, 255) if camo else random_colors(rng, 1)[0]
        objs.append({"class": "person", "cls": PERSON, "parked": False, "v": v, "x0": start_x(v), "y": float(y),
                     "size": float(height), "dir": d, "color": clothes, "phase0": rng.uniform(0, 2 * np.pi),
                     "camouflaged": bool(camo),
                     "skin": _hsv(rng, (0.03, 0.1), (0.25, 0.6), (0.35, 0.95))[0],
                     "pants": random_colors(rng, 1, val=(0.15, 0.6))[0]})
    for _ in range(int(rng.choice([0, 0, 1, 1, 2]))):
        d = 1 if rng.random() < 0.5 else -1
        v = d * rng.uniform(1.5, 3.5)
        size = hc * rng.uniform(0.14, 0.2)
        y = y_road + rng.uniform(size * 0.1, size * 0.4)
        objs.append({"class": "bicycle", "cls": BICYCLE, "parked": False, "v": v, "x0": start_x(v), "y": float(min(y, y_end - 1)),
                     "size": float(size), "dir": d, "color": random_colors(rng, 1)[0],
                     "phase0": rng.uniform(0, 2 * np.pi), "frame_col": random_colors(rng, 1)[0],
                     "skin": _hsv(rng, (0.03, 0.1), (0.25, 0.6), (0.35, 0.95))[0]})
    return objs


def _draw_objects(img, lab, inst, objs, t):
    """Draw every object at time ``t`` (far to near); ``inst`` gets ``k + 1`` where object ``k`` is visible."""
    for k in sorted(range(len(objs)), key=lambda k: objs[k]["y"]):
        o = objs[k]
        x = o["x0"] + o["v"] * t
        if o["cls"] == CAR:
            m = _draw_car(img, lab, x, o["y"], o["size"], o["dir"], o["color"], o["camouflaged"])
        elif o["cls"] == PERSON:
            m = _draw_person(img, lab, x, o["y"], o["size"], o["phase0"] + 0.9 * t * abs(o["v"]), o["color"],
                             o["skin"], o["pants"])
        else:
            m = _draw_bicycle(img, lab, x, o["y"], o["size"], o["phase0"] + 0.6 * t, o["frame_col"], o["color"],
                              o["skin"])
        inst[m] = k + 1


def generate_clip(seed: int, split: str, index: int, frames: int = 8, size: Sequence[int] = (96, 128),
                  noise: float = 2.0, **_ignored) -> dict:
    """Render one clip (pure function of ``(seed, split, index)`` and the parameters).

    Returns ``{"images": uint8 (T, H, W, 3), "labels": uint8 (T, H, W), "instances": uint8 (T, H, W)
    (0 = scene, k = ``objects[k - 1]``; not written to disk), "cameras": float (T, 4)
    [x, y, w, h] canvas windows, "objects": [{"class", "parked", "camouflaged", "rgb", "xy": (T, 2) canvas positions}],
    "layout": dict, "canvas_shape": (Hc, Wc)}``. Canvas -> frame: ``u = (x - cx) * W / cw``,
    ``v = (y - cy) * H / ch`` for window ``(cx, cy, cw, ch)``.
    """
    h, w = int(size[0]), int(size[1])
    if frames < 2:
        raise InvalidInputError(f"a clip needs at least 2 frames, got {frames}")
    rng = rng_for(seed, "toy_streets", split, index)
    hc, wc = int(round(h * 1.6)), int(round(w * 3.0))
    scene, scene_lab, layout = render_scene(rng, (hc, wc))
    # camera: vertical placement + window height, zoom, pan
    look_up = rng.random() < 0.15
    if look_up:  # shorter window whose bottom lies above the road: no road, sometimes no sidewalk
        ch0 = hc * rng.uniform(0.42, 0.55)
    else:
        ch0 = hc * rng.uniform(0.62, 0.85)
    zoom = np.exp(rng.uniform(np.log(0.9), np.log(1.12)))
    chs = ch0 * zoom ** (np.arange(frames) / (frames - 1))
    cws = chs * w / h
    if look_up:
        bottom = rng.uniform(min(ch0 + 1, layout["y_road"] - 2), layout["y_road"] - 2)
    else:  # usual: the window's bottom lies in the lower part of the ground
        bottom = rng.uniform(layout["y_ground"] + 0.45 * (hc - layout["y_ground"]), hc)
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
    objs = _plan_objects(rng, layout, (hc, wc), (cams[:, 0].min() + 0.15 * max_w, cams[:, 0].max() + 0.85 * max_w),
                         frames)
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
               "rgb": [round(float(v), 1) for v in o["color"]],
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
