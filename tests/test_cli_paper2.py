"""``wsss flow | heatmaps | train-video | evaluate-video`` on a tiny ToyStreets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsss_lib.cli import main
from wsss_lib.core.config import PRESETS

TINY_STREETS = {"n_train": 2, "n_val": 1, "n_test": 1, "frames": 3, "height": 48, "width": 64}


@pytest.fixture(scope="module", autouse=True)
def tiny_streets_preset():
    """The commands (re)generate toy data to match the toy_streets preset (papers.common.dataset_split):
    make the preset the tiny dataset's, or they regenerate the full 200-clip one."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in TINY_STREETS.items():
            mp.setitem(PRESETS["toy_streets"]["default"], k, v)
        yield


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, tiny_streets_preset):
    from wsss_lib.data.toy_streets import ensure_toy_streets

    root = tmp_path_factory.mktemp("data")
    t = TINY_STREETS
    ensure_toy_streets(root / "toy" / "streets", size=(t["height"], t["width"]), frames=t["frames"],
                       n_train=t["n_train"], n_val=t["n_val"], n_test=t["n_test"], workers=1)
    return root


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _common(data_root, out):
    return ["--data-root", str(data_root), "--out", str(out), "--device", "cpu", "--quick", "--no-progress"]


def test_flow_command_computes_then_hits_cache(data_root, tmp_path, capsys):
    rc, out, _ = _run(capsys, "flow", *_common(data_root, tmp_path), "--method", "dis")
    assert rc == 0
    res = json.loads(Path(out.strip().splitlines()[-1]).read_text())
    assert res["method"] == "dis" and res["splits"]["train"]["computed"] == 6
    rc, out, _ = _run(capsys, "flow", *_common(data_root, tmp_path), "--method", "dis")
    res = json.loads(Path(out.strip().splitlines()[-1]).read_text())
    assert rc == 0 and res["splits"]["train"]["computed"] == 0 and res["splits"]["train"]["cached"] == 6


def test_heatmaps_train_video_and_evaluate(data_root, tmp_path, capsys):
    common = _common(data_root, tmp_path)
    rc, out, _ = _run(capsys, "heatmaps", *common, "--classifier-steps", "2", "--normalisation", "minmax")
    assert rc == 0
    res = json.loads(Path(out.strip().splitlines()[-1]).read_text())
    assert res["config"]["normalisation"] == "minmax"
    assert 0 <= res["regions"]["train"]["coverage"] <= 1 and "bg_miou" in res["regions"]["test"]
    rc, out, _ = _run(capsys, "train-video", *common, "--model", "two_stream", "--steps", "2", "--classifier-steps", "2")
    assert rc == 0
    res = json.loads(Path(out.strip().splitlines()[-1]).read_text())
    assert res["model"] == "two_stream" and {"miou", "bg_miou", "fg_miou", "moving_miou"} <= set(res)
    rc, out, _ = _run(capsys, "evaluate-video", *common)
    assert rc == 0
    res = json.loads(Path(out.strip().splitlines()[-1]).read_text())
    assert set(res) == {"split", "two_stream"}


def test_evaluate_without_models_is_a_clear_error(data_root, tmp_path, capsys):
    rc, _, err = _run(capsys, "evaluate-video", *_common(data_root, tmp_path / "empty"))
    assert rc == 2 and "no trained video model" in err


def test_bad_arguments(data_root, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train-video", "--model", "three_stream"])
    rc, _, err = _run(capsys, "flow", "--data-root", str(data_root), "--out", str(tmp_path), "--dataset", "nope",
                      "--no-progress")
    assert rc == 2 and "unknown dataset" in err
