"""Run sizes: the ONE place where quick (CI) and default sizes live.

Notebooks and the CLI call :func:`preset` with ``quick=True/False``; tests and ``wsss run
--quick`` use the quick sizes, so CI asserts on the same values a notebook records. Each section
belongs to one area of the library (``toy_objects``/``toy_streets`` data, ``classifier``,
``cam_classifier``, ``masks``, ``crf``, ``seg`` for paper 1; ``streets_classifier``, ``streets_fg_classifier``,
``heatmaps``, ``flow``, ``video_seg`` for paper 2; ``paper1_*`` / ``paper2_*``: the papers at their
scale on real data, read through ``preset(section, quick, profile="paper")``). Override any key with
``preset(..., **overrides)``.
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
    "toy_objects_textured": {
        # ToyObjects with on average 2 object-sized background blobs in the objects' own textures [ours] (issue
        # 14, item 7: is the prior more than texture energy?); its own folder toy/objects_textured; not the
        # default. Low-level cues fall to TEST fg IoU 34.0 (plain: 45.8), the prior keeps its lead: +5.8
        # [+0.7, +10.7] raw over 5 seeds; full still learns it (69.5 mIoU, seed 0) (data/README.md)
        "default": {"n_train": 1200, "n_val": 200, "n_test": 200, "size": 96, "seed": 0, "textured_clutter": 2.0},
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
    "cam_classifier": {
        # Zhou et al.'s CAM baseline (papers.paper1.cam_baseline): a second tag classifier, keys here over
        # "classifier" -- global average pooling + ONE linear layer on the last conv stage [paper: CAM, Zhou et
        # al. 2016]; steps: its own VAL choice by `wsss study paper1 --choose` [ours] (seed 0, VAL IoU of its CAM
        # masks 0.243 / 0.241 / 0.266 / 0.275 / 0.269 at 300 / 600 / 1200 / 2400 / 4800): 2400 (our classifier
        # trains 600); None = the classifier's value
        "default": {"pooling": "mean", "hidden": 0, "steps": 2400},
        "quick": {"steps": None},
    },
    "masks": {
        # channel means, summed, min-max to [0, 1] [summary]; alignment/normalisation [ours]. Layers: the
        # paper's are conv4 + conv5 [summary]; our default conv3 + conv4 + conv5 [ours] is the best
        # fusion on VAL for the from-scratch SmallVGG (`wsss study paper1 --masks-only --fusion`, 5 seeds'
        # classifiers, raw VAL fg IoU: 51.6 vs the paper's layers 47.7, -3.9 [-6.8, -1.3]; of 12 layer-set x
        # channel-aggregate variants none beats it with an interval above 0, the l2 aggregate +1.6 [-0.2, +3.1]);
        # notebooks 02/03 record the paper's layers side by side (*_paper_layers)
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
                    # `wsss study paper1 --choose` [ours] (seed 0, grid 300/600/.../38400/76800 climbed while VAL
                    # rises, VAL mIoU: tags 0.322 / 0.337 / 0.368 / 0.394 / 0.331 (peak at 2400), prior 0.404 /
                    # 0.440 / 0.481 / 0.502 / 0.517 / 0.528 / 0.526 / 0.518 (the 38400 point falls), full 0.454 /
                    # 0.561 / 0.639 / 0.694 / 0.736 / 0.763 / 0.787 / 0.800 / 0.802 (76800 adds +0.002, inside
                    # the 0.005 tolerance: full converges at 38400, the fewest steps within it)); a mode missing
                    # here trains "steps". The points from 19200 on ran on another VM than the rest: on that one VM
                    # the prior (without the present term) is 0.517 at 9600 vs 0.526 at 19200 -- past the
                    # tolerance, so the rule picks 19200 for the prior too (README, issue 14)
                    "mode_steps": {"prior": 19200, "tags": 2400, "full": 38400},
                    # Adam learning rate per training mode, chosen on VAL with the steps (grid LR_GRID of
                    # wsss_lib.papers.study_paper1) [ours]; a mode missing here trains "lr"
                    "mode_lr": {},
                    # weight of the image-level tag term of present classes in the prior loss [summary: the
                    # term; ours: its weight], chosen on VAL by `wsss study paper1 --choose` at the prior's
                    # chosen steps (seed 0, one VM: VAL mIoU at 19200 steps 0.514 with the term vs 0.526
                    # without; at 9600 0.514 vs 0.517; at 2400 0.505 vs 0.502): off, as it hurts
                    "present_term": 0.0},
        "quick": {"n_train": 400, "n_val": 100, "n_test": 100, "steps": 100, "compare_poolings": [], "mode_steps": {},
                  "mode_lr": {}},
    },
    # ---- paper 2 (wsss_lib.papers.paper2, notebooks 05-07) ----
    "streets_classifier": {
        # multi-label classifier over ALL classes (bg included) [summary]; SmallVGG from scratch whose
        # score maps come from conv3 (local receptive field, ~26 px) and LSE pooling [ours]. steps: VAL
        # (`wsss study paper2 --choose`, regions mIoU 0.316/0.615/0.834/0.827 at 300/600/1200/2400): 1200
        # (the single-bg baseline's streets_fg_classifier has its own VAL choice: the same care for both)
        "default": {"backbone": "small_vgg", "widths": [16, 32, 64, 64, 64], "depths": [1, 1, 2, 1, 1],
                    "last_stage": "conv3", "pooling": "lse", "lse_r": 5.0, "hidden": 64, "dropout": 0.0, "steps": 1200, "batch_size": 16,
                    "lr": 0.002, "optimizer": "adamw", "weight_decay": 0.0001},
        "quick": {"steps": 120},
    },
    "streets_fg_classifier": {
        # the single-background baseline's classifier = paper 1's on street data: FOREGROUND tags only (paper 1
        # has no background tags) and its mask from conv4 + conv5 [summary]; keys here override
        # streets_classifier (same widths/depths [ours]) -- every stage kept, so conv4/conv5 exist. steps: its own
        # VAL choice (`wsss study paper2 --choose`, fg/bg mask IoU 0.303/0.456/0.363 at 300/600/1200): 600;
        # None = the streets classifier's value
        "default": {"last_stage": "conv5", "steps": 600},
        "quick": {"steps": None},
    },
    "heatmaps": {
        # per-class maps normalised per image to [0, 1], argmax among tagged classes [ours]
        "default": {"layer": "score", "normalisation": "max", "threshold": 0.2, "mode": "argmax", "crf": False,
                    "explore_layers": ["score", "conv2", "conv3"], "n_explore": 24},
        "quick": {"n_explore": 8},
    },
    "flow": {
        # OpenCV DIS (preset 2, "medium") + (dx, dy, |f|) image, fixed scale, median (camera) motion removed
        # [ours]. method and params (FlowParams overrides) chosen on VAL by the moving-pixel AUROC of the
        # motion image (`wsss study paper2 --choose`, FLOW_GRID) [ours]: DIS ultrafast / fast / medium
        # 0.715 / 0.754 / 0.827; Farneback 0.634 (3 levels, 11 px) / 0.639 / 0.675 / 0.676 (5 levels, 21 px,
        # poly_n 7, sigma 1.5)
        "default": {"method": "dis", "params": {"dis_preset": 2}, "max_flow": None, "normalisation": "fixed",
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
        # the motion controls train exactly like two_stream) [ours]. Seed 0, grid 300/600/.../19200 climbed
        # while VAL rises, VAL mIoU (heatmap classifier of 1200 steps, DIS flow): appearance
        # 0.545/0.610/0.642/0.650/0.639, two_stream 0.597/0.635/0.642/0.646 (2400 within 0.005 of 1200),
        # single_bg 0.167/0.159; full (no classifier, no flow) 0.666/0.740/0.779/0.805/0.825/0.844/0.848
        # (19200 within 0.005 of 9600: full is converged at 9600 by the rule)
        "default": {"backbone": "small_vgg", "widths": [16, 32, 64, 64, 64], "depths": [1, 1, 2, 1, 1],
                    "output_stride": 8, "head": "largefov", "head_width": 128,
                    "head_dilation": 4, "dropout": 0.3, "motion_widths": [8, 16, 32, 32, 32],
                    "motion_depths": [1, 1, 1, 1, 1], "fuse_stage": "conv3", "late_fusion": "sum", "fusion_kernel": 1,
                    "steps": 300, "batch_size": 16, "lr": 0.002, "optimizer": "adamw", "weight_decay": 0.0001,
                    "pooling": "mean", "absent_pooling": "max", "init_from_classifier": True,
                    "full_loss": "balanced", "kind_steps": {"appearance": 2400, "two_stream": 1200, "single_bg": 300, "full": 9600},
                    # single_bg's mask: conv4 + conv5 of the streets_fg_classifier [summary], CRF [ours]
                    "fgbg_layers": ["conv4", "conv5"], "fgbg_crf": True,
                    "kinds": ["appearance", "two_stream", "single_bg", "full"],
                    # clips used per split (None = all); quick mode: the first clips of each split
                    "clips": {}},
        "quick": {"steps": 80, "kind_steps": {}, "clips": {"train": 60, "val": 10, "test": 10}},
    },
    # ---- paper 1 at the paper's scale (profile "paper": real data, `wsss reproduce paper1`) ----
    # Same keys as the toy sections above plus the streaming ones (crop, scale, flip, workers, momentum).
    # Labels: [paper] abstract, [summary] third-party summary, [ours] our choice / common practice.
    "paper1_cam_classifier": {
        # the CAM baseline at the paper's scale: paper1_classifier's settings (already GAP, no hidden layer) with
        # the CAM layout spelled out [paper: CAM]; steps None = the classifier's
        "default": {"pooling": "mean", "hidden": 0, "steps": None},
        "quick": {},
    },
    "paper1_classifier": {
        # ImageNet VGG-16 fine-tuned on the image tags [summary]; --pretrained PATH|imagenet (None = random
        # init, for tests only). Global average pooling, no hidden layer, SGD 0.001 momentum 0.9, weight decay
        # 5e-4, batch 10, 8000 steps (~7.6 epochs of train_aug) [ours: VGG fine-tuning practice]. Random scale
        # 0.5-1.5, 321 px crops (mean-colour padding), flips [ours: DeepLab-v2 practice]. workers = DataLoader
        # processes [ours]
        "default": {"backbone": "vgg16", "widths": None, "depths": None, "pretrained": "imagenet",
                    "pooling": "mean", "hidden": 0, "steps": 8000, "batch_size": 10, "lr": 0.001, "optimizer": "sgd",
                    "momentum": 0.9, "weight_decay": 0.0005, "image_size": None, "crop": 321, "scale": [0.5, 1.5],
                    "flip": True, "workers": 4},
        "quick": {"steps": 20, "batch_size": 2, "workers": 2},
    },
    "paper1_masks": {
        # conv4 + conv5 [summary], channel means [summary], summed [summary], rescaled to [0, 1] per image
        # [summary; min-max is ours], at the full image size [summary: upsampled to the image]. The threshold
        # that the CRF unary is calibrated to is chosen on VAL from `thresholds` over the first `n_threshold`
        # VAL images (None = all) [ours]; batch_size: full-size images per CRF batch (one forward each) [ours]
        "default": {"layers": ["conv4", "conv5"], "weights": None, "aggregate": "mean", "normalize": "minmax",
                    "align": "largest", "normalize_each": False, "cam_normalize": "max",
                    "thresholds": [round(0.05 * i, 2) for i in range(1, 20)], "n_threshold": 300, "batch_size": 8},
        "quick": {"n_threshold": 10},
    },
    "paper1_crf": {
        # 2-label CRF on the masks and C-label test-time CRF with DeepLab's values: Gaussian sxy 3 / compat 3,
        # bilateral sxy 80 / srgb 13 / compat 10, 10 iterations [ours: common practice, not the paper's own]
        "default": {"gauss_sxy": 3.0, "gauss_compat": 3.0, "bilateral_sxy": 80.0, "bilateral_srgb": 13.0,
                    "bilateral_compat": 10.0, "iterations": 10, "eps": 1e-5, "workers": None},
        "quick": {},
    },
    "paper1_seg": {
        # DeepLab-LargeFOV on VGG-16 [ours reconstruction, papers README]: fc6 3x3 dilation 12, 1024 channels,
        # dropout 0.5; SGD lr 0.001 (head x10), momentum 0.9, weight decay 5e-4, poly (power 0.9), batch 10,
        # 20000 steps, random scale 0.5-1.5, 321 px crops, flips [ours: DeepLab-v2 LargeFOV practice]. The loss
        # and its poolings are the toy "seg" section's [ours]. n_*: images per split (None = all); evaluation on
        # full-size VAL images (VOC test has no public labels), raw and with the test-time CRF ("paper1_crf")
        "default": {"n_train": None, "n_val": None, "n_test": None, "steps": 20000, "batch_size": 10, "lr": 0.001,
                    "optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0005, "head_lr_mult": 10.0,
                    "head": "largefov", "head_width": 1024, "dilation": 12, "dropout": 0.5, "pooling": "mean",
                    "tag_pooling": "max", "rejected": "tags", "compare_poolings": [], "tau": 0.5, "mode_steps": {}, "mode_lr": {},
                    "present_term": 0.0, "crop": 321, "scale": [0.5, 1.5], "flip": True, "workers": 4},
        "quick": {"n_train": 40, "n_val": 20, "n_test": 20, "steps": 20, "batch_size": 2, "workers": 2},
    },
    # ---- paper 2 at the paper's scale (profile "paper": Cityscapes / CamVid, `wsss reproduce paper2`) ----
    # Paper 2's own hyper-parameters are not known to us [papers README: results and settings not available],
    # so every value here is [ours] unless marked. Same keys as the toy sections plus pretrained/momentum/image_size.
    "paper2_fg_classifier": {
        # the single-bg baseline's classifier at the paper's scale: paper2_classifier's settings (None) but
        # every stage kept [ours]
        "default": {"last_stage": "conv5", "steps": None},
        "quick": {},
    },
    "paper2_classifier": {
        # multi-label classifier over ALL classes, background ones included [paper]; ImageNet VGG-16 backbone
        # [ours: the papers' family's usual backbone; --pretrained PATH|imagenet|none]; score maps from conv5
        # (stride 8, dilated) with LSE pooling, no hidden layer; SGD 0.001, momentum 0.9, weight decay 5e-4,
        # poly schedule, batch 10, 6000 steps (~20 epochs of Cityscapes train) [ours: VGG fine-tuning practice]
        "default": {"backbone": "vgg16", "widths": None, "depths": None, "pretrained": "imagenet",
                    "last_stage": "conv5", "pooling": "lse", "lse_r": 5.0, "hidden": 0, "dropout": 0.0,
                    "steps": 6000, "batch_size": 10, "lr": 0.001, "optimizer": "sgd", "momentum": 0.9,
                    "weight_decay": 0.0005},
        "quick": {"steps": 20, "batch_size": 2},
    },
    "paper2_video_seg": {
        # appearance stream = DeepLab-LargeFOV on VGG-16 (fc6 3x3 dilation 12, 1024 channels, dropout 0.5),
        # initialised from the heatmap classifier [ours]; motion stream = a from-scratch VGG-style net on the
        # (dx, dy, |f|) flow image, early fusion after conv3 (concat + 1x1 conv), late fusion = sum of the score
        # maps [summary: early trainable + late fusion; ours: where and how]; SGD 0.001, momentum 0.9, weight
        # decay 5e-4, poly, batch 8, 10000 steps, horizontal flips [ours]. Frames are resized to image_size
        # (per dataset, H x W; Cityscapes 1024x2048 -> 256x512, CamVid kept at 360x480) and preloaded with their
        # flow images; scored at the original label resolution (score maps upsampled) [ours]. kinds: the
        # models `wsss reproduce paper2` trains; clips: frames' clips per split (None = all; Cityscapes: one
        # labelled frame per clip)
        "default": {"backbone": "vgg16", "widths": None, "depths": None, "output_stride": 8, "head": "largefov",
                    "head_width": 1024, "head_dilation": 12, "dropout": 0.5, "motion_widths": [32, 64, 128, 128, 128],
                    "motion_depths": [1, 1, 2, 1, 1], "fuse_stage": "conv3", "late_fusion": "sum", "fusion_kernel": 1,
                    "steps": 10000, "batch_size": 8, "lr": 0.001, "optimizer": "sgd", "momentum": 0.9,
                    "weight_decay": 0.0005, "pooling": "mean", "absent_pooling": "max", "init_from_classifier": True,
                    "full_loss": "balanced", "kind_steps": {}, "fgbg_layers": ["conv4", "conv5"], "fgbg_crf": True,
                    "kinds": ["appearance", "two_stream"], "clips": {},
                    "image_size": {"cityscapes": [256, 512], "camvid": [360, 480], "youtube_objects": [256, 448]}},
        "quick": {"steps": 20, "batch_size": 2, "clips": {"train": 40, "val": 10, "test": 20}},
    },
    "real_subset": {
        # real data in the toy-sized pipeline (notebooks 01-04 with dataset=voc...): every image resized to
        # image_size (bilinear image, nearest label), preloaded; n_* images per split. Real test labels are not
        # public, so test = the first n_test images of the official val split, val = the last n_val images of
        # the official train split (held out), train = the first n_train of the rest [ours]
        "default": {"image_size": [160, 160], "n_train": 400, "n_val": 100, "n_test": 100},
        "quick": {"n_train": 60, "n_val": 20, "n_test": 20},
    },
    "notebook": {
        # the notebooks' time budget (papermill / `wsss run` on 2 CPU cores: 01-04 and 05-07 within 10 min
        # each): the segmentation / video nets of a notebook train steps_scale x their VAL-chosen steps
        # (seg.mode_steps, video_seg.kind_steps), at most steps_cap steps per net (07: the upper bound's chosen
        # schedule is several times the weak models') [ours]; a notebook not listed trains the full schedule.
        # The converged comparisons are the studies' (`wsss study paper1|paper2`, scale 1), which notebooks
        # 04 and 07 show beside their own table; the notebook parameter steps_scale=1 trains the full schedule
        "default": {"steps_scale": {"04_weak_training": 0.125, "07_two_stream_video": 0.5},
                    "steps_cap": {"04_weak_training": 300, "07_two_stream_video": 1200}},
        "quick": {"steps_scale": {}, "steps_cap": {}},
    },
}

# profile -> {section: the section it reads instead}; "toy" reads the sections themselves
PROFILES: dict[str, dict[str, str]] = {
    "toy": {},
    "paper": {"classifier": "paper1_classifier", "cam_classifier": "paper1_cam_classifier", "masks": "paper1_masks", "crf": "paper1_crf", "seg": "paper1_seg",
              "streets_classifier": "paper2_classifier", "streets_fg_classifier": "paper2_fg_classifier",
              "video_seg": "paper2_video_seg"},
}


def preset(section: str, quick: bool = False, profile: str = "toy", **overrides) -> dict:
    """Sizes for ``section`` in quick or default mode, with ``overrides`` applied. ``profile``
    "paper" reads the paper-scale sections instead (:data:`PROFILES`: "classifier" ->
    "paper1_classifier", "video_seg" -> "paper2_video_seg"...).

    Unknown override keys raise :class:`InvalidInputError` (a typo must not be silently ignored).
    """
    if profile not in PROFILES:
        raise InvalidInputError(f"unknown preset profile {profile!r}; known: {sorted(PROFILES)}")
    section = PROFILES[profile].get(section, section)
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
