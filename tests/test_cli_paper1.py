"""``wsss train-classifier | masks | train-seg | evaluate`` end to end on a tiny generated dataset."""

from __future__ import annotations

import json

import pytest

from study_checks import TINY_PAPER1
from wsss_lib.cli import main

TINY = TINY_PAPER1


@pytest.fixture()
def tiny(tmp_path, patch_presets):
    patch_presets(TINY)
    return ["--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--device", "cpu", "--quick",
            "--no-progress"], tmp_path / "out"


def _run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr().out.strip().splitlines()
    return rc, out


def test_pipeline_commands(tiny, capsys):
    common, out = tiny
    rc, lines = _run(["train-classifier", *common], capsys)
    assert rc == 0 and lines[-1].endswith("paper1_classifier.json")
    m = json.loads((out / "paper1_classifier.json").read_text())
    assert m["trained_now"] is True and 0 <= m["test"]["map"] <= 1 and set(m["test"]["ap"]) >= {"disc", "cross"}

    # a second call reuses the checkpoint
    rc, _ = _run(["train-classifier", *common], capsys)
    assert json.loads((out / "paper1_classifier.json").read_text())["trained_now"] is False

    rc, lines = _run(["masks", *common], capsys)
    assert rc == 0
    m = json.loads((out / "paper1_masks.json").read_text())
    for method in ("fused", "fused_crf", "cam", "floor"):
        assert 0 <= m["scores"]["test"][method]["iou"] <= 1
    assert m["scores"]["test"]["floor"]["recall"] == 1.0
    assert len(list((out / "masks" / "train_crf").glob("*.png"))) == 24

    for mode in ("prior", "tags", "full", "checkmask"):
        rc, lines = _run(["train-seg", "--mode", mode, *common], capsys)
        assert rc == 0 and lines[-1].endswith(f"paper1_seg_{mode}.json")
        m = json.loads((out / f"paper1_seg_{mode}.json").read_text())
        assert 0 <= m["miou"] <= 1 and 0 <= m["miou_crf"] <= 1 and "background" in m["iou"]
    assert m["checkmask"]["clicks"] == 24

    rc, lines = _run(["train-seg", "--mode", "prior", "--pooling", "max", *common], capsys)
    assert rc == 0 and (out / "paper1_seg_prior_max.json").is_file()

    rc, lines = _run(["evaluate", "--split", "val", *common], capsys)
    assert rc == 0
    m = json.loads((out / "paper1_eval_val.json").read_text())
    assert set(m["seg"]) == {"prior", "tags", "full", "checkmask", "prior_max"}
    assert "fused_crf" in m["masks"]


def test_user_errors_are_one_line(tiny, capsys):
    common, _ = tiny
    rc = main(["train-classifier", *common, "--dataset", "nonexistent"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("wsss: error:") and "nonexistent" in err
    import torch

    if not torch.cuda.is_available():
        rc = main(["train-classifier", *common, "--device", "cuda:7"])
        err = capsys.readouterr().err
        assert rc == 2 and "CUDA" in err
