"""``wsss reproduce paper1`` and paper 1's commands on a VOC 2012 + SBD tree in the official layout
with VOC-like variable image sizes (tiny networks and steps, CPU)."""

from __future__ import annotations

import json

import pytest

from fixtures_real import build_voc_sized
from wsss_lib.cli import main
from wsss_lib.core.config import PRESETS, preset
from wsss_lib.core.io import read_label
from wsss_lib.data.base import SegmentationDataset
from wsss_lib.data.registry import load_dataset

# tiny paper-profile sizes: the pipeline's code paths at the paper's structure, seconds on a CPU
TINY_PAPER = {
    "paper1_classifier": {"backbone": "small_vgg", "widths": [4, 8, 8, 8, 8], "depths": [1, 1, 1, 1, 1],
                          "pretrained": None, "steps": 4, "batch_size": 4, "crop": 96, "workers": 2},
    "paper1_masks": {"n_threshold": 4, "batch_size": 4},
    "paper1_crf": {"iterations": 3, "workers": 1},
    "paper1_seg": {"n_val": 5, "steps": 4, "batch_size": 2, "head_width": 8, "dilation": 2, "crop": 96,
                   "workers": 0, "tau": 0.19},  # tau: the tiny classifier's masks reach IoU 0.05-0.22 here
}


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_real")
    info = build_voc_sized(root, n_voc_train=6, n_sbd_only=10, n_val=6, sizes=(200, 500))
    return root, info


def test_paper_presets_have_every_toy_key():
    for sec in ("classifier", "masks", "crf", "seg"):
        for quick in (False, True):
            assert set(preset(sec, quick)) <= set(preset(sec, quick, profile="paper")), sec
    p = preset("seg", profile="paper")
    assert (p["crop"], p["optimizer"], p["momentum"], p["head"], p["dilation"]) == (321, "sgd", 0.9, "largefov", 12)
    assert preset("masks", profile="paper")["layers"] == ["conv4", "conv5"]
    assert PRESETS["paper1_classifier"]["default"]["backbone"] == "vgg16"


def test_reproduce_paper1_end_to_end_and_resumes(voc_root, tmp_path, patch_presets, capsys):
    root, info = voc_root
    patch_presets(TINY_PAPER)
    out = tmp_path / "out"
    argv = ["reproduce", "paper1", "--dataset", "voc_aug", "--data-root", str(root), "--out", str(out),
            "--device", "cpu", "--no-progress", "--pretrained", "none", "--baselines", "tags", "full", "checkmask"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("reproduce_paper1.md")
    res = json.loads((out / "reproduce_paper1.json").read_text())
    steps = [r["step"] for r in res["rows"]]
    assert steps[4] == "segmentation + test-time CRF" and res["rows"][4]["paper"] == 0.466
    assert steps[5:] == ["segmentation (tags only, no prior) [baseline]",
                         "segmentation (tags only, no prior) [baseline] + test-time CRF",
                         "segmentation (fully supervised) [upper bound]",
                         "segmentation (fully supervised) [upper bound] + test-time CRF",
                         "segmentation (fg/bg prior + check-mask, simulated annotator)",
                         "segmentation (fg/bg prior + check-mask, simulated annotator) + test-time CRF"]
    assert [r["paper"] for r in res["rows"][-2:]] == [0.515, 0.515]
    for r in res["rows"]:
        assert 0.0 <= r["measured"] <= 1.0, r
    # the baselines are the same network and schedule rule, trained with their own loss
    modes = res["config"]["seg_modes"]
    assert {m: c["mode"] for m, c in modes.items()} == {"prior": "prior", "tags": "tags", "full": "full",
                                                        "checkmask": "prior"}
    assert len({(c["head"], c["steps"], c["crop"]) for c in modes.values()}) == 1
    assert res["config"]["profile"] == "paper" and res["config"]["masks"]["layers"] == ["conv4", "conv5"]
    assert "full size" in (out / "reproduce_paper1.md").read_text()
    n_train = len(info["ids"]["train"]) + len(info["ids"]["sbd"])  # train_aug: VOC train + SBD-only ids
    (mask_dir,) = (out / "masks").glob("streamed_*")
    assert len(list((mask_dir / "train").glob("*.png"))) == n_train
    assert len(list((mask_dir / "val").glob("*.png"))) == 4
    # check-mask on the streamed masks: one click per train image, accepted where the mask's IoU with
    # the image's full-size label exceeds tau (recomputed here from the files)
    cm = res["metrics"]["seg_checkmask"]
    tau = preset("seg", profile="paper")["tau"]
    train_info, train_samples = load_dataset("voc_aug", root, "train")
    full = SegmentationDataset(train_info, train_samples)
    n_acc = 0
    for i, sid in enumerate(full.ids):
        m = read_label(mask_dir / "train" / f"{sid}.png") == 1
        lab = full[i]["label"].numpy()
        keep, g = lab != 255, (lab != 0) & (lab != 255)
        union = ((m & keep) | g).sum()
        n_acc += bool((((m & keep) & g).sum() / union if union else 1.0) > tau)
    assert cm["clicks"] == n_train and cm["accept_rate"] == pytest.approx(n_acc / n_train)
    assert modes["checkmask"]["accepted_fingerprint"] == n_acc and 0 < n_acc < n_train  # both clicks occur
    # a second run loads every step (nothing retrained, the masks not recomputed) and gives the same table
    stamp = {p: p.stat().st_mtime_ns for p in (mask_dir / "train").glob("*.png")}
    assert main(argv) == 0
    again = json.loads((out / "reproduce_paper1.json").read_text())
    assert not any(again["metrics"][k]["trained_now"]
                   for k in ("classifier", "seg", "seg_tags", "seg_full", "seg_checkmask"))
    assert [r["measured"] for r in again["rows"]] == [r["measured"] for r in res["rows"]]
    assert stamp == {p: p.stat().st_mtime_ns for p in (mask_dir / "train").glob("*.png")}


def test_train_classifier_on_voc_quick(voc_root, tmp_path, patch_presets, capsys):
    root, _ = voc_root
    patch_presets(TINY_PAPER)
    out = tmp_path / "cls"
    rc = main(["train-classifier", "--dataset", "voc", "--data-root", str(root), "--quick", "--out", str(out),
               "--device", "cpu", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((out / "paper1_classifier.json").read_text())
    assert m["trained_now"] is True and 0 <= m["val"]["map"] <= 1 and "test" not in m
    assert m["config"]["crop"] == 96 and m["config"]["steps"] == 4


@pytest.mark.parametrize("paper, layout", [("paper1", "VOC2012"), ("paper2", "leftImg8bit")])
def test_reproduce_bad_root_is_one_error(tmp_path, capsys, paper, layout):
    rc = main(["reproduce", paper, "--data-root", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"),
               "--device", "cpu"])
    err = capsys.readouterr().err
    # one error (the project's layout errors name the root and draw the expected tree), no traceback
    assert rc == 2 and err.startswith("wsss: error:") and layout in err and "Traceback" not in err


def test_notebook_steps_on_a_real_subset(voc_root, tmp_path, patch_presets):
    """What notebooks 01-04 call, on VOC in the toy-sized pipeline (resized subsets, preloaded)."""
    from study_checks import TINY_PAPER1
    from wsss_lib.engine.predict import evaluate_classifier
    from wsss_lib.notebook import setup
    from wsss_lib.papers import paper1 as P

    root, _ = voc_root
    patch_presets({**TINY_PAPER1, "real_subset": {"image_size": [64, 80], "n_train": 10, "n_val": 4, "n_test": 5}})
    ctx = setup("01_tags_classifier", quick=True, device="cpu", dataset="voc_aug", data_root=str(root),
                output_dir=str(tmp_path / "nb"))
    train, val, test = (P.load_split(ctx, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (10, 4, 5) and tuple(train.images.shape[-2:]) == (64, 80)
    assert not set(val.ids) & set(train.ids) and set(test.ids) <= {s.id for s in P.dataset_split(ctx, "val")[1]}
    clf, _ = P.get_tag_classifier(ctx, progress=False)
    assert 0 <= evaluate_classifier(clf, test, classes=train.info.foreground, device="cpu")["map"] <= 1
    mp = P.mask_pipeline(ctx, clf)
    assert 0 <= mp["scores"]["test"]["fused_crf"]["iou"] <= 1
    for kind in ("prior", "tags", "full", "checkmask"):
        model, _ = P.seg_run(ctx, kind, clf, progress=False)
        assert 0 <= P.evaluate_segnet(ctx, model, "test")["miou_crf"] <= 1
