"""``wsss study paper2``: VAL steps choice, every kind incl. the motion controls and the oracle ceiling,
the issue's comparisons, resumability; the single-bg baseline's own foreground classifier."""

from __future__ import annotations

import json

import pytest
import torch

from study_checks import assert_study_resumes
from wsss_lib.cli import main
from wsss_lib.core.config import preset
from wsss_lib.core.errors import InvalidInputError
from wsss_lib.data.toy_streets import toy_streets_info
from wsss_lib.papers import paper2 as P
from wsss_lib.papers import study_paper2 as S
from wsss_lib.papers.common import chosen_point, climb_steps_grid, make_context
from wsss_lib.papers.video import FLOW_CONTROLS, KINDS

SMALL = {"widths": [4, 8, 8, 8, 8], "depths": [1, 1, 1, 1, 1]}
TINY = {
    "toy_streets": {"n_train": 4, "n_val": 2, "n_test": 2, "frames": 3, "height": 48, "width": 64},
    "streets_classifier": {**SMALL, "hidden": 8, "steps": 3, "batch_size": 4},
    "video_seg": {**SMALL, "head_width": 8, "head_dilation": 1, "motion_widths": [4, 4, 4, 4, 4], "steps": 3,
                  "batch_size": 4, "clips": {}, "kind_steps": {}},
    "flow": {"method": "dis", "params": {}},
    "crf": {"workers": 1},
}


@pytest.fixture()
def tiny(monkeypatch, tmp_path, patch_presets):
    patch_presets(TINY)
    monkeypatch.setattr(S, "STEPS_GRID", (2, 3))  # 3: the presets' steps, so the grid's preset point is reused
    monkeypatch.setattr(S, "FLOW_GRID", ({}, {"dis_preset": 0}, {"method": "farneback", "levels": 2}))
    return tmp_path


def test_comparisons_use_the_datasets_class_groups():
    rows = {c.name: c for c in S.COMPARISONS}
    from wsss_lib.data.toy_streets import toy_streets_info

    info = toy_streets_info()
    motion = rows["two-stream - appearance, moving classes"]
    assert motion.classes == tuple(info.moving) and motion.target == 0.05 and motion.need_ci_above == 0.0
    assert rows["two-stream - shuffled flow, moving classes"].target == 0.03
    assert rows["two-stream - zero flow, moving classes"].target is None
    assert rows["weak two-stream / full, all classes"].kind == "ratio"
    assert rows["heatmaps (appearance) - single bg, background classes"].classes == tuple(info.background)
    assert rows["single-bg oracle ceiling - single bg, background classes"].a == "video/single_bg_oracle"
    full_fg = [m for m in S.paper2_means(info) if m[0] == "full, foreground classes"]
    assert full_fg == [("full, foreground classes", "video/full", tuple(info.foreground), 0.5)]


def test_study_cli_paper2_chooses_on_val_runs_seeds_and_resumes(tiny, capsys):
    out = tiny / "study"
    data = tiny / "data"
    argv = ["study", "paper2", "--seeds", "2", "--out", str(out), "--data-root", str(data), "--device", "cpu",
            "--quick", "--choose", "--resamples", "200", "--no-progress"]
    assert main(argv) == 0
    ch = json.loads((out / "seed_0" / "choices.json").read_text())
    assert set(ch["steps"]["chosen"]) == set(S.CHOOSE_KINDS)
    assert all(v in (2, 3) for v in ch["steps"]["chosen"].values())
    assert ch["full_loss"] == "balanced"
    for kind in S.CHOOSE_KINDS:  # the grid climbed while VAL rises, then the fewest steps within tolerance
        rows = {(r["steps"], None): r["val_miou"] for r in ch["steps"]["grid"] if r["kind"] == kind}
        assert climb_steps_grid((2, 3), lambda n, c: rows[(n, c)], tolerance=ch["steps"]["tolerance"]) == rows
        assert ch["steps"]["chosen"][kind] == chosen_point(rows, ch["steps"]["tolerance"])[0]
    # the heatmap classifier's steps: climbed while its VAL regions' mIoU rises, the fewest within tolerance
    clf = ch["classifier"]
    regions = {(r["steps"], None): r["val_regions_miou"] for r in clf["grid"]}
    assert climb_steps_grid((2, 3), lambda n, c: regions[(n, c)], tolerance=clf["tolerance"]) == regions
    assert clf["chosen"] == chosen_point(regions, clf["tolerance"])[0]
    assert all(0 <= r["val_map"] <= 1 and set(r["val_heatmap_auc"]) == set(toy_streets_info().classes)
               for r in clf["grid"])
    assert ch["presets_agree"]["classifier_steps"] is (clf["chosen"] == TINY["streets_classifier"]["steps"])
    # a grid point off the presets has its own checkpoint; the presets' point IS the preset checkpoint
    # (trained once: the study's seed 0 loads it, see the training times below)
    ck = out / "seed_0" / "checkpoints"
    assert {p.name for p in ck.glob("streets_classifier*.pt")} == {"streets_classifier_steps2.pt",
                                                                    "streets_classifier.pt"}
    assert {p.name for p in ck.glob("video_appearance*.pt")} == {"video_appearance_steps2.pt", "video_appearance.pt"}
    # the single-bg baseline's classifier gets the same care: its steps climbed on VAL by fg/bg mask IoU
    fgc = ch["fg_classifier"]
    masks_iou = {(r["steps"], None): r["val_mask_iou"] for r in fgc["grid"]}
    assert climb_steps_grid((2, 3), lambda n, c: masks_iou[(n, c)], tolerance=fgc["tolerance"]) == masks_iou
    assert fgc["chosen"] == chosen_point(masks_iou, fgc["tolerance"])[0]
    assert all(0 <= r["val_mask_iou"] <= 1 and 0 <= r["val_map"] <= 1 for r in fgc["grid"])
    assert ch["presets_agree"]["fg_classifier_steps"] is (fgc["chosen"] == TINY["streets_classifier"]["steps"])
    assert {p.name for p in ck.glob("streets_fg_classifier*.pt")} == {"streets_fg_classifier_steps2.pt",
                                                                       "streets_fg_classifier.pt"}
    # the flow setting with the best moving-pixel AUROC on VAL, each computed into its own cache folder
    aucs = [r["val_moving_auc"] for r in ch["flow"]["grid"]]
    assert [r["params"] for r in ch["flow"]["grid"]] == [{}, {"dis_preset": 0}, {"method": "farneback", "levels": 2}]
    assert all(0 <= a <= 1 for a in aucs)
    assert ch["flow"]["best"] == ch["flow"]["grid"][aucs.index(max(aucs))]["params"]
    best = dict(ch["flow"]["best"])
    agree = best.pop("method", "dis") == preset("flow", True)["method"] and best == preset("flow", True)["params"]
    assert ch["presets_agree"]["flow"] == agree
    # each setting (the method included) is computed into its own cache folder
    folders = {p.parent.name for p in data.rglob("cache/flow/*/*/*.npz")}
    assert len(folders) == 3 and sum(f.startswith("farneback-") for f in folders) == 1, folders
    summary = json.loads((out / "study.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["n_images"] == 6  # 2 test clips x 3 frames
    names = {r["name"] for r in summary["comparisons"]}
    assert {c.name for c in S.COMPARISONS} == names
    for r in summary["comparisons"]:
        assert r["low"] <= r["value"] + 1e-9 and r["value"] <= r["high"] + 1e-9, r
        assert len(r["per_seed"]) == 2
    means = {m["label"]: m for m in summary["means"]}
    assert means["full, foreground classes"]["target"] == 0.5 and means["full, foreground classes"]["met"] in (True,
                                                                                                               False)
    assert {"single_bg oracle ceiling", *KINDS} <= set(means)
    items = {q["label"]: q for q in summary["items"]}
    auc_rows = [q for q in summary["items"] if q["key"] == "heatmap_auc_val"]
    assert len(auc_rows) == 8
    assert all(q["target"] == 0.75 and (q["n_items"] == 0 or 0 <= q["value"] <= 1) for q in auc_rows)
    assert any(q["n_items"] > 0 for q in auc_rows)
    assert items["heatmap regions, train mIoU"]["target"] == 0.45
    motion = [q for q in summary["items"] if q["key"] == "motion_auc_test"][0]
    assert len(set(motion["per_seed"])) == 1  # the flow does not depend on the seed
    md = (out / "study.md").read_text()
    assert "heatmap AUC on VAL images, road" in md
    assert "two-stream - shuffled flow, moving classes" in md and "95 %" in md and "full, foreground classes" in md
    scores = torch.load(out / "seed_0" / "scores.pt", weights_only=False)
    assert set(scores["conf"]) == {f"video/{k}" for k in KINDS} | {"video/single_bg_oracle"}
    assert all(tuple(v.shape) == (6, 8, 8) for v in scores["conf"].values())
    meta = scores["meta"]
    assert meta["heatmap_auc_val"].shape == (6, 8)  # 2 VAL clips x 3 frames, 8 classes
    assert meta["fg_classifier"]["last_stage"] == "conv5" and meta["full_class_weights"][0] > 0
    assert all(meta["kinds"][k]["steps"] == 3 for k in KINDS)  # preset steps (kind_steps empty)
    # the chosen kinds' grid point at the presets' steps was loaded (0 s), not retrained; the controls trained
    # (two_stream's grid ran on the VAL-chosen flow: reused only when the presets' flow is that one)
    assert all(meta["kinds"][k]["seconds"] == 0.0 for k in ("appearance", "single_bg", "full"))
    assert (meta["kinds"]["two_stream"]["seconds"] == 0.0) is ch["presets_agree"]["flow"]
    assert all(meta["kinds"][k]["seconds"] > 0 for k in FLOW_CONTROLS)
    # the single-bg model was trained from paper 1's foreground classifier, in its own checkpoint
    assert (ck / "streets_fg_classifier.pt").is_file()
    st = torch.load(ck / "video_single_bg.pt", weights_only=False)
    assert st["config"]["supervision"]["classifier"] == "streets_fg_classifier"
    assert "full_loss" not in st["config"]["video_seg"]
    assert torch.load(ck / "video_full.pt", weights_only=True)["config"]["video_seg"]["full_loss"] == "balanced"
    assert_study_resumes(argv, out, summary, capsys)  # a finished seed is read back, never recomputed

    # the trained checkpoints reload (evaluate-video path), the controls on their own flow control
    ctx = make_context(data, out / "seed_0", "cpu", True, 0, "toy_streets")
    streets = P.load_streets(ctx, progress=False)
    models = P.load_video_checkpoints(ctx, streets)
    assert set(models) == set(KINDS)
    for kind in FLOW_CONTROLS:
        res = P.evaluate_model(ctx, kind, models[kind][0], streets, split="test")
        assert 0 <= res["miou"] <= 1
    # the all-class heatmap classifier stops at conv3: refused as the source of conv4 + conv5 masks
    clf, _ = P.get_classifier(ctx, streets, progress=False)
    with pytest.raises(InvalidInputError, match="identities"):
        P.get_fgbg_masks(ctx, clf, streets, progress=False)
    fg_clf, fg_info = P.get_fg_classifier(ctx, streets, progress=False)
    assert fg_clf.num_classes == len(streets["info"].foreground) and fg_info["last_stage"] == "conv5"
    assert not isinstance(fg_clf.backbone.stages["conv5"], torch.nn.Identity)


def test_study_cli_paper2_kinds_and_seed_ids(tiny):
    """``--kinds`` trains and scores only those kinds (the table keeps the comparisons among them);
    ``--seed-ids`` runs only those seeds, so a study can be split over processes."""
    out = tiny / "study"
    argv = ["study", "paper2", "--out", str(out), "--data-root", str(tiny / "data"), "--device", "cpu", "--quick",
            "--resamples", "50", "--no-progress", "--kinds", "appearance", "two_stream"]
    assert main([*argv, "--seed-ids", "1"]) == 0
    assert not (out / "seed_0").exists()
    scores = torch.load(out / "seed_1" / "scores.pt", weights_only=False)
    assert set(scores["conf"]) == {"video/appearance", "video/two_stream"}
    summary = json.loads((out / "study.json").read_text())
    assert summary["seeds"] == [1]
    assert {r["name"] for r in summary["comparisons"]} == {"two-stream - appearance, moving classes",
                                                           "two-stream - appearance, all classes"}
    assert main(["study", "paper2", "--out", str(out), "--kinds", "prior"]) == 2  # a paper-1 kind: refused


def test_weak_video_models_retrain_when_their_classifier_changes(tiny):
    """A weak video model's checkpoint records the classifier its supervision came from: another heatmap
    classifier (e.g. other steps) retrains appearance, another fg classifier retrains single_bg -- a
    stale model trained from the old classifier's regions / masks is never loaded."""
    ctx = make_context(tiny / "data", tiny / "run", "cpu", True, 0, "toy_streets")
    streets = P.load_streets(ctx, progress=False)

    def seconds(kind, **over):
        sup = P.video_supervision(ctx, [kind], streets, progress=False, **over)
        return P.train_kind(ctx, kind, streets, sup, progress=False)[1]["seconds"]

    for kind, key in (("appearance", "classifier_overrides"), ("single_bg", "fg_classifier_overrides")):
        assert seconds(kind) > 0 and seconds(kind) == 0.0  # trained, then loaded
        assert seconds(kind, **{key: {"steps": 2}}) > 0  # its classifier changed: retrained
        assert seconds(kind, **{key: {"steps": 2}}) == 0.0


def test_kind_steps_resolution():
    cfg = {"steps": 10, "kind_steps": {"two_stream": 20, "full": 30}}
    assert P.kind_steps(cfg, "full") == 30 and P.kind_steps(cfg, "appearance") == 10
    assert P.kind_steps(cfg, "two_stream_zero_flow") == 20 == P.kind_steps(cfg, "two_stream_shuffled_flow")
    assert P.kind_steps(cfg, "full", {"steps": 5}) == 5


def test_flow_grid_names_every_method():
    """Each VAL flow setting names its method: an entry without one would follow the preset's method, so
    a preset switch (Farneback -> DIS) would silently turn the Farneback settings into DIS runs."""
    assert all(e.get("method") in ("farneback", "dis") for e in S.FLOW_GRID)
    ctx = make_context(quick=True, dataset="toy_streets")
    assert [S.flow_setting(ctx, e)["method"] for e in S.FLOW_GRID] == [e["method"] for e in S.FLOW_GRID]
    assert {"method": "dis", "dis_preset": 2} in S.FLOW_GRID  # the preset's setting is among the compared
