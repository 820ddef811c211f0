"""Run sizes: the ONE place where quick (CI) and default sizes live.

Notebooks and the CLI call :func:`preset` with ``quick=True/False``; tests and ``wsss run
--quick`` use the quick sizes, so CI asserts on the same values a notebook records. Each section
belongs to one area of the library (``toy_objects``/``toy_streets`` data, ``classifier``,
``masks``, ``crf``, ``seg`` for paper 1; ``streets_classifier``, ``streets_fg_classifier``,
``heatmaps``, ``flow``, ``video_seg`` for paper 2). Override any key with ``preset(..., **overrides)``.
"""

from __future__ import annotations

import copy

from .errors import InvalidInputError

# section -> {"default": {...}, "quick": {...}}; "quick" entries override "default" ones.
PRESETS: dict[str, dict[str, dict]] = {
    "toy_objects": {
        # the dataset is the same in both modes (generated once, deterministic); quick uses subsets
        "default": {"n_train": 1200, "n_val": 200, "n_test": 200, "size": 96, "seed": 0},
        "quick": {},
    },
    "toy_streets": {
        # ToyStreets v2 (generator version 3): 30 val / 30 test clips (240 frames each) so per-class test
        # IoUs are not decided by a handful of objects; ~25 s to generate on 2 cores (data/README.md)
        "default": {"n_train": 200, "n_val": 30, "n_test": 30, "frames": 8, "height": 96, "width": 128, "seed": 0},
        "quick": {},
    },
    # ---- paper 1 (wsss_lib.papers.paper1, notebooks 01-04) ----
    "classifier": {
        # SmallVGG from scratch [ours]; the paper fine-tunes ImageNet VGG-16 [summary]
        "default": {"backbone": "small_vgg", "widths": [24, 48, 96, 128, 128], "depths": [1, 1, 2, 2, 2],
                    "pretrained": None, "pooling": "lse", "hidden": 128, "steps": 600, "batch_size": 32,
                    "lr": 0.001, "optimizer": "adam", "weight_decay": 0.0, "image_size": None},
        "quick": {"steps": 150},
    },
    "masks": {
        # channel means, summed, min-max to [0, 1] [summary]; alignment/normalisation [ours]. Layers: the
        # paper's are conv4 + conv5 [summary]; our default conv3 + conv4 + conv5 [ours] is the best
        # fusion on VAL for the from-scratch SmallVGG (seed 0, TEST mask IoU after the CRF 0.661 vs
        # 0.632); notebooks 02/03 record the paper's layers side by side (*_paper_layers)
        "default": {"layers": ["conv3", "conv4", "conv5"], "weights": None, "aggregate": "mean", "normalize": "minmax",
                    "align": "largest", "normalize_each": False, "cam_normalize": "max",
                    "thresholds": [round(0.05 * i, 2) for i in range(1, 20)]},
        "quick": {},
    },
    "crf": {
        # the defaults of ops.crf.CRFParams (VAL-chosen for 96 px toy images [ours]); CRFParams.deeplab() =
        # 80/13/10; eps = probability clip of the unary -log p; workers = CRF processes (None: all cores)
        "default": {"gauss_sxy": 3.0, "gauss_compat": 3.0, "bilateral_sxy": 45.0, "bilateral_srgb": 7.0,
                    "bilateral_compat": 6.0, "iterations": 10, "eps": 1e-5, "workers": None},
        "quick": {},
    },
    "seg": {
        # DeepLab-LargeFOV-style head scaled to 12x12 score maps [ours]; n_* = images used per split
        "default": {"n_train": None, "n_val": None, "n_test": None, "steps": 300, "batch_size": 16, "lr": 0.001,
                    "optimizer": "adam", "weight_decay": 0.0, "head_lr_mult": 1.0, "head": "largefov",
                    "head_width": 128, "dilation": 2, "dropout": 0.5, "pooling": "mean", "tag_pooling": "max",
                    "rejected": "tags", "compare_poolings": ["max", "lse"], "tau": 0.5,
                    # steps per training mode (prior / tags / full; check-mask = prior), chosen on VAL by
                    # `wsss study paper1 --choose` [ours] (seed 0, grid 300/600/1200: VAL mIoU still rising at
                    # 1200 for all three, full 0.454 / 0.561 / 0.639; the grid must grow); a mode missing here
                    # trains "steps"
                    "mode_steps": {"prior": 1200, "tags": 1200, "full": 1200},
                    # weight of the image-level tag term of present classes in the prior loss [summary: the
                    # term; ours: its weight], chosen on VAL by `wsss study paper1 --choose`
                    "present_term": 0.0},
        "quick": {"n_train": 400, "n_val": 100, "n_test": 100, "steps": 100, "compare_poolings": [], "mode_steps": {}},
    },
    # ---- paper 2 (wsss_lib.papers.paper2, notebooks 05-07) ----
    "streets_classifier": {
        # multi-label classifier over ALL classes (bg included) [summary]; SmallVGG from scratch whose
        # score maps come from conv3 (local receptive field, ~26 px) and LSE pooling [ours]
        "default": {"backbone": "small_vgg", "widths": [16, 32, 64, 64, 64], "depths": [1, 1, 2, 1, 1],
                    "last_stage": "conv3", "pooling": "lse", "lse_r": 5.0, "hidden": 64, "dropout": 0.0, "steps": 300, "batch_size": 16,
                    "lr": 0.002, "optimizer": "adamw", "weight_decay": 0.0001},
        "quick": {"steps": 120},
    },
    "streets_fg_classifier": {
        # the single-background baseline's classifier = paper 1's on street data: FOREGROUND tags only (paper 1
        # has no background tags) and its mask from conv4 + conv5 [summary]; keys here override
        # streets_classifier (same widths/depths/schedule [ours]) -- every stage kept, so conv4/conv5 exist
        "default": {"last_stage": "conv5"},
        "quick": {},
    },
    "heatmaps": {
        # per-class maps normalised per image to [0, 1], argmax among tagged classes [ours]
        "default": {"layer": "score", "normalisation": "max", "threshold": 0.2, "mode": "argmax", "crf": False,
                    "explore_layers": ["score", "conv2", "conv3"], "n_explore": 24},
        "quick": {"n_explore": 8},
    },
    "flow": {
        # OpenCV Farneback + (dx, dy, |f|) image, fixed scale, median (camera) motion removed [ours].
        # params: FlowParams overrides of the method (pyramid levels, window...), chosen on VAL by the
        # moving-pixel AUROC of the motion image (`wsss study paper2 --choose`, FLOW_GRID) [ours]
        "default": {"method": "farneback", "params": {"levels": 5, "winsize": 21, "poly_n": 7, "poly_sigma": 1.5}, "max_flow": None, "normalisation": "fixed",
                    "subtract": "median"},
        "quick": {},
    },
    "video_seg": {
        # the compared models share one architecture and schedule [ours]. output_stride 4 makes
        # 24x32 score maps: full supervision 0.514 -> 0.558 mIoU, weak models unchanged (their
        # heatmap supervision is the bottleneck), ~2x the time; 8 stays the default (issue 4 note).
        # full_loss: the upper bound's cross-entropy, "balanced" (median-frequency class weights, so rare
        # foreground classes count) or "plain" [ours]. kind_steps: steps per kind chosen on VAL by
        # `wsss study paper2 --choose` (a kind missing here trains its base kind's entry, else "steps";
        # the motion controls train exactly like two_stream) [ours]
        "default": {"backbone": "small_vgg", "widths": [16, 32, 64, 64, 64], "depths": [1, 1, 2, 1, 1],
                    "output_stride": 8, "head": "largefov", "head_width": 128,
                    "head_dilation": 4, "dropout": 0.3, "motion_widths": [8, 16, 32, 32, 32],
                    "motion_depths": [1, 1, 1, 1, 1], "fuse_stage": "conv3", "late_fusion": "sum", "fusion_kernel": 1,
                    "steps": 300, "batch_size": 16, "lr": 0.002, "optimizer": "adamw", "weight_decay": 0.0001,
                    "pooling": "mean", "absent_pooling": "max", "init_from_classifier": True,
                    "full_loss": "balanced", "kind_steps": {"appearance": 1200, "two_stream": 600, "single_bg": 300, "full": 1200},
                    # single_bg's mask: conv4 + conv5 of the streets_fg_classifier [summary], CRF [ours]
                    "fgbg_layers": ["conv4", "conv5"], "fgbg_crf": True,
                    "kinds": ["appearance", "two_stream", "single_bg", "full"],
                    # clips used per split (None = all); quick mode: the first clips of each split
                    "clips": {}},
        "quick": {"steps": 80, "kind_steps": {}, "clips": {"train": 60, "val": 10, "test": 10}},
    },
}


def preset(section: str, quick: bool = False, **overrides) -> dict:
    """Sizes for ``section`` in quick or default mode, with ``overrides`` applied.

    Unknown override keys raise :class:`InvalidInputError` (a typo must not be silently ignored).
    """
    if section not in PRESETS:
        raise InvalidInputError(f"unknown preset section {section!r}; known: {sorted(PRESETS)}")
    out = copy.deepcopy(PRESETS[section]["default"])
    if quick:
        out.update(copy.deepcopy(PRESETS[section].get("quick", {})))
    unknown = set(overrides) - set(out)
    if unknown:
        raise InvalidInputError(f"unknown {section} setting(s) {sorted(unknown)}; known: {sorted(out)}")
    out.update(overrides)
    return out
