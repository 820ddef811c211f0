"""Paper 1's seed study and its VAL choices (``wsss study paper1``).

Per seed (its own run folder, every step cached by :mod:`~wsss_lib.papers.paper1`), on TEST:

* fg/bg masks, each raw (threshold chosen on VAL) and after the same dense CRF:
  ``prior`` (fused activations), ``cam`` (Zhou et al.'s CAM: a second classifier with global
  average pooling + one linear layer on the last stage, :func:`~wsss_lib.papers.paper1.get_cam_classifier`),
  ``cam_head`` (the class maps of our default classifier head: hidden 1x1 layer + LSE pooling, so
  not Zhou's CAM), ``lowlevel`` (training-free edge/texture energy of the image, kind, scale and
  threshold chosen on VAL), ``floor`` (all foreground);
* segmentation nets ``prior``, ``tags``, ``full``, ``checkmask``, raw and with the CRF.

:func:`choose_paper1` makes the schedule and CRF choices on VAL (seed 0) and writes them to
``<out>/choices.json``; the presets hold the chosen values. :func:`fusion_study` sweeps the prior's layer
fusion on VAL over every seed's classifier (a diagnostic of the preset's fusion; TEST not scored).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..core.config import preset
from ..core.errors import InvalidInputError
from ..core.io import atomic_write_bytes, to_jsonable
from ..core.metrics import per_image_confusion
from ..core.stats import seed_mious
from ..ops.checkmask import simulate_checkmask
from ..ops.masks import (choose_threshold, evaluate_masks, extract_variants, floor_mask, lowlevel_objectness,
                         refine_masks)
from . import paper1 as P
from .common import chosen_point, climb_steps_grid, grid_tag
from .study import Comparison, run_study, stack

# the low-level baseline's VAL grid [ours]: (kind, Gaussian scale in px)
LOWLEVEL_GRID = [(kind, sigma) for kind in ("gradient", "variance") for sigma in (2.0, 4.0, 8.0)]

MASK_METHODS = ("prior", "cam", "cam_head", "lowlevel")
# the presets the mask comparisons depend on (scores made under others are rescored); the seg nets add "seg"
MASK_SECTIONS = ("classifier", "cam_classifier", "masks", "crf")

# the issue's targets (ToyObjects test, 5 seeds): mean must reach `target`, the interval's low end `need_ci_above`
COMPARISONS = [
    Comparison("prior - CAM, masks raw", "mask/prior", "mask/cam", classes=(1,), target=0.10, need_ci_above=0.0),
    Comparison("prior - CAM, masks + CRF", "mask/prior+crf", "mask/cam+crf", classes=(1,), target=0.10,
               need_ci_above=0.0),
    Comparison("prior - CAM of our head (LSE + hidden), raw", "mask/prior", "mask/cam_head", classes=(1,)),
    Comparison("prior - CAM of our head (LSE + hidden), + CRF", "mask/prior+crf", "mask/cam_head+crf", classes=(1,)),
    Comparison("prior - low-level cues, raw", "mask/prior", "mask/lowlevel", classes=(1,), target=0.05,
               need_ci_above=0.0),
    Comparison("prior - low-level cues, + CRF", "mask/prior+crf", "mask/lowlevel+crf", classes=(1,), target=0.05,
               need_ci_above=0.0),
    Comparison("CRF gain of the prior mask", "mask/prior+crf", "mask/prior", classes=(1,)),
    Comparison("prior - floor (all foreground), raw", "mask/prior", "mask/floor", classes=(1,)),
    Comparison("seg: prior - tags, raw", "seg/prior", "seg/tags", target=0.10, need_ci_above=0.0),
    Comparison("seg: prior - tags, + CRF", "seg/prior+crf", "seg/tags+crf", target=0.10, need_ci_above=0.0),
    Comparison("seg: prior / full, raw", "seg/prior", "seg/full", kind="ratio", target=0.70),
    Comparison("seg: prior / full, + CRF", "seg/prior+crf", "seg/full+crf", kind="ratio", target=0.70),
    Comparison("seg: check-mask - prior, raw", "seg/checkmask", "seg/prior", target=0.02, need_ci_above=0.0),
    Comparison("seg: check-mask - prior, + CRF", "seg/checkmask+crf", "seg/prior+crf", target=0.02,
               need_ci_above=0.0),
]
MEANS = [(f"seg {k}{crf}", f"seg/{k}{crf}", None) for k in P.SEG_KINDS for crf in ("", "+crf")] + \
        [(f"mask {m}{crf} (fg IoU)", f"mask/{m}{crf}", (1,)) for m in MASK_METHODS for crf in ("", "+crf")]


def fg_target(labels: torch.Tensor) -> torch.Tensor:
    """Class labels ``(N, H, W)`` -> fg/bg labels (1 = any foreground class, 255 kept)."""
    lab = labels.long()
    return torch.where(lab == 255, lab, (lab != 0).long())


def mask_confusion(mask, labels: torch.Tensor) -> np.ndarray:
    """Per-image 2x2 confusion ``(N, 2, 2)`` of a fg/bg ``mask`` ``(N, H, W)`` against class labels."""
    return per_image_confusion(fg_target(labels), torch.as_tensor(np.asarray(mask)).long(), 2)


def lowlevel_maps(ctx, split: str, kind: str, sigma: float) -> torch.Tensor:
    """The training-free low-level baseline's maps ``(N, H, W)`` in [0, 1] for ``split``."""
    ds = P.load_split(ctx, split)
    return torch.cat([lowlevel_objectness(ds.images[i:i + 256].float().div(255.0), sigma=sigma, kind=kind)
                      for i in range(0, len(ds), 256)])


def choose_lowlevel(ctx) -> dict:
    """Kind, scale and threshold of the low-level baseline with the best mask IoU on VAL."""
    vl = P.load_split(ctx, "val").labels.long()
    grid = preset("masks", ctx.quick)["thresholds"]
    best = None
    for kind, sigma in LOWLEVEL_GRID:
        th, scores = choose_threshold(lowlevel_maps(ctx, "val", kind, sigma), vl, grid)
        if best is None or scores[th] > best["val_iou"]:
            best = {"kind": kind, "sigma": sigma, "threshold": th, "val_iou": scores[th]}
    return best


def run_paper1_seed(ctx, kinds: Sequence[str] = P.SEG_KINDS, progress: bool = False) -> dict:
    """Score every compared method of paper 1 for the seed of ``ctx`` on TEST (all choices on VAL).

    Returns ``{"conf": {"mask/<m>[+crf]": (N, 2, 2), "seg/<kind>[+crf]": (N, C, C)}, "meta": {...}}``."""
    clf, _ = P.get_tag_classifier(ctx, progress=progress)
    mp = P.mask_pipeline(ctx, clf, progress=progress)
    test = P.load_split(ctx, "test")
    tl = test.labels.long()
    th = dict(mp["thresholds"])
    conf = {"mask/prior": mask_confusion(mp["maps"]["test"]["fused"] >= th["fused"], tl),
            "mask/prior+crf": mask_confusion(mp["crf"]["test"] >= 0.5, tl),
            "mask/floor": mask_confusion(floor_mask(tl.shape), tl)}

    def add(name: str, test_map: torch.Tensor, threshold: float):
        conf[f"mask/{name}"] = mask_confusion(test_map >= threshold, tl)
        q = P.refine_split(ctx, "test", test_map, threshold)
        conf[f"mask/{name}+crf"] = mask_confusion(q >= 0.5, tl)

    add("cam_head", mp["maps"]["test"]["cam"], th["cam"])
    cam = P.cam_baseline(ctx, progress=progress)  # Zhou et al.'s CAM (GAP + linear classifier)
    th["cam_gap"] = cam["threshold"]
    add("cam", cam["maps"]["test"], th["cam_gap"])
    low = choose_lowlevel(ctx)
    add("lowlevel", lowlevel_maps(ctx, "test", low["kind"], low["sigma"]), low["threshold"])
    meta = {"thresholds": th, "lowlevel": low, "seg": {}}
    for kind in kinds:
        model, info = P.seg_run(ctx, kind, clf, progress=progress)
        ev = P.evaluate_segnet(ctx, model, "test", crf=True, return_predictions=True)
        c = test.info.num_classes
        conf[f"seg/{kind}"] = per_image_confusion(tl, ev["pred"], c)
        conf[f"seg/{kind}+crf"] = per_image_confusion(tl, ev["pred_crf"], c)
        meta["seg"][kind] = {"steps": info["config"]["steps"], **info["checkmask"]}
    return {"conf": conf, "meta": meta}


def paper1_study(out, seeds: Sequence[int] = (0, 1, 2, 3, 4), quick: bool = False, device="auto", data_root=None,
                 dataset: str = "toy_objects", kinds: Sequence[str] = P.SEG_KINDS, progress: bool = True,
                 n_resamples: int = 2000, masks_only: bool = False) -> dict:
    """Run :func:`run_paper1_seed` for every seed (resumable) and write ``<out>/study.{json,md}``.

    ``masks_only``: only the fg/bg mask comparisons (classifiers and masks, no segmentation net: minutes
    per seed instead of the seg nets' tens of minutes), into ``<out>/mask_study.{json,md}``; the seed
    folders, and so the classifiers and masks, are shared with the whole study."""
    if masks_only:
        kinds = ()
    def scored(method: str) -> bool:  # "mask/<m>[+crf]" always, "seg/<kind>[+crf]" for the kinds trained
        part, name = method.split("/")
        return part == "mask" or name.split("+")[0] in kinds

    def rows(results):
        return [c for c in COMPARISONS if scored(c.a) and scored(c.b)], [m for m in MEANS if scored(m[1])]

    return run_study(out, seeds, lambda ctx: run_paper1_seed(ctx, kinds, progress=progress), rows,
                     ("Paper 1, fg/bg masks only, on " if masks_only else "Paper 1 on ") + dataset, quick=quick,
                     device=device, data_root=data_root, dataset=dataset, progress=progress, n_resamples=n_resamples,
                     requires=[f"seg/{k}" for k in kinds], sections=MASK_SECTIONS + (() if masks_only else ("seg",)),
                     **({"filename": "mask_scores.pt", "stem": "mask_study"} if masks_only else {}))


# ----------------------------------------------------------------------------- the prior's fusion on VAL

# the fusion grid [ours]: layer sets x channel aggregate (the other options of the "masks" preset kept); a
# VAL-only sweep of the choice the preset holds (conv3 + conv4 + conv5, channel mean), on every seed's classifier
FUSION_LAYERS = (("conv3", "conv4", "conv5"), ("conv4", "conv5"), ("conv3", "conv4"), ("conv2", "conv3", "conv4", "conv5"))
FUSION_AGGREGATES = ("mean", "l2", "max")


def fusion_name(layers: Sequence[str], aggregate: str) -> str:
    """Scored-method name of one fusion variant, e.g. ``val/fusion/conv4+conv5/mean``."""
    return f"val/fusion/{'+'.join(layers)}/{aggregate}"


def fusion_grid(ctx) -> dict[str, dict]:
    """``{method name: fuse_activations keywords}``: :data:`FUSION_LAYERS` x :data:`FUSION_AGGREGATES`
    plus the preset's own fusion (always in, so the sweep compares against what the study uses)."""
    m = P.mask_config(ctx)
    keep = {"normalize": m["normalize"], "align": m["align"], "normalize_each": m["normalize_each"]}
    grid = {fusion_name(L, a): {"layers": list(L), "aggregate": a, "weights": None, **keep}
            for L in FUSION_LAYERS for a in FUSION_AGGREGATES}
    grid[fusion_name(m["layers"], m["aggregate"])] = {"layers": list(m["layers"]), "aggregate": m["aggregate"],
                                                      "weights": m["weights"], **keep}
    return grid


def run_fusion_seed(ctx, progress: bool = False) -> dict:
    """VAL mask confusions ``(N, 2, 2)`` of every fusion variant (:func:`fusion_grid`) of the seed's tag
    classifier, raw, each at its own threshold chosen on VAL (so every variant, and the low-level baseline
    ``val/lowlevel`` beside them, gets the same optimistic choice); TEST is not touched. The maps are
    rounded to float16 as :func:`~wsss_lib.papers.paper1.compute_masks` caches them, so the preset's
    variant scores exactly what the study's prior scores on VAL."""
    clf, _ = P.get_tag_classifier(ctx, progress=progress)
    val = P.load_split(ctx, "val")
    vl = val.labels.long()
    thresholds = P.mask_config(ctx)["thresholds"]
    maps = extract_variants(clf, val.images.float().div(255.0), fusion_grid(ctx), device=ctx.device)
    conf, th = {}, {}
    for name, m in maps.items():
        m = m.half().float()
        th[name] = choose_threshold(m, vl, thresholds)[0]
        conf[name] = mask_confusion(m >= th[name], vl)
    low = choose_lowlevel(ctx)
    conf["val/lowlevel"] = mask_confusion(lowlevel_maps(ctx, "val", low["kind"], low["sigma"]) >= low["threshold"], vl)
    return {"conf": conf, "meta": {"thresholds": th, "lowlevel": low}}


def fusion_study(out, seeds: Sequence[int] = (0, 1, 2, 3, 4), quick: bool = False, device="auto", data_root=None,
                 dataset: str = "toy_objects", progress: bool = True, n_resamples: int = 2000) -> dict:
    """The prior's fusion on VAL over seeds (sharing the seed folders, so the classifiers, of
    :func:`paper1_study`): ``<out>/fusion_study.{json,md}``, each variant's VAL fg IoU (raw) against the
    preset's fusion, and the preset's against the low-level baseline, with 95 % intervals. A diagnostic of
    a VAL choice: nothing here is scored on TEST."""
    def rows(results):
        s = min(results)
        grid, own = results[s]["meta"]["grid"], results[s]["meta"]["preset"]
        comps = [Comparison(f"VAL: {name[len('val/fusion/'):]} - preset ({own[len('val/fusion/'):]})", name, own,
                            classes=(1,)) for name in grid if name != own]
        comps.append(Comparison("VAL: preset fusion - low-level cues", own, "val/lowlevel", classes=(1,)))
        means = [(f"VAL fg IoU: {name[len('val/fusion/'):]}", name, (1,)) for name in grid]
        return comps, means + [("VAL fg IoU: low-level cues", "val/lowlevel", (1,))]

    def score(ctx):
        res = run_fusion_seed(ctx, progress=progress)
        m = P.mask_config(ctx)
        res["meta"].update(grid=list(fusion_grid(ctx)), preset=fusion_name(m["layers"], m["aggregate"]))
        return res

    title = ("Paper 1: the prior's layer fusion on VAL (fg IoU of the raw masks; each variant's threshold chosen "
             "on the same VAL images; a diagnostic of a VAL choice, TEST not scored)")
    return run_study(out, seeds, score, rows, title, quick=quick, device=device, data_root=data_root,
                     dataset=dataset, progress=progress, n_resamples=n_resamples, filename="fusion_scores.pt",
                     stem="fusion_study", sections=("classifier", "masks"))


# ----------------------------------------------------------------------------- check-mask sweep

# (candidate masks, tau, annotator noise) cells [ours]: the CRF'd masks over tau and a noisy annotator;
# weaker candidates (no CRF; the paper's conv4+conv5) where a check has more to remove
SWEEP = [("crf", 0.3, 0.0), ("crf", 0.5, 0.0), ("crf", 0.7, 0.0), ("crf", 0.5, 0.2),
         ("raw", 0.5, 0.0), ("raw", 0.7, 0.0), ("paper_layers", 0.5, 0.0), ("paper_layers", 0.7, 0.0)]


def candidate_masks(ctx, classifier, quality: str) -> torch.Tensor:
    """Binary train masks ``(N, H, W)`` float of a quality: "crf" (the default training masks),
    "raw" (fused maps thresholded on VAL, no CRF), "paper_layers" (conv4 + conv5 fused, CRF)."""
    if quality == "crf":
        return P.train_masks(ctx, classifier)
    if quality == "raw":
        mp = P.mask_pipeline(ctx, classifier)
        return (mp["maps"]["train"]["fused"] >= mp["thresholds"]["fused"]).float()
    if quality == "paper_layers":
        maps = {s: P.compute_masks(ctx, classifier, s, layers=["conv4", "conv5"]) for s in ("val", "train")}
        th = P.choose_thresholds(ctx, maps["val"])["fused"]
        return torch.from_numpy(P.refine_split(ctx, "train", maps["train"]["fused"], th) >= 0.5).float()
    raise InvalidInputError(f"unknown mask quality {quality!r}; use crf, raw or paper_layers")


def sweep_name(quality: str, tau: float, noise: float) -> str:
    return f"cm/{quality}/tau{tau:g}_p{noise:g}"


def run_checkmask_seed(ctx, sweep=None, steps: int | None = None, progress: bool = False) -> dict:
    """Check-mask against the prior trained on the SAME candidate masks, for every sweep cell, on TEST
    and on VAL (``val/`` + the name): ``{"conf": {"cm/<quality>/prior": ..., "cm/<quality>/tau<t>_p<p>": ...,
    "val/cm/...": ...}, "meta": {cell: accept rate}}``.
    Rejected images keep the tag term (the "seg" preset's ``rejected``). ``steps``: every net of the sweep
    (both arms) trains this many steps instead of the prior's VAL-chosen ones (None), into checkpoints
    named ``..._steps<n>`` -- a cheaper sweep, paired like for like, but not at the chosen schedule."""
    sweep = SWEEP if sweep is None else sweep
    chosen, lr = P.mode_steps(ctx, "prior"), P.mode_lr(ctx, "prior")
    steps = chosen if steps is None else int(steps)
    sfx = "" if steps == chosen else f"_steps{steps}"
    clf, _ = P.get_tag_classifier(ctx, progress=progress)
    train = P.load_split(ctx, "train")
    labels = {split: P.load_split(ctx, split).labels.long() for split in ("test", "val")}
    c = train.info.num_classes
    conf, meta = {}, {}

    def score(name: str, model):  # TEST as <name>; VAL (where a regime is chosen) as val/<name>
        for split, prefix in (("test", ""), ("val", "val/")):
            pred = P.evaluate_segnet(ctx, model, split, crf=False, return_predictions=True)["pred"]
            conf[prefix + name] = per_image_confusion(labels[split], pred, c)

    for quality in dict.fromkeys(q for q, _, _ in sweep):
        masks = candidate_masks(ctx, clf, quality)
        model, _ = (P.seg_run(ctx, "prior", clf, progress=progress) if quality == "crf" and not sfx else
                    P.get_segnet(ctx, f"prior_{quality}{sfx}", "prior", clf, masks=masks, progress=progress,
                                 steps=steps, lr=lr))
        score(f"cm/{quality}/prior", model)
        for q, tau, noise in sweep:
            if q != quality:
                continue
            sim = simulate_checkmask(masks, train.labels.long(), tau=tau, noise=noise, seed=ctx.seed)
            acc = torch.from_numpy(sim["accepted"].astype(np.float32))
            model, _ = P.get_segnet(ctx, f"checkmask_{quality}_tau{tau:g}_p{noise:g}{sfx}", "prior", clf, masks=masks,
                                    accepted=acc, progress=progress, steps=steps, lr=lr)
            score(sweep_name(quality, tau, noise), model)
            meta[sweep_name(quality, tau, noise)] = {"accept_rate": sim["accept_rate"],
                                                     "mask_iou": evaluate_masks(masks >= 0.5, train.labels.long())["iou"]}
    meta["steps"] = steps
    return {"conf": conf, "meta": meta}


def checkmask_study(out, seeds: Sequence[int] = (0, 1, 2), quick: bool = False, device="auto", data_root=None,
                    dataset: str = "toy_objects", sweep=None, steps: int | None = None, progress: bool = True,
                    n_resamples: int = 2000) -> dict:
    """The check-mask sweep over seeds (sharing the seed folders of :func:`paper1_study`):
    ``<out>/checkmask_study.{json,md}``, each cell's gain over the prior on the same masks. ``steps``
    (:func:`run_checkmask_seed`): a shorter schedule for every net of the sweep, into
    ``<out>/checkmask_study_steps<n>.{json,md}`` (its own scores files, never mixed with the default's)."""
    sweep = SWEEP if sweep is None else sweep
    sfx = "" if steps is None else f"_steps{int(steps)}"

    def label(cell) -> str:
        return f"{cell[0]} masks, tau {cell[1]:g}, noise {cell[2]:g}"

    def rows(results):
        best = checkmask_val_choice(results, sweep)["chosen"]
        chosen = Comparison(f"chosen on VAL ({label(best)}): check-mask - prior", sweep_name(*best),
                            f"cm/{best[0]}/prior", target=0.02, need_ci_above=0.0)
        test = [Comparison(f"check-mask - prior: {label(cell)}", sweep_name(*cell), f"cm/{cell[0]}/prior")
                for cell in sweep]
        val = [Comparison(f"VAL: check-mask - prior: {label(cell)}", "val/" + sweep_name(*cell),
                          f"val/cm/{cell[0]}/prior") for cell in sweep]
        return [chosen, *test, *val], []

    title = ("Paper 1: where does check-mask help? (mIoU, no CRF" + (f"; every net {int(steps)} steps" if sfx else "")
             + "; the regime with the best mean VAL gain is the targeted row, the other TEST rows describe the sweep, "
               "the VAL rows are the same nets on the VAL images)")
    return run_study(out, seeds, lambda ctx: run_checkmask_seed(ctx, sweep, steps, progress=progress), rows,
                     title, quick=quick, device=device, data_root=data_root, dataset=dataset, progress=progress,
                     n_resamples=n_resamples, filename=f"checkmask_scores{sfx}.pt", stem=f"checkmask_study{sfx}",
                     sections=("classifier", "masks", "crf", "seg"),
                     requires=["val/" + sweep_name(*cell) for cell in sweep])


def checkmask_val_choice(results: dict, sweep=None) -> dict:
    """The sweep cell ``(quality, tau, noise)`` whose check-mask net gains most over the prior on the same
    masks in mean VAL mIoU over seeds (``results``: :func:`run_checkmask_seed`'s scores per seed):
    ``{"chosen": cell, "val_gain": {cell: gain}}``. TEST is then scored once, for that cell."""
    sweep = SWEEP if sweep is None else sweep
    gain = {cell: float(np.mean(seed_mious(stack(results, "val/" + sweep_name(*cell)))
                                - seed_mious(stack(results, f"val/cm/{cell[0]}/prior")))) for cell in sweep}
    return {"chosen": max(gain, key=gain.get), "val_gain": gain}


# ----------------------------------------------------------------------------- choices on VAL

CRF_GRID = [{"bilateral_sxy": sxy, "bilateral_srgb": srgb, "bilateral_compat": compat}
            for sxy in (20.0, 45.0, 80.0) for srgb in (4.0, 7.0, 13.0) for compat in (3.0, 6.0, 10.0)]
STEPS_GRID = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 76800)
LR_GRID = (0.001, 0.003)
CAM_STEPS_GRID = (300, 600, 1200, 2400, 4800)
CHOOSE_MODES = ("prior", "tags", "full")  # the seg nets whose steps are chosen on VAL (check-mask trains like prior)


def grid_name(mode: str, steps: int, lr: float, base_lr: float, preset_steps: int | None = None) -> str:
    """Checkpoint name of one point of the steps x lr grid: ``<mode>_steps<n>`` at the preset's lr,
    ``<mode>_lr<lr>_steps<n>`` at another; with ``preset_steps``, the preset's own point (its steps at its
    lr) keeps the plain name the study loads (:func:`~wsss_lib.papers.common.grid_tag`), so it is not
    trained twice."""
    if lr != base_lr:
        return f"{mode}_lr{lr:g}_steps{steps}"
    return grid_tag(mode, steps, preset_steps) if preset_steps is not None else f"{mode}_steps{steps}"


def choose_cam_classifier(ctx, steps_grid: Sequence[int] | None = None, tolerance: float = 0.005,
                          progress: bool = True) -> dict:
    """Zhou's CAM classifier's steps on VAL, so the CAM baseline is not handicapped by our classifier's
    schedule: every point of ``steps_grid`` (checkpoint ``cam_classifier[_steps<n>]``) is trained and scored
    by the VAL IoU of its CAM masks (threshold chosen on VAL,
    :func:`~wsss_lib.papers.paper1.cam_baseline_threshold`, raw) -- the whole grid, not a climb: the curve
    is not monotone (seed 0: 300 > 600 < 1200) and a classifier is cheap -- then the fewest steps within
    ``tolerance`` of the best. Returns ``{"grid": [{"steps", "val_cam_iou", "threshold", "loss",
    "seconds"}], "chosen": n, "preset": the preset's steps, "tolerance"}``."""
    steps_grid = CAM_STEPS_GRID if steps_grid is None else steps_grid
    preset_steps = P.classifier_config(ctx, **P.cam_classifier_overrides(ctx))["steps"]
    rows = []

    def score(n, _):
        clf, info = P.get_cam_classifier(ctx, progress=progress, steps=n, name=grid_tag("cam_classifier", n, preset_steps))
        th, iou = P.cam_baseline_threshold(ctx, P.cam_baseline_maps(ctx, clf, "val"))
        loss = info["history"].get("loss") or [float("nan")]  # training loss: mean of the last tenth of the log
        rows.append({"steps": n, "val_cam_iou": iou, "threshold": th, "seconds": info["seconds"],
                     "loss": float(np.mean(loss[-max(1, len(loss) // 10):]))})
        return iou

    chosen = chosen_point({(int(n), None): score(int(n), None) for n in sorted(steps_grid)}, tolerance)[0]
    return {"grid": rows, "chosen": chosen, "preset": preset_steps, "tolerance": tolerance}


def choose_paper1(ctx, modes: Sequence[str] = CHOOSE_MODES, steps_grid: Sequence[int] | None = None,
                  lr_grid: Sequence[float] | None = None, crf_grid: Sequence[dict] | None = None,
                  present_grid: Sequence[float] = (0.0, 1.0), cam_steps_grid: Sequence[int] | None = None,
                  tolerance: float = 0.005, progress: bool = True) -> dict:
    """The VAL choices of paper 1 (seed of ``ctx``), written to ``<out>/choices.json``:

    * ``crf``: the pairwise setting (``crf_grid`` over the default :class:`~wsss_lib.ops.crf.CRFParams`) with the best
      VAL mask IoU of the prior's masks;
    * ``cam_classifier``: the steps of Zhou's CAM classifier (:func:`choose_cam_classifier`, ``cam_steps_grid``,
      VAL IoU of its CAM masks), so the CAM baseline is not handicapped by the prior's classifier schedule;
    * ``steps`` and ``lr``: per training mode, the grid ``steps_grid`` x ``lr_grid`` (each point a full
      poly schedule from the classifier) climbed by :func:`~wsss_lib.papers.common.climb_steps_grid` (an
      lr is dropped once it trails the best lr at a length; longer lengths only while VAL mIoU rises),
      then :func:`~wsss_lib.papers.common.chosen_point`: the fewest steps whose VAL mIoU (raw) is within
      ``tolerance`` of the mode's best, and among those the lr with the best VAL mIoU;
    * ``present_term``: the weight of the present-class tag term (``present_grid``) with the best VAL
      mIoU of the prior net at its chosen steps and lr, kept at 0 unless it helps (only when "prior" is
      in ``modes``).

    ``choices.json`` is rewritten after each grid point and part, so a grid
    stopped midway leaves what it measured.
    """
    steps_grid = STEPS_GRID if steps_grid is None else steps_grid
    lr_grid = LR_GRID if lr_grid is None else lr_grid
    crf_grid = CRF_GRID if crf_grid is None else crf_grid
    seg = preset("seg", ctx.quick)
    clf, _ = P.get_tag_classifier(ctx, progress=progress)
    val = P.load_split(ctx, "val")
    vl = val.labels.long()
    maps = P.compute_masks(ctx, clf, "val")
    th = P.choose_thresholds(ctx, {"fused": maps["fused"], "cam": maps["cam"]})["fused"]
    base = P.crf_params(ctx)
    crf_rows = []
    for kw in crf_grid:
        prm = base.replace(**kw)
        q = refine_masks(val.uint8_images(), maps["fused"], th, prm, workers=preset("crf", ctx.quick)["workers"],
                         device=ctx.device)
        crf_rows.append({**kw, "val_iou": evaluate_masks(q >= 0.5, vl)["iou"]})
    best_crf = max(crf_rows, key=lambda r: r["val_iou"])
    out = {"seed": ctx.seed, "quick": ctx.quick, "crf": {"grid": crf_rows, "best": best_crf,
                                                         "preset": {k: getattr(base, k) for k in crf_grid[0]}}}

    def write(part: dict) -> None:  # after every finished part: a long grid leaves what it measured
        out.update(part)
        atomic_write_bytes(Path(ctx.out) / "choices.json", json.dumps(to_jsonable(out), indent=2).encode())

    cam = choose_cam_classifier(ctx, cam_steps_grid, tolerance, progress=progress)
    write({"cam_classifier": cam})

    def point_name(mode: str, n: int, lr: float) -> str:
        # the prior trains without the present-class term here (the term is chosen on top, below): its
        # points are the preset's prior only while the preset's term is off
        own = P.mode_lr(ctx, mode) == float(seg["lr"]) and (mode != "prior" or float(seg["present_term"]) == 0.0)
        return grid_name(mode, n, float(lr), float(seg["lr"]), P.mode_steps(ctx, mode) if own else None)

    steps_rows, chosen, chosen_lr = [], {}, {}
    for mode in modes:
        def score(n, lr, mode=mode):
            name = point_name(mode, n, lr)
            model, info = P.seg_run(ctx, mode, clf, name=name, steps=n, lr=float(lr), progress=progress,
                                    **({"present_term": 0.0} if mode == "prior" else {}))
            v = P.evaluate_segnet(ctx, model, "val", crf=False)["miou"]
            steps_rows.append({"mode": mode, "steps": n, "lr": float(lr), "val_miou": v, "seconds": info["seconds"]})
            write({"steps": {"grid": steps_rows, "chosen": chosen, "lr": chosen_lr, "tolerance": tolerance}})
            return v

        curve = climb_steps_grid(steps_grid, score, [float(lr) for lr in lr_grid], tolerance)
        chosen[mode], chosen_lr[mode] = chosen_point(curve, tolerance)
        write({"steps": {"grid": steps_rows, "chosen": chosen, "lr": chosen_lr, "tolerance": tolerance}})
    # the present-class tag term [summary], on if it does not hurt on VAL (at the prior's chosen schedule)
    present_rows, present = [], seg["present_term"]
    if "prior" in chosen:
        steps, lr = chosen["prior"], chosen_lr["prior"]
        for w in present_grid:
            # weight 0 is the grid's own model at the chosen point (same config): loaded, not retrained; the
            # preset's weight at the preset's schedule is the study's "prior"
            if float(w) == 0.0:
                name = point_name("prior", steps, lr)
            elif float(w) == float(seg["present_term"]) and steps == P.mode_steps(ctx, "prior") and lr == P.mode_lr(ctx, "prior"):
                name = "prior"
            else:
                name = f"prior_present{w:g}" + ("" if lr == float(seg["lr"]) else f"_lr{lr:g}")
            model, _ = P.seg_run(ctx, "prior", clf, name=name, steps=steps, lr=lr, present_term=float(w),
                                 progress=progress)
            present_rows.append({"present_term": float(w),
                                 "val_miou": P.evaluate_segnet(ctx, model, "val", crf=False)["miou"]})
        base_row = next(r for r in present_rows if r["present_term"] == 0.0)
        best_present = max(present_rows, key=lambda r: r["val_miou"])
        present = best_present["present_term"] if best_present["val_miou"] >= base_row["val_miou"] else 0.0
    write({"present_term": {"grid": present_rows, "chosen": present},
           "presets_agree": {"crf": all(getattr(base, k) == v for k, v in best_crf.items() if k != "val_iou"),
                             "steps": all(P.mode_steps(ctx, m) == v for m, v in chosen.items()),
                             "lr": all(P.mode_lr(ctx, m) == v for m, v in chosen_lr.items()),
                             "present_term": seg["present_term"] == present,
                             "cam_classifier_steps": cam["preset"] == cam["chosen"]}})
    return out

