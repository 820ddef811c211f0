"""``wsss study paper1``: seeds, VAL choices, resumability, and the table's intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from study_checks import TINY_PAPER1, assert_study_resumes
from wsss_lib.cli import main
from wsss_lib.core.config import preset
from wsss_lib.core.errors import InvalidInputError
from wsss_lib.papers import study_paper1 as S
from wsss_lib.papers.common import chosen_point, climb_steps_grid, make_context
from wsss_lib.papers.study import Comparison, ItemMean, item_mean, markdown, run_seeds, summarise

TINY = TINY_PAPER1


@pytest.fixture()
def tiny(monkeypatch, tmp_path, patch_presets):
    patch_presets(TINY)
    monkeypatch.setattr(S, "STEPS_GRID", (2, 3))  # 3 = the tiny seg preset's steps: its point is the study's net
    monkeypatch.setattr(S, "LR_GRID", (0.001, 0.003))
    monkeypatch.setattr(S, "CAM_STEPS_GRID", (2, 4))  # 4 = the tiny classifier's steps: the preset's point
    monkeypatch.setattr(S, "CRF_GRID", S.CRF_GRID[:2])
    monkeypatch.setattr(S, "SWEEP", [("crf", 0.5, 0.2), ("raw", 0.5, 0.0)])
    return tmp_path


def test_study_cli_chooses_on_val_runs_seeds_and_resumes(tiny, capsys):
    out = tiny / "study"
    argv = ["study", "paper1", "--seeds", "2", "--out", str(out), "--data-root", str(tiny / "data"), "--device",
            "cpu", "--quick", "--choose", "--checkmask", "--resamples", "200", "--no-progress"]
    assert main(argv) == 0
    ch = json.loads((out / "seed_0" / "choices.json").read_text())
    assert set(ch["steps"]["chosen"]) == {"prior", "tags", "full"}
    assert all(v in (2, 3) for v in ch["steps"]["chosen"].values())
    tol = ch["steps"]["tolerance"]
    for mode in ("prior", "tags", "full"):  # the steps x lr grid climbed while VAL rises, then the rule's pick
        rows = {(r["steps"], r["lr"]): r["val_miou"] for r in ch["steps"]["grid"] if r["mode"] == mode}
        assert {(2, 0.001), (2, 0.003)} <= set(rows)  # every lr at the first length
        replay = climb_steps_grid((2, 3), lambda n, lr: rows[(n, lr)], (0.001, 0.003), tol)
        assert replay == rows  # exactly the points the rule trains, nothing more
        assert (ch["steps"]["chosen"][mode], ch["steps"]["lr"][mode]) == chosen_point(rows, tol)
        for (n, lr) in rows:
            name = f"segnet_{mode}" + ("" if lr == 0.001 else f"_lr{lr:g}") + f"_steps{n}.pt"
            if (n, lr) == (3, 0.001):  # the preset's point (the preset's prior has no present term either)
                name = f"segnet_{mode}.pt"
            assert (out / "seed_0" / "checkpoints" / name).is_file(), name
    for mode in ("tags", "full", "prior"):  # never a second checkpoint of the preset's point
        assert not (out / "seed_0" / "checkpoints" / f"segnet_{mode}_steps3.pt").exists()
    assert len(ch["crf"]["grid"]) == 2 and ch["crf"]["best"] in ch["crf"]["grid"]
    cam = ch["cam_classifier"]  # Zhou's CAM classifier gets its own steps on VAL: the whole grid scored
    cam_rows = {r["steps"]: r["val_cam_iou"] for r in cam["grid"]}
    assert list(cam_rows) == [2, 4]
    assert cam["chosen"] == chosen_point({(n, None): v for n, v in cam_rows.items()}, tol)[0]
    assert all(0.0 <= v <= 1.0 for v in cam_rows.values()) and all(r["seconds"] > 0 for r in cam["grid"])
    ckpts = out / "seed_0" / "checkpoints"
    assert (ckpts / "cam_classifier_steps2.pt").is_file()  # a grid point off the preset: its own name
    assert not (ckpts / "cam_classifier_steps4.pt").exists()  # the preset's point is the study's classifier
    assert ch["presets_agree"]["cam_classifier_steps"] == (cam["chosen"] == 4)
    pres = {r["present_term"]: r["val_miou"] for r in ch["present_term"]["grid"]}
    assert set(pres) == {0.0, 1.0}
    assert ch["present_term"]["chosen"] == (1.0 if pres[1.0] >= pres[0.0] else 0.0)  # on only if it does not hurt
    summary = json.loads((out / "study.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["n_images"] == 12
    names = {r["name"] for r in summary["comparisons"]}
    assert {"prior - CAM, masks raw", "prior - CAM, masks + CRF", "seg: prior - tags, raw",
            "seg: prior / full, + CRF", "prior - low-level cues, raw"} <= names
    for r in summary["comparisons"]:
        assert r["low"] <= r["value"] + 1e-9 and r["value"] <= r["high"] + 1e-9, r
        assert len(r["per_seed"]) == 2
    cm = json.loads((out / "checkmask_study.json").read_text())
    assert len(cm["comparisons"]) == 1 + 2 * len(S.SWEEP)  # the VAL-chosen cell, then every cell on TEST and VAL
    for r in cm["comparisons"]:
        assert r["b"].endswith("/prior") and r["a"].split("/")[-2] == r["b"].split("/")[-2]  # same candidate masks
        assert r["a"].startswith("val/") == r["b"].startswith("val/")  # a split is compared with itself
    scores = {s: torch.load(out / f"seed_{s}" / "checkmask_scores.pt", weights_only=False) for s in (0, 1)}
    choice = S.checkmask_val_choice(scores, S.SWEEP)
    gains = {r["a"]: r["value"] for r in cm["comparisons"] if r["a"].startswith("val/")}
    assert choice["chosen"] == max(S.SWEEP, key=lambda cell: gains["val/" + S.sweep_name(*cell)])
    first, *rest = cm["comparisons"]  # only the VAL-chosen cell carries the target, scored on TEST
    assert first["a"] == S.sweep_name(*choice["chosen"]) and first["target"] == 0.02
    assert all(r["target"] is None for r in rest)
    md = (out / "study.md").read_text()
    assert "prior - CAM, masks raw" in md and "95 %" in md
    assert_study_resumes(argv, out, summary, capsys)  # a finished seed is read back, never recomputed


def test_study_cli_paper1_kinds_then_every_kind_rescores_and_trains_only_the_missing(tiny, capsys):
    """``--kinds`` trains and scores only those seg nets (the table keeps the rows among them); a later run
    with every kind rescores that seed, loading the nets it has and training only the missing ones."""
    out = tiny / "study"
    argv = ["study", "paper1", "--out", str(out), "--data-root", str(tiny / "data"), "--device", "cpu", "--quick",
            "--resamples", "50", "--no-progress", "--seed-ids", "1"]
    assert main([*argv, "--kinds", "tags", "prior"]) == 0
    ck = out / "seed_1" / "checkpoints"
    assert {p.name for p in ck.glob("segnet_*.pt")} == {"segnet_prior.pt", "segnet_tags.pt"}
    seg = {k for k in torch.load(out / "seed_1" / "scores.pt", weights_only=False)["conf"] if k.startswith("seg/")}
    assert seg == {"seg/prior", "seg/prior+crf", "seg/tags", "seg/tags+crf"}
    names = {r["name"] for r in json.loads((out / "study.json").read_text())["comparisons"]}
    assert "seg: prior - tags, raw" in names and not any("full" in n or "check-mask" in n for n in names)
    stamps = {p.name: p.stat().st_mtime_ns for p in ck.glob("segnet_*.pt")}
    capsys.readouterr()
    assert main(argv) == 0  # every kind: seed 1 lacks full and checkmask
    assert "rescoring seed 1" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in ck.glob("segnet_*.pt") if p.name in stamps} == stamps  # loaded
    assert {p.name for p in ck.glob("segnet_*.pt")} == {f"segnet_{k}.pt" for k in ("prior", "tags", "full", "checkmask")}
    names = {r["name"] for r in json.loads((out / "study.json").read_text())["comparisons"]}
    assert {"seg: prior / full, raw", "seg: check-mask - prior, raw"} <= names
    assert main([*argv, "--kinds", "fully"]) == 2  # an unknown kind is refused before anything runs


def test_paper1_grid_preset_point_is_the_study_net(tiny):
    """The VAL grid's point at the preset's steps and lr is trained into the study's own checkpoint, so
    the study loads it (0 s) instead of training it twice; likewise the CAM classifier's preset point."""
    from wsss_lib.papers import paper1 as P

    ctx = make_context(tiny / "data", tiny / "run", "cpu", True, 0, "toy_objects", name="study")
    assert preset("seg", True)["present_term"] == 0.0  # the preset's prior: the grid's prior (the term off)
    ch = S.choose_paper1(ctx, modes=("tags", "prior"), lr_grid=(0.001,), crf_grid=S.CRF_GRID[:1],
                         cam_steps_grid=(4,), progress=False)
    assert [r["steps"] for r in ch["steps"]["grid"] if r["mode"] == "tags"] == [2, 3]  # 3 = the tiny preset's steps
    ck = tiny / "run" / "checkpoints"
    for mode in ("tags", "prior"):
        assert (ck / f"segnet_{mode}_steps2.pt").is_file() and not (ck / f"segnet_{mode}_steps3.pt").exists()
        assert P.seg_run(ctx, mode, progress=False)[1]["seconds"] == 0.0  # the grid's net, loaded
    assert [r["present_term"] for r in ch["present_term"]["grid"]] == [0.0, 1.0]
    assert (ck / "segnet_prior_present1.pt").is_file()  # the term's point is its own net
    assert P.get_cam_classifier(ctx, progress=False)[1]["trained"] is False
    assert not list(ck.glob("cam_classifier_steps*.pt"))


def test_refined_masks_are_the_same_computed_or_read_back(tiny):
    """The CRF'd probabilities a run computes are exactly those a later run reads from the cache (float16),
    so masks binarised at 0.5 -- and every net keyed by their fingerprint -- never differ between the two
    (a later run once retrained the check-mask sweep's nets whose masks had flipped at a few pixels)."""
    from wsss_lib.papers import paper1 as P

    ctx = make_context(tiny / "data", tiny / "run", "cpu", True, 0, "toy_objects", name="study")
    clf, _ = P.get_tag_classifier(ctx, progress=False)
    fused = P.compute_masks(ctx, clf, "train", layers=["conv4", "conv5"])["fused"]
    computed = P.refine_split(ctx, "train", fused, 0.5)
    assert list((tiny / "run" / "masks").glob("train_crf_*.pt"))  # cached
    read_back = P.refine_split(ctx, "train", fused, 0.5)
    np.testing.assert_array_equal(computed, read_back)
    assert computed.dtype == np.float32 and ((computed >= 0) & (computed <= 1)).all()


def test_checkmask_sweep_at_a_shorter_schedule_keeps_its_own_nets_and_table(tiny, capsys):
    """``--checkmask-steps N``: both arms of every sweep cell train N steps (paired like for like) into
    their own ``_steps<N>`` checkpoints and table, never mixed with the sweep at the chosen schedule."""
    out = tiny / "study"
    base = ["study", "paper1", "--seeds", "1", "--out", str(out), "--data-root", str(tiny / "data"), "--device",
            "cpu", "--quick", "--masks-only", "--resamples", "100", "--no-progress"]
    assert main(base + ["--checkmask-steps", "2"]) == 2  # without --checkmask: refused, nothing run
    assert main(base + ["--checkmask", "--checkmask-steps", "0"]) == 2
    assert "--checkmask-steps needs" in capsys.readouterr().err and not out.exists()
    assert main(base + ["--checkmask", "--checkmask-steps", "2"]) == 0
    cm = json.loads((out / "checkmask_study_steps2.json").read_text())
    assert len(cm["comparisons"]) == 1 + 2 * len(S.SWEEP) and "2 steps" in (out / "checkmask_study_steps2.md").read_text()
    assert not (out / "checkmask_study.json").exists()
    ck = out / "seed_0" / "checkpoints"
    nets = {p.name for p in ck.glob("segnet_*.pt")}
    assert nets == {"segnet_prior_crf_steps2.pt", "segnet_checkmask_crf_tau0.5_p0.2_steps2.pt",
                    "segnet_prior_raw_steps2.pt", "segnet_checkmask_raw_tau0.5_p0_steps2.pt"}
    for name in nets:
        assert torch.load(ck / name, weights_only=True)["config"]["steps"] == 2


def test_masks_only_study_trains_no_segmentation_net(tiny):
    out = tiny / "study"
    argv = ["study", "paper1", "--seeds", "2", "--out", str(out), "--data-root", str(tiny / "data"), "--device",
            "cpu", "--quick", "--masks-only", "--resamples", "200", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads((out / "mask_study.json").read_text())
    names = {r["name"] for r in summary["comparisons"]}
    assert "prior - CAM, masks raw" in names and not any(n.startswith("seg") for n in names)
    assert summary["seeds"] == [0, 1] and not (out / "study.json").exists()
    assert not list(out.glob("seed_*/checkpoints/segnet_*"))  # no segmentation net was trained
    assert (out / "seed_1" / "mask_scores.pt").is_file()


def test_fusion_sweep_scores_val_only_and_its_preset_row_is_the_study_prior(tiny, capsys):
    """``--fusion``: every variant of the prior's fusion scored on VAL only (each at its own VAL threshold), the
    preset's variant exactly the prior the study uses (same maps, same threshold), compared to the low-level cues."""
    out = tiny / "study"
    argv = ["study", "paper1", "--seeds", "1", "--out", str(out), "--data-root", str(tiny / "data"), "--device",
            "cpu", "--quick", "--masks-only", "--fusion", "--resamples", "100", "--no-progress"]
    assert main(argv) == 0 and "fusion_study.md" in capsys.readouterr().out
    summ = json.loads((out / "fusion_study.json").read_text())
    grid = summ["meta"]["0"]["grid"]
    assert len(grid) == len(S.FUSION_LAYERS) * len(S.FUSION_AGGREGATES)  # the preset's fusion is in the grid
    own = summ["meta"]["0"]["preset"]
    assert own == "val/fusion/conv3+conv4+conv5/mean" and own in grid
    assert len(summ["comparisons"]) == len(grid) and all(r["b"] == own for r in summ["comparisons"][:-1])
    assert summ["comparisons"][-1]["b"] == "val/lowlevel"
    res = torch.load(out / "seed_0" / "fusion_scores.pt", weights_only=True)
    assert all(k.startswith("val/") for k in res["conf"])  # TEST is not scored
    ctx = make_context(tiny / "data", out / "seed_0", "cpu", True, 0, "toy_objects", name="study")
    clf, _ = S.P.get_tag_classifier(ctx, progress=False)
    fused = S.P.compute_masks(ctx, clf, "val")["fused"]
    th = S.P.choose_thresholds(ctx, {"fused": fused, "cam": fused})["fused"]
    assert res["meta"]["thresholds"][own] == th
    np.testing.assert_array_equal(res["conf"][own].numpy(), S.mask_confusion(fused >= th, S.P.load_split(ctx, "val").labels))
    assert "conv4+conv5/mean - preset (conv3+conv4+conv5/mean)" in (out / "fusion_study.md").read_text()


def test_summarise_flags_targets(tmp_path):
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 2, size=(30, 6, 6))

    def conf(p):
        pred = np.where(rng.random(lab.shape) < p, 1 - lab, lab)
        from wsss_lib.core.metrics import per_image_confusion
        return per_image_confusion(lab, pred, 2)

    res = run_seeds(tmp_path, [0, 1, 2], lambda s, f: {"conf": {"good": conf(0.05), "bad": conf(0.4)}}, progress=False)
    summ = summarise(res, [Comparison("good - bad", "good", "bad", target=0.2, need_ci_above=0.0),
                           Comparison("bad - good", "bad", "good", target=0.0)], [("good", "good", None)],
                     n_resamples=200)
    assert summ["comparisons"][0]["met"] is True and summ["comparisons"][1]["met"] is False
    assert summ["comparisons"][0]["a"] == "good" and summ["comparisons"][0]["a_value"] > 0.8
    assert "| good - bad |" in markdown(summ, "t") and "**no**" in markdown(summ, "t")


def test_stored_scores_made_under_other_settings_are_rescored(tmp_path, patch_presets):
    """A seed's stored scores carry the fingerprint of the presets they depend on: the same settings read
    them back, changed ones (e.g. a VAL choice applied to the presets since) rescore the seed, and a
    preset of a section the study does not depend on leaves them alone."""
    from wsss_lib.papers.study import settings_fingerprint

    calls = []

    def run(s, f):
        calls.append(s)
        return {"conf": {"m": np.ones((1, 2, 2), dtype=np.int64)}, "meta": {}}

    fp = settings_fingerprint(["seg"])
    run_seeds(tmp_path, [0, 1], run, progress=False, fingerprint=fp)
    assert calls == [0, 1]
    res = run_seeds(tmp_path, [0, 1], run, progress=False, fingerprint=settings_fingerprint(["seg"]))
    assert calls == [0, 1] and res[0]["meta"]["fingerprint"] == fp  # same settings: read back
    patch_presets({"video_seg": {"lr": 0.123}})  # a section the scores do not depend on
    assert settings_fingerprint(["seg"]) == fp
    patch_presets({"seg": {"present_term": 0.25}})
    changed = settings_fingerprint(["seg"])
    assert changed != fp and settings_fingerprint(["seg"], quick=True) != changed
    run_seeds(tmp_path, [0, 1], run, progress=False, fingerprint=changed)
    assert calls == [0, 1, 0, 1]  # rescored under the new settings ...
    run_seeds(tmp_path, [0, 1], run, progress=False, fingerprint=changed)
    assert calls == [0, 1, 0, 1]  # ... and stored with them
    run_seeds(tmp_path, [0], run, progress=False)  # no fingerprint asked: whatever is stored is read
    assert calls == [0, 1, 0, 1]


def test_item_rows_average_items_then_seeds_and_flag_targets(tmp_path):
    auc = {0: np.array([[0.9, np.nan], [0.7, 0.2]]), 1: np.array([[1.0, np.nan], [0.8, 0.4]])}  # (images, classes)

    def run(s, f):
        return {"conf": {"m": np.ones((2, 2, 2, 2), dtype=np.int64)},
                "meta": {"auc": auc[s], "miou": 0.3 + 0.1 * s}}

    res = run_seeds(tmp_path, [0, 1], run, progress=False)
    rows = [ItemMean("auc c0", "auc", column=0, target=0.75), ItemMean("auc c1", "auc", column=1, target=0.75),
            ItemMean("regions", "miou", target=0.45)]
    summ = summarise(res, [], [], rows, n_resamples=200)
    q = {r["label"]: r for r in summ["items"]}
    assert q["auc c0"]["per_seed"] == pytest.approx([0.8, 0.9]) and q["auc c0"]["value"] == pytest.approx(0.85)
    assert q["auc c0"]["met"] is True and q["auc c0"]["low"] <= 0.85 <= q["auc c0"]["high"]
    assert q["auc c1"]["n_items"] == 1 and q["auc c1"]["value"] == pytest.approx(0.3) and q["auc c1"]["met"] is False
    assert q["regions"]["value"] == pytest.approx(0.35) and q["regions"]["met"] is False
    md = markdown(summ, "t")
    assert "| auc c0 | 0.850 |" in md and "| regions | 0.350 |" in md
    assert np.isnan(item_mean(np.full((2, 3), np.nan))["value"])
    with pytest.raises(InvalidInputError, match="not recorded"):
        summarise(res, [], [], [ItemMean("x", "missing")], n_resamples=50)


def test_prior_beats_faithful_cam_like_for_like_on_the_quick_run(quick_run_dir, quick_run):
    """On the quick run's classifier (seed 0): the prior's masks beat Zhou's CAM raw vs raw and CRF vs CRF."""
    quick_run["02_fgbg_masks"]  # the quick run trained the classifier and made the masks
    ctx = make_context(None, quick_run_dir, "cpu", True, 0, "toy_objects")
    res = S.run_paper1_seed(ctx, kinds=())
    results = {0: {"conf": res["conf"], "meta": {}}}
    summ = summarise(results, [c for c in S.COMPARISONS if c.a.startswith("mask/")], n_resamples=300)
    rows = {r["name"]: r for r in summ["comparisons"]}
    assert rows["prior - CAM, masks raw"]["low"] > 0.05
    assert rows["prior - CAM, masks + CRF"]["low"] > 0.05
    assert rows["CRF gain of the prior mask"]["value"] > 0
    assert rows["prior - floor (all foreground), raw"]["low"] > 0.05


def test_mode_schedule_from_the_presets_and_present_term_only_in_the_prior_config(patch_presets, tmp_path):
    """Each mode trains its own VAL-chosen steps and lr (``mode_steps`` / ``mode_lr``, else the shared
    values); the present-class term belongs to the prior loss, so a tags / full checkpoint's config does
    not change with it (its cached nets stay valid)."""
    from wsss_lib.papers import paper1 as P

    patch_presets({"seg": {"steps": 7, "lr": 0.001, "mode_steps": {"full": 9}, "mode_lr": {"full": 0.003},
                           "present_term": 1.0}})
    ctx = make_context(None, str(tmp_path), "cpu", True, 0, "toy_objects")
    assert (P.mode_steps(ctx, "full"), P.mode_lr(ctx, "full")) == (9, 0.003)
    assert (P.mode_steps(ctx, "tags"), P.mode_lr(ctx, "tags")) == (7, 0.001)
    assert P.seg_config(ctx, "prior")["present_term"] == 1.0
    assert P.seg_config(ctx, "tags")["present_term"] == 0.0 == P.seg_config(ctx, "full", present_term=2.0)["present_term"]
    assert "mode_lr" not in P.seg_config(ctx, "full") and "mode_steps" not in P.seg_config(ctx, "full")


class TestClimbStepsGrid:
    """The VAL choice of training length (and lr) shared by both studies."""

    @staticmethod
    def scorer(table):
        calls = []

        def score(n, c):
            calls.append((n, c))
            return table[(n, c)]
        return score, calls

    def test_stops_one_point_after_val_stops_rising(self):
        table = {(1, None): 0.30, (2, None): 0.40, (4, None): 0.402, (8, None): 0.9}
        score, calls = self.scorer(table)
        curve = climb_steps_grid((8, 1, 4, 2), score, tolerance=0.005)
        assert calls == [(1, None), (2, None), (4, None)]  # ascending; 8 is never trained (4 did not rise)
        assert chosen_point(curve, 0.005) == (2, None)  # the fewest steps within tolerance of the best

    def test_still_rising_at_the_edge_scores_every_point(self):
        table = {(n, None): 0.1 * i for i, n in enumerate((1, 2, 4), start=1)}
        score, calls = self.scorer(table)
        assert chosen_point(climb_steps_grid((1, 2, 4), score), 0.005) == (4, None) and len(calls) == 3

    def test_a_trailing_candidate_is_dropped(self):
        table = {(1, "a"): 0.5, (1, "b"): 0.2, (2, "a"): 0.6, (2, "b"): 0.99, (4, "a"): 0.7, (4, "b"): 0.0}
        score, calls = self.scorer(table)
        curve = climb_steps_grid((1, 2, 4), score, candidates=("a", "b"), tolerance=0.01)
        assert calls == [(1, "a"), (1, "b"), (2, "a"), (4, "a")]  # "b" trailed by 0.3 at n=1
        assert chosen_point(curve, 0.01) == (4, "a")

    def test_ties_within_tolerance_keep_both_and_pick_the_better(self):
        table = {(1, "a"): 0.500, (1, "b"): 0.503, (2, "a"): 0.501, (2, "b"): 0.504}
        score, calls = self.scorer(table)
        curve = climb_steps_grid((1, 2), score, candidates=("a", "b"), tolerance=0.005)
        assert len(calls) == 4 and chosen_point(curve, 0.005) == (1, "b")
